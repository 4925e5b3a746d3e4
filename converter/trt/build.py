"""Build TensorRT engines with Polygraphy loaders: one build path for ``convert`` and ``check``.

``EngineBuild`` is that path: ``NetworkFromOnnxBytes``/``NetworkFromOnnxPath`` parse,
``SetDecomposableAttentions`` marks attention decomposable, ``CreateConfig`` carries profiles, the
workspace pool, the optimization level, compatibility, refit, weight-stripping, weight-streaming and
tactic settings (``engine_options.preflight`` checks them first), ``PostprocessConfig`` adds the merged
timing cache (``engine_options.TimingCacheStep``), and ``EngineBytesFromNetwork`` builds. With TensorRT-RTX this is a real ahead-of-time engine built on the
CPU. ``build_engine`` (``surgery convert``) writes ENGINE, ENGINE.build.log and ENGINE.layers.json;
``probe_in_process`` (``surgery check``, run in the check's child process; ``probe_build`` starts a
child of its own) runs the same ``EngineBuild``, so that a TensorRT crash becomes a finding, and
reports only success, the error text and the layer table.
Check and convert therefore cannot disagree about a model.

What differs between TensorRT versions is detected by attribute (``hasattr``), never by version string.
"""
from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

from converter.plugins.trt import register_python_plugins
from converter.trt import rules
from converter.trt.backends import Backend, make_logger, polygraphy_trt, require_library, select_backend
from converter.trt.engine_options import TimingCacheStep, options_used, preflight, tactic_selector, tactic_sources
from converter.trt.isolate import ChildCrash, call_in_child
from converter.trt.profiles import Profile, ProfileChoice, profiles_for
from surgery.errors import ConversionError, UserInputError
from surgery.io import LoadedModel

log = logging.getLogger(__name__)

_LAYER_META = re.compile(r"\[ONNX Layer: ([^\]]+)\]")


@dataclass
class BuildOptions:
    """Everything ``convert`` can set; ``None`` keeps TensorRT's default."""

    profiles: list[Profile] = field(default_factory=list)
    workspace: int | None = None
    optimization_level: int | None = None
    timing_caches: list[Path] = field(default_factory=list)  # loaded and merged into one
    save_timing_cache: Path | None = None
    plugins: list[str] = field(default_factory=list)
    strongly_typed: bool = False
    hardware_compatibility: str | None = None
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    decomposable_attention: bool = False
    refittable: bool = False
    strip_weights: bool = False  # a weight-stripped plan (refit later from the ONNX model)
    tactic_sources: list[str] | None = None  # None: TensorRT's default; []: none
    save_tactics: Path | None = None
    load_tactics: Path | None = None
    weight_streaming: bool = False


@dataclass
class BuildResult:
    engine: Path
    log: Path
    layers: Path
    seconds: float
    size: int
    backend: dict[str, str]
    notes: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # the convert options the build was given

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.engine), "log": str(self.log), "layers": str(self.layers), "seconds": round(self.seconds, 3),
                "bytes": self.size, "backend": self.backend, "options": self.options, "notes": self.notes}


def load_plugins(trt: ModuleType | None, libraries: Sequence[str | Path], logger: Any = None) -> None:
    """Load plugin libraries with ctypes, register TensorRT's own plugins, then onnx-surgery's Python plugins."""
    for lib in libraries:
        if not Path(lib).is_file():
            raise UserInputError(f"{lib}: no such plugin library")
        try:
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise UserInputError(f"{lib}: cannot load plugin library ({exc})") from None
    if trt is not None and hasattr(trt, "init_libnvinfer_plugins"):
        trt.init_libnvinfer_plugins(logger or make_logger(trt), "")
    if trt is not None:  # after the libraries, so a C++ build of the same plugin takes precedence
        register_python_plugins(trt)


class EngineBuild:
    """One engine build, the only one: parse, mark attention decomposable, configure, build.

    ``model`` is the serialized ONNX model, or the path of a model file (needed when its weights
    live in external files beside it). Calling the build returns the serialized engine, or raises:
    ``PolygraphyException`` when parsing or building fails, ``UserInputError`` for a setting this
    TensorRT lacks. What the build saw stays readable after a failure: ``layers`` (the parsed
    network's layer table), ``notes`` and ``logger.capture``.
    """

    def __init__(self, backend: Backend, model: bytes | str | Path, options: BuildOptions, verbose: bool = False) -> None:
        self.backend, self.model, self.options = backend, model, options
        self.trt = require_library(backend, "an engine build")
        self.logger = make_logger(self.trt, verbose=verbose)
        self.layers: list[dict[str, str]] = []
        self.notes: list[str] = []

    def __call__(self) -> bytes:
        trt, options = self.trt, self.options
        pg = polygraphy_trt(self.backend)
        from polygraphy.backend.trt import util as pg_util
        from polygraphy.logger import G_LOGGER

        pg_util.TRT_LOGGER = self.logger  # polygraphy hands this logger to every builder it creates
        load_plugins(trt, options.plugins, self.logger)
        if options.strongly_typed and not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            raise UserInputError(f"{self.backend.name} {self.backend.version} has no strongly typed networks")
        self.notes += preflight(self.backend, options)
        with G_LOGGER.verbosity(G_LOGGER.CRITICAL + 1):  # polygraphy's own '[!]' lines stay quiet: the failure is raised
            # compatible engines cannot hold the InstanceNormalization plugin: the parser imports it natively
            native = (options.version_compatible or options.hardware_compatibility) and hasattr(
                getattr(trt, "OnnxParserFlag", None), "NATIVE_INSTANCENORM")
            flags = [trt.OnnxParserFlag.NATIVE_INSTANCENORM] if native else None
            if isinstance(self.model, bytes):
                loader = pg.NetworkFromOnnxBytes(self.model, flags=flags, strongly_typed=options.strongly_typed)
            else:  # the parser must find the external weights next to the file
                loader = pg.NetworkFromOnnxPath(str(self.model), flags=flags, strongly_typed=options.strongly_typed)
            network = loader()
            if options.decomposable_attention:
                network = _mark_decomposable(pg, trt, network, self.notes)
            self.layers = layer_table(network[1])
            profiles = network_profiles(network[1], options.profiles)
            config = pg.CreateConfig(**_config_kwargs(pg, trt, self.backend, options, profiles))
            timing = TimingCacheStep(options.timing_caches, options.save_timing_cache) if (
                options.timing_caches or options.save_timing_cache) else None
            config = pg.PostprocessConfig(config, lambda builder, net, cfg: _finish_config(trt, options, timing, builder, net, cfg))
            data = bytes(pg.EngineBytesFromNetwork(network, config=config)())
        if timing is not None:
            self.notes += timing.finish()
        if options.strip_weights:
            self.notes.append("weight-stripped plan: give it its weights with `surgery refit ENGINE MODEL.onnx -o FULL` "
                              "before it runs" + ("" if options.refittable else " (the same weights: built refit-identical)"))
        return data


def build_engine(loaded: LoadedModel, engine_path: Path, backend: Backend, options: BuildOptions,
                 choice: ProfileChoice | None = None) -> BuildResult:
    """Build with ``EngineBuild``; write the engine, its build log and its layer table.

    The profiles are ``options.profiles`` when given, else ``choice``'s, else those
    ``profiles_for`` picks for the model (its sibling spec, else derived ranges).
    """
    require_library(backend, "convert")
    from polygraphy.exception import PolygraphyException

    engine_path = Path(engine_path)
    log_path = Path(str(engine_path) + ".build.log")
    layers_path = Path(str(engine_path) + ".layers.json")
    if not engine_path.parent.is_dir():
        raise UserInputError(f"{engine_path.parent}: output folder does not exist")
    notes: list[str] = []
    if not options.profiles:
        choice = choice or profiles_for(loaded.model, loaded.path, None)
        notes.append(f"profile {choice.describe()}")
        notes += choice.notes
        options = dataclasses.replace(options, profiles=choice.profiles)
    source = loaded.path if loaded.has_external_data else loaded.model.SerializeToString()
    build = EngineBuild(backend, source, options, verbose=True)
    start = time.time()
    native = _NativeStderr()
    try:
        with native:
            data = build()
    except PolygraphyException as exc:
        log_path.write_text(build.logger.capture.text() + native.text())
        detail = _failure_message(exc, build.logger.capture.errors())
        where = (re.search(r"node '([^']*)' \(([^)]*)\)", detail)
                 or re.search(r"parsing node number \d+ \[(\w+)[^\]]*\]:.*?Node name: (\S+)", build.logger.capture.text(), re.S))
        name, op = ((where.group(1), where.group(2)) if where and where.re.pattern.startswith("node") else
                    (where.group(2), where.group(1)) if where else ("", ""))
        at = f" at node '{name}' ({op})" if where else ""
        reason = rules.translate(detail, op)
        raise ConversionError(f"engine build failed{at}: {_one_line(reason)} (full log: {log_path})") from exc
    except (AttributeError, TypeError, ValueError, RuntimeError) as exc:
        log_path.write_text(build.logger.capture.text() + native.text())
        raise ConversionError(f"engine build failed: {type(exc).__name__}: {_one_line(str(exc))} (full log: {log_path})") from exc
    seconds = time.time() - start
    engine_path.write_bytes(data)
    log_path.write_text(build.logger.capture.text() + native.text())
    notes += build.notes
    layers = build.layers
    mapping = layer_to_node(layers, [n.name for n in loaded.model.graph.node])
    for layer in layers:
        layer["onnx_node"] = mapping.get(layer["name"], "")
    notes.append("layer table from the parsed network (the engine inspector needs a deserialized engine, which "
                 "needs a supported GPU)")
    layers_path.write_text(json.dumps({"source": "network", "layers": layers}, indent=1))
    return BuildResult(engine_path, log_path, layers_path, seconds, len(data), backend.describe(), notes,
                       options_used(options))


def probe_build(backend: Backend, model: bytes | str | Path, options: BuildOptions,
                timeout_s: float = 600.0) -> tuple[bool, str, list[dict[str, str]]]:
    """``EngineBuild`` in a child process: (ok, error text, layer table); the engine itself is dropped.

    A crash inside TensorRT becomes a failed build instead of taking the whole report down
    (TensorRT-RTX 1.7 was seen to segfault while building a valid network: an Attention node whose
    q, k and v are one tensor).
    """
    require_library(backend, "a check build")
    try:
        return call_in_child(probe_in_process, backend.name, model, options, timeout_s=timeout_s)
    except ChildCrash as crash:
        return False, build_crash_message(crash), []


def build_crash_message(crash: ChildCrash) -> str:
    """The error text of a build whose process died."""
    if crash.signal is None and crash.how.startswith("did not finish"):
        return f"the TensorRT build {crash.how}"
    return f"the TensorRT builder crashed ({crash.how}) while building this model" + (
        f": {crash.stderr_tail}" if crash.stderr_tail else "")


def probe_in_process(name: str, model: bytes | str | Path, options: BuildOptions) -> tuple[bool, str, list[dict[str, str]]]:
    """``probe_build``'s work, in this process: (ok, error text, layer table); meant to run in a child."""
    build = None
    try:
        build = EngineBuild(select_backend(name), model, options)
        build()
        return True, "", build.layers
    except Exception as exc:  # report it; the parent turns it into a build failure
        return False, _probe_error(exc, build.logger.capture.errors() if build else []), build.layers if build else []


def _probe_error(exc: Exception, errors: list[str]) -> str:
    """The error text of a failed probe build: TensorRT's own messages where polygraphy's are generic."""
    from polygraphy.exception import PolygraphyException

    if isinstance(exc, PolygraphyException):  # "Invalid Engine...": TensorRT's log says what failed
        return "\n".join(errors) or str(exc).strip() or "build returned no engine"
    return "\n".join([f"{type(exc).__name__}: {exc}", *errors])


def empty_network(backend: Backend, logger: Any) -> tuple[Any, Any]:
    """(builder, network) created as ``EngineBuild`` creates them (polygraphy's ``CreateNetwork``), logging to ``logger``.

    A builder this machine cannot create (full TensorRT without a GPU) is a ``ConversionError``.
    """
    trt = require_library(backend, "a TensorRT network")
    pg = polygraphy_trt(backend)
    from polygraphy.backend.trt import util as pg_util
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    pg_util.TRT_LOGGER = logger
    try:
        with G_LOGGER.verbosity(G_LOGGER.CRITICAL + 1):
            return pg.CreateNetwork()()
    except (PolygraphyException, AttributeError, TypeError, RuntimeError) as exc:
        raise ConversionError(f"{trt.__name__} cannot create a builder here ({exc}); "
                              "full TensorRT needs a GPU, TensorRT-RTX builds on CPU") from exc


def network_profiles(network: Any, profiles: Sequence[Profile]) -> list[Profile]:
    """``profiles`` restricted to the network inputs that have a dynamic dim (TensorRT takes no others)."""
    dynamic = {network.get_input(i).name for i in range(network.num_inputs) if any(d < 0 for d in network.get_input(i).shape)}
    return [{k: v for k, v in p.items() if k in dynamic} for p in profiles if any(k in dynamic for k in p)]


def layer_table(network: Any) -> list[dict[str, str]]:
    """Name, type and ONNX-node metadata of every layer in ``network``."""
    out = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        out.append({"name": layer.name, "type": str(layer.type).split(".")[-1], "metadata": getattr(layer, "metadata", "") or ""})
    return out


def layer_to_node(layers: Sequence[dict[str, str]], node_names: Sequence[str]) -> dict[str, str]:
    """Map TensorRT layer names to the ONNX node names they came from."""
    by_len = sorted(node_names, key=len, reverse=True)
    out = {}
    for layer in layers:
        m = _LAYER_META.search(layer.get("metadata", ""))
        if m and m.group(1) in node_names:
            out[layer["name"]] = m.group(1)
            continue
        for node in by_len:
            if layer["name"] == node or layer["name"].startswith(node + "_") or layer["name"].startswith(node + "/"):
                out[layer["name"]] = node
                break
    return out


def _mark_decomposable(pg: Any, trt: Any, network: Any, notes: list[str]) -> Any:
    if not hasattr(getattr(trt, "IAttention", object), "decomposable"):
        notes.append(f"{trt.__name__} has no IAttention.decomposable; --decomposable-attention ignored")
        return network
    if not hasattr(pg, "SetDecomposableAttentions"):
        notes.append("this polygraphy has no SetDecomposableAttentions; --decomposable-attention ignored")
        return network
    return pg.SetDecomposableAttentions(network)()


def _config_kwargs(pg: Any, trt: Any, backend: Backend, options: BuildOptions, profiles: list[Profile]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"profiling_verbosity": trt.ProfilingVerbosity.DETAILED}
    if profiles:
        kwargs["profiles"] = [_pg_profile(pg, p) for p in profiles]
    if options.workspace:
        kwargs["memory_pool_limits"] = {trt.MemoryPoolType.WORKSPACE: int(options.workspace)}
    if options.optimization_level is not None:
        if not backend.features.get("builder_optimization_level"):
            raise UserInputError(f"{backend.name} {backend.version} has no builder optimization level")
        kwargs["builder_optimization_level"] = int(options.optimization_level)
    if options.hardware_compatibility:  # the level exists: preflight checked it
        kwargs["hardware_compatibility_level"] = getattr(trt.HardwareCompatibilityLevel, options.hardware_compatibility.upper())
    if options.version_compatible:
        if not backend.features.get("version_compatible"):
            raise UserInputError(f"{backend.name} {backend.version} has no version-compatible engines")
        kwargs["version_compatible"] = True
        kwargs["exclude_lean_runtime"] = options.exclude_lean_runtime or None
    if options.refittable:
        kwargs["refittable"] = True
    if options.strip_weights:
        kwargs["strip_plan"] = True
    if options.weight_streaming:
        kwargs["weight_streaming"] = True
    if options.tactic_sources is not None:
        kwargs["tactic_sources"] = tactic_sources(trt, options.tactic_sources)
    selector = tactic_selector(pg, options)
    if selector is not None:
        kwargs["algorithm_selector"] = selector
    return kwargs


def _finish_config(trt: Any, options: BuildOptions, timing: TimingCacheStep | None, builder: Any, network: Any,
                   config: Any) -> None:
    """What ``CreateConfig`` has no argument for: a weight-stripped plan that is not refittable is refit-identical
    (trtexec's --stripWeights), and the merged timing cache."""
    if options.strip_weights and not options.refittable and hasattr(trt.BuilderFlag, "REFIT_IDENTICAL"):
        config.set_flag(trt.BuilderFlag.REFIT_IDENTICAL)
    if timing is not None:
        if hasattr(trt.BuilderFlag, "DISABLE_TIMING_CACHE"):  # polygraphy sets it beside an algorithm selector
            config.clear_flag(trt.BuilderFlag.DISABLE_TIMING_CACHE)
        timing(builder, network, config)


def _pg_profile(pg: Any, prof: Profile) -> Any:
    profile = pg.Profile()
    for name, (lo, opt, hi) in prof.items():
        profile.add(name, min=lo, opt=opt, max=hi)
    return profile


def _one_line(text: str, limit: int = 400) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class _NativeStderr:
    """Send what TensorRT's C++ code writes straight to file descriptor 2 (Myelin dumps) into the build log."""

    def __enter__(self) -> "_NativeStderr":
        import tempfile

        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self._text = self._file.read().decode(errors="replace")
        self._file.close()

    def text(self) -> str:
        text = getattr(self, "_text", "")
        return f"\n--- written to stderr by the builder ---\n{text}" if text.strip() else ""


def _failure_message(exc: Exception, errors: list[str]) -> str:
    """The last line of polygraphy's exception and TensorRT's first errors (the parser's errors name their node)."""
    parts = [str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__, *errors[:5]]
    return "; ".join(p for p in parts if p)
