"""Compare a candidate (ONNX model or TensorRT engine) with a reference ONNX model on the same inputs.

ONNX candidates run on onnxruntime (CPU, graph optimizations off). Engines run through Polygraphy's
``TrtRunner`` only where a TensorRT runtime can deserialize them on a GPU here; otherwise the result
is "skipped" with TensorRT's own reason — never a pass. ``mark_all`` exposes every intermediate tensor
the two models share by name and names the first reference node (topological order) whose output
diverges.

An ONNX candidate onnxruntime cannot run at its precision (bf16: no CPU kernels) is compared through
its float32 upcast (``converter.runtime.numerics.upcast_to_float32``: weights keep their rounding, every bf16
tensor is rounded through a Cast pair). Without --atol/--rtol the tolerance follows the candidate's
precision (``converter.runtime.numerics.PRECISION_TOLERANCES``); a Q/DQ candidate (int8, fp8, int8 weight-only)
is judged by whole-output metrics (cosine, relative L2, top-1 agreement of [batch, classes] outputs:
``QUANT_THRESHOLDS``). The report says which tolerance, why, and whether the candidate was upcast.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

from converter.trt.backends import Backend, polygraphy_trt
from converter.trt.refit import deserialize_engine
from surgery.errors import UserInputError
from surgery.provenance import source_map
from surgery.verify import weightless
from converter.runtime.numerics import (InputSpec, OutputDiff, Tolerance, cast_feeds, compare, is_classifier_output,
                                       low_precision, ort_runnable, precision_tolerance, quantized_precision,
                                       random_feeds, run_ort)

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = Tolerance(1e-3, 1e-4, why="float32 candidate: the defaults")
_BINS = [0.0, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, np.inf]


class EngineSkipped(Exception):
    """The engine cannot run in this environment; carries the reason."""


@dataclass
class OutputResult:
    diff: OutputDiff
    histogram: list[tuple[str, int]]
    shape: list[int]
    atol: float | None = None  # the absolute tolerance this output was held to

    def to_json(self) -> dict[str, Any]:
        d = self.diff
        return {"name": d.name, "max_abs": d.max_abs, "mean_abs": d.mean_abs, "max_rel": d.max_rel, "cosine": d.cosine,
                "rel_l2": d.rel_l2, "top1": d.top1, "passed": d.passed, "atol": self.atol, "shape": self.shape,
                "histogram": [[b, c] for b, c in self.histogram]}


@dataclass
class ValidationReport:
    reference: str
    candidate: str
    atol: float
    rtol: float
    outputs: list[OutputResult] = field(default_factory=list)
    skipped: str = ""
    first_divergence: dict[str, Any] | None = None
    intermediates_compared: int = 0
    tolerance: str = ""  # which tolerance and why
    upcast: str = ""  # how the candidate was upcast to float32 for onnxruntime ('' when it ran as it is)

    @property
    def passed(self) -> bool:
        return not self.skipped and bool(self.outputs) and all(o.diff.passed for o in self.outputs)

    @property
    def status(self) -> str:
        return "skipped" if self.skipped else ("passed" if self.passed else "failed")

    def to_json(self) -> dict[str, Any]:
        return {"reference": self.reference, "candidate": self.candidate, "status": self.status, "skipped": self.skipped,
                "atol": self.atol, "rtol": self.rtol, "outputs": [o.to_json() for o in self.outputs],
                "first_divergence": self.first_divergence, "intermediates_compared": self.intermediates_compared,
                "tolerance": self.tolerance, "upcast": self.upcast}


def histogram(ref: np.ndarray, cand: np.ndarray) -> list[tuple[str, int]]:
    """Counts of |ref - cand| per decade bin (labels like '[1e-05, 1e-04)')."""
    if ref.shape != cand.shape or ref.size == 0:
        return []
    diff = np.abs(ref.astype(np.float64) - cand.astype(np.float64)).ravel()
    diff = np.where(np.isnan(diff), np.inf, diff)
    counts, _ = np.histogram(diff, bins=_BINS)
    labels = [f"[{lo:.0e}, {hi:.0e})" if np.isfinite(hi) else f"[{lo:.0e}, inf]" for lo, hi in zip(_BINS[:-1], _BINS[1:])]
    return list(zip(labels, (int(c) for c in counts)))


def render_histogram(hist: Sequence[tuple[str, int]], width: int = 40) -> str:
    total = max((c for _, c in hist), default=0)
    return "\n".join(f"    {label:>18} {count:>8} {'#' * (round(width * count / total) if total else 0)}"
                     for label, count in hist if count or label.startswith("[0e"))


def make_feeds(specs: list[InputSpec], inputs_npz: str | Path | None, seed: int) -> dict[str, np.ndarray]:
    """Feeds from an .npz file (names must match the spec) or seeded random values in the spec's ranges."""
    if inputs_npz is None:
        return random_feeds(specs, seed=seed)
    path = Path(inputs_npz)
    if not path.is_file():
        raise UserInputError(f"{path}: no such inputs file")
    with np.load(path) as data:
        feeds = {k: data[k] for k in data.files}
    missing = [s.name for s in specs if s.name not in feeds]
    if missing:
        raise UserInputError(f"{path}: missing input(s) {', '.join(missing)}")
    return feeds


def compare_outputs(ref: Mapping[str, np.ndarray], cand: Mapping[str, np.ndarray], names: Sequence[str],
                    tol: Tolerance) -> list[OutputResult]:
    results = []
    for name in names:
        if name not in cand:
            results.append(OutputResult(OutputDiff(name, float("inf"), float("inf"), float("inf"), 0.0, False), [], []))
            continue
        r, c = np.asarray(ref[name]), np.asarray(cand[name])
        atol = tol.atol_for(r)
        diff = compare(r, c, name, rtol=tol.rtol, atol=atol, metrics=tol.metrics, top1=is_classifier_output(r.shape))
        results.append(OutputResult(diff, histogram(r, c), list(r.shape), atol))
    return results


def choose_tolerance(candidate: onnx.ModelProto | None, atol: float | None, rtol: float | None) -> Tolerance:
    """The candidate precision's tolerance; --atol/--rtol, where given, replace its parts (for a quantized
    candidate they replace its whole-output thresholds by element-wise bounds)."""
    precision = (quantized_precision(candidate) or low_precision(candidate)) if candidate is not None else None
    base = precision_tolerance(precision, DEFAULT_TOLERANCE)
    if atol is None and rtol is None:
        return base
    if base.metrics is not None:
        given = " and ".join(f"--{k}" for k, v in (("atol", atol), ("rtol", rtol)) if v is not None)
        return Tolerance(rtol or 0.0, atol or 0.0, why=f"{given} given: element-wise bounds replace the {precision} "
                                                      "whole-output thresholds")
    given = " and ".join(f"--{k}" for k, v in (("atol", atol), ("rtol", rtol)) if v is not None)
    return Tolerance(base.rtol if rtol is None else rtol, base.atol if atol is None else atol,
                     base.scale if atol is None else 0.0, f"{given} given; {base.why}" if base.scale else f"{given} given")


def shared_intermediates(reference: onnx.ModelProto, candidate: onnx.ModelProto) -> list[str]:
    """Tensor names produced by a node in both models, in the reference's node order."""
    cand_names = {o for n in candidate.graph.node for o in n.output if o}
    return [o for n in reference.graph.node for o in n.output if o and o in cand_names]


def expose(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` with ``names`` added as graph outputs (types from shape inference)."""
    out = copy.deepcopy(model)
    existing = {o.name for o in out.graph.output}
    try:
        inferred = onnx.shape_inference.infer_shapes(weightless(out))  # weights stood in: types are all it needs
        infos = {vi.name: vi for vi in inferred.graph.value_info}
    except Exception as exc:  # fall back to untyped outputs, which onnxruntime accepts
        log.warning("shape inference failed while marking outputs: %s", str(exc).splitlines()[0])
        infos = {}
    for name in names:
        if name in existing:
            continue
        vi = infos.get(name)
        out.graph.output.append(copy.deepcopy(vi) if vi is not None and vi.type.tensor_type.elem_type
                                else onnx.helper.make_empty_tensor_value_info(name))
    return out


def validate_onnx(reference: onnx.ModelProto, candidate: onnx.ModelProto, feeds: Mapping[str, np.ndarray], *,
                  atol: float | None = None, rtol: float | None = None, mark_all: bool = False,
                  names: tuple[str, str] = ("reference", "candidate")) -> ValidationReport:
    """Run both models on onnxruntime and compare outputs (and shared intermediates with ``mark_all``)."""
    tol = choose_tolerance(candidate, atol, rtol)
    report = ValidationReport(names[0], names[1], tol.atol, tol.rtol, tolerance=tol.describe())
    candidate, report.upcast = ort_runnable(candidate)
    outputs = [o.name for o in reference.graph.output]
    inter = [n for n in shared_intermediates(reference, candidate) if n not in outputs] if mark_all else []
    ref_model, cand_model = (expose(reference, inter), expose(candidate, inter)) if inter else (reference, candidate)
    ref = run_ort(ref_model, feeds, outputs=outputs + inter)
    cand = run_ort(cand_model, cast_feeds(cand_model, feeds),
                   outputs=[n for n in outputs + inter if n in _output_names(cand_model)])
    report.outputs = compare_outputs(ref, cand, outputs, tol)
    if mark_all:
        report.intermediates_compared = len(inter)
        diffs = {r.diff.name: r.diff for r in compare_outputs(ref, cand, inter + outputs, tol)}
        for node in reference.graph.node:
            bad = [o for o in node.output if o in diffs and not diffs[o].passed]
            if bad:
                report.first_divergence = {"node": node.name, "op": node.op_type, "tensor": bad[0],
                                           "detail": diffs[bad[0]].describe()}
                source = source_map(reference).json(node.name)
                if source:
                    report.first_divergence["source"] = source
                break
    return report


def _output_names(model: onnx.ModelProto) -> set[str]:
    return {o.name for o in model.graph.output}


def engine_skip_reason(backend: Backend, engine: bytes) -> str | None:
    """Why this engine cannot run here (None when it can): no library, no GPU, or refused by the runtime."""
    if backend.module is None:
        return "no TensorRT runtime is installed (backend 'static')"
    return deserialize_engine(backend.module, engine)[2] or None


def run_engine(backend: Backend, engine: bytes, feeds: Mapping[str, np.ndarray],
               weight_streaming_budget: int | None = None) -> dict[str, np.ndarray]:
    """Run an engine with Polygraphy's TrtRunner; raise ``EngineSkipped`` where it cannot run.

    ``weight_streaming_budget``: GPU bytes for the weights of an engine built with ``--weight-streaming``
    (-1: TensorRT chooses); None keeps all weights on the GPU."""
    reason = engine_skip_reason(backend, engine)
    if reason:
        raise EngineSkipped(reason)
    pg = polygraphy_trt(backend)
    with pg.TrtRunner(pg.EngineFromBytes(engine), weight_streaming_budget=weight_streaming_budget) as runner:
        outputs = runner.infer(feed_dict=dict(feeds))
    return {k: np.asarray(v) for k, v in outputs.items()}


def validate_engine(reference: onnx.ModelProto, engine_path: Path, backend: Backend, feeds: Mapping[str, np.ndarray], *,
                    atol: float | None, rtol: float | None, names: tuple[str, str],
                    built_from: onnx.ModelProto | None = None, weight_streaming_budget: int | None = None) -> ValidationReport:
    """``built_from`` (the ONNX model the engine was built from) sets the tolerance by its precision."""
    tol = choose_tolerance(built_from, atol, rtol)
    report = ValidationReport(names[0], names[1], tol.atol, tol.rtol, tolerance=tol.describe())
    data = Path(engine_path).read_bytes()
    try:
        cand = run_engine(backend, data, feeds, weight_streaming_budget)
    except EngineSkipped as exc:
        report.skipped = str(exc)
        return report
    ref = run_ort(reference, feeds)
    report.outputs = compare_outputs(ref, cand, list(ref), tol)
    return report
