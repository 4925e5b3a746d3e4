"""What the reducer asks of each candidate model: does it still fail, and how.

A probe returns a ``Failure`` (or None when the candidate does not fail). A failure carries keys:
its messages with model names and numbers taken out, so "the same failure" survives the renaming and
renumbering that cutting a model causes. ``parse`` probes parse in this process (as ``check`` does);
``build`` probes parse, then build in a child process (a crash inside TensorRT is a failure, not the
end of the search); ``accuracy`` probes run the candidate on onnxruntime, fed with the reference's
values of its boundary tensors, and compare its outputs with the reference's values of the same
tensors; ``engine`` probes do the same with a TensorRT engine of the candidate against onnxruntime.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import onnx

from converter.runtime.numerics import Tolerance, cast_feeds, run_ort
from converter.runtime.validate import EngineSkipped, compare_outputs, run_engine
from converter.trt.backends import make_logger
from converter.trt.profiles import profiles_for
from converter.trt.backends import Backend, select_backend
from converter.trt.build import BuildOptions, EngineBuild, empty_network, probe_build
from converter.trt.capability import attribute_build_error

_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class Failure:
    """How a model failed: ``kind`` (parse, build, accuracy), the tool's message, signature keys, and the
    nodes the message names (the reducer tries those first)."""

    kind: str
    message: str
    keys: tuple[str, ...]
    nodes: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return self.keys[0]


class Probe(Protocol):
    mode: str

    def __call__(self, model: onnx.ModelProto) -> Failure | None: ...


class Normalizer:
    """Replaces the names of one model (nodes, tensors) and all numbers in messages, longest name first."""

    def __init__(self, model: onnx.ModelProto) -> None:
        names = {n.name for n in model.graph.node} | {t for n in model.graph.node for t in [*n.input, *n.output]}
        names |= {v.name for v in [*model.graph.input, *model.graph.output]}
        self._names = sorted((n for n in names if len(n) > 1), key=len, reverse=True)

    def __call__(self, kind: str, text: str) -> str:
        for name in self._names:
            if name in text:
                text = text.replace(name, "<name>")
        return f"{kind}: " + " ".join(_NUMBER.sub("#", text).split())


def _onnx_ops(model: onnx.ModelProto) -> dict[str, str]:
    return {n.name: n.op_type for n in model.graph.node}


# ---- TensorRT adapters: the reducer reaches TensorRT only through these, on the one build path ---------------

def _backend(trt: ModuleType) -> Backend:
    return select_backend("tensorrt-rtx" if trt.__name__.startswith("tensorrt_rtx") else "tensorrt")


def parse_errors(trt: ModuleType, data: bytes, path: str) -> list[tuple[str, str, str, str]]:
    """(node name, op, error code, description) of every parser error; empty when the model parses."""
    logger = make_logger(trt)
    _, network = empty_network(_backend(trt), logger)
    parser = trt.OnnxParser(network, logger)
    if parser.parse(data, path):
        return []
    errors = [parser.get_error(i) for i in range(parser.num_errors)]
    return [(e.node_name(), e.node_operator(), str(e.code()).split(".")[-1], e.desc()) for e in errors] or [
        ("", "", "", "the parser failed without an error")]


def isolated_build(trt: ModuleType, data: bytes, path: str, profiles: Sequence[dict],
                   decomposable_attention: bool) -> tuple[bool, str, list[dict[str, str]]]:
    """One check build (convert's ``EngineBuild``) in a child process: (ok, error text, layer table)."""
    options = BuildOptions(profiles=list(profiles), decomposable_attention=decomposable_attention)
    return probe_build(_backend(trt), data, options)


def engine_bytes(trt: ModuleType, model: onnx.ModelProto, profiles: Sequence[dict]) -> bytes | None:
    """A serialized engine of ``model`` with default settings, or None when it does not build."""
    try:
        return EngineBuild(_backend(trt), model.SerializeToString(), BuildOptions(profiles=list(profiles)))()
    except Exception:  # noqa: BLE001 -- any refusal means "does not build" to the accuracy probe
        return None


def _profiles(model: onnx.ModelProto) -> list[dict]:
    """Profiles for what stays dynamic after the reducer fixed the input shapes (derived; usually none)."""
    dynamic = any(not d.HasField("dim_value") for vi in model.graph.input for d in vi.type.tensor_type.shape.dim)
    return profiles_for(model, None, None).profiles if dynamic else []


# ---- probes ------------------------------------------------------------------------------------------------------

@dataclass
class ParseProbe:
    """Fails when TensorRT's ONNX parser rejects the model."""

    trt: ModuleType
    normalize: Normalizer
    path: str = ""
    mode: str = "parse"

    def __call__(self, model: onnx.ModelProto) -> Failure | None:
        errors = parse_errors(self.trt, model.SerializeToString(), self.path)
        if not errors:
            return None
        message = "; ".join(f"node '{name}' ({op}): {code}: {desc}" if name else f"{code}: {desc}"
                            for name, op, code, desc in errors)
        keys = tuple(self.normalize("parse", f"{op} {code}: {desc}") for _, op, code, desc in errors)
        return Failure("parse", message, keys, tuple(name for name, *_ in errors if name))


@dataclass
class BuildProbe:
    """Fails when the model does not parse, or parses but the engine build fails (in a child process)."""

    trt: ModuleType
    normalize: Normalizer
    path: str = ""
    decomposable_attention: bool = False
    mode: str = "build"

    def __call__(self, model: onnx.ModelProto) -> Failure | None:
        parsed = ParseProbe(self.trt, self.normalize, self.path)(model)
        if parsed is not None:
            return parsed
        ok, error, layers = isolated_build(self.trt, model.SerializeToString(), self.path, _profiles(model),
                                           self.decomposable_attention)
        if ok:
            return None
        lines = [line for line in error.splitlines() if line.strip()] or ["the build failed without a message"]
        named = attribute_build_error(error, layers, _onnx_ops(model))
        return Failure("build", error.strip(), tuple(self.normalize("build", line) for line in lines), tuple(sorted(named)))


@dataclass
class AccuracyProbe:
    """Fails when the model's outputs differ from ``expected`` (the reference's values of the same tensors)
    beyond ``tolerance``, fed with ``expected``'s values of its inputs. A model with an input or output the
    reference does not compute cannot be compared: it does not fail."""

    expected: Mapping[str, np.ndarray]
    tolerance: Tolerance
    mode: str = "accuracy"
    run: Any = field(default=None, repr=False)  # (model, feeds, outputs) -> values; default onnxruntime

    def __call__(self, model: onnx.ModelProto) -> Failure | None:
        inits = {t.name for t in model.graph.initializer}
        inputs = [vi.name for vi in model.graph.input if vi.name not in inits]
        outputs = [vi.name for vi in model.graph.output if vi.name in self.expected]
        if not outputs or any(name not in self.expected for name in inputs):
            return None
        feeds = cast_feeds(model, {name: self.expected[name] for name in inputs})
        try:
            got = (self.run or _run_ort)(model, feeds, outputs)
        except EngineSkipped:
            raise
        except Exception:  # the runtime refuses this cut: a different failure, not this one
            return None
        bad = [r.diff for r in compare_outputs(self.expected, got, outputs, self.tolerance) if not r.diff.passed]
        if not bad:
            return None
        producers = {o: n.name for n in model.graph.node for o in n.output}
        return Failure("accuracy", "; ".join(d.describe() for d in bad), ("accuracy: outputs differ",),
                       tuple(producers[d.name] for d in bad if d.name in producers))


def _run_ort(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    return run_ort(model, feeds, outputs=outputs)


def engine_runner(backend: Any) -> Any:
    """``AccuracyProbe.run`` for a TensorRT engine of each candidate (raises ``EngineSkipped`` where engines
    cannot run; a candidate that does not build counts as not failing this way)."""

    def run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        blob = engine_bytes(backend.module, model, _profiles(model))
        if blob is None:
            raise RuntimeError("the candidate does not build")
        values = run_engine(backend, blob, feeds)  # EngineSkipped where engines cannot run: the search stops
        return {k: v for k, v in values.items() if k in outputs}

    return run
