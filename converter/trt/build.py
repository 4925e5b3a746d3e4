"""Build a TensorRT engine from ONNX with Polygraphy loaders (``surgery convert``).

``NetworkFromOnnxBytes``/``NetworkFromOnnxPath`` parse, ``SetDecomposableAttentions`` marks attention
decomposable, ``CreateConfig`` carries profiles, the workspace pool, the optimization level, the
timing cache and compatibility flags, and ``EngineBytesFromNetwork`` builds. With TensorRT-RTX this is
a real ahead-of-time engine built on the CPU. Writes ENGINE, ENGINE.build.log and ENGINE.layers.json.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converter.trt import remedies
from converter.trt.backends import Backend, make_logger, polygraphy_trt, require_library
from converter.trt.profiles import Profile, ProfileChoice, profiles_for
from converter.trt.raw import layer_table, layer_to_node, mark_attention_decomposable, network_profiles
from surgery.errors import ConversionError, UserInputError
from surgery.io import LoadedModel

log = logging.getLogger(__name__)


@dataclass
class BuildOptions:
    """Everything ``convert`` can set; ``None`` keeps TensorRT's default."""

    profiles: list[Profile] = field(default_factory=list)
    workspace: int | None = None
    optimization_level: int | None = None
    timing_cache: Path | None = None
    save_timing_cache: Path | None = None
    plugins: list[str] = field(default_factory=list)
    strongly_typed: bool = False
    hardware_compatibility: str | None = None
    version_compatible: bool = False
    decomposable_attention: bool = False


@dataclass
class BuildResult:
    engine: Path
    log: Path
    layers: Path
    seconds: float
    size: int
    backend: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.engine), "log": str(self.log), "layers": str(self.layers), "seconds": round(self.seconds, 3),
                "bytes": self.size, "backend": self.backend, "notes": self.notes}


def build_engine(loaded: LoadedModel, engine_path: Path, backend: Backend, options: BuildOptions,
                 choice: ProfileChoice | None = None) -> BuildResult:
    """Parse, configure and build; write the engine, its build log and its layer table.

    The profiles are ``options.profiles`` when given, else ``choice``'s, else those
    ``profiles_for`` picks for the model (its sibling spec, else derived ranges).
    """
    trt = require_library(backend, "convert")
    pg = polygraphy_trt(backend)
    from polygraphy.backend.trt import util as pg_util
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    from converter.trt.capability import load_plugins

    logger = make_logger(trt, verbose=True)
    pg_util.TRT_LOGGER = logger  # polygraphy hands this logger to every builder it creates
    load_plugins(trt, options.plugins, logger)
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
    profiles = options.profiles or choice.profiles
    start = time.time()
    network = None
    native = _NativeStderr()
    try:
        with native, G_LOGGER.verbosity(G_LOGGER.CRITICAL + 1):  # polygraphy's own '[!]' lines stay quiet: the failure is raised
            network = _network(pg, loaded, options)()
            if options.decomposable_attention:
                network = _mark_decomposable(pg, trt, network, notes)
            layers = layer_table(network[1])
            profiles = network_profiles(network[1], profiles)
            config = pg.CreateConfig(**_config_kwargs(pg, trt, backend, options, profiles, notes))
            blob = pg.EngineBytesFromNetwork(network, config=config,
                                             save_timing_cache=str(options.save_timing_cache) if options.save_timing_cache else None)()
    except PolygraphyException as exc:
        log_path.write_text(logger.capture.text() + native.text())
        detail = _failure_message(exc, logger.capture.errors(), network)
        where = (re.search(r"node '([^']*)' \(([^)]*)\)", detail)
                 or re.search(r"parsing node number \d+ \[(\w+)[^\]]*\]:.*?Node name: (\S+)", logger.capture.text(), re.S))
        name, op = ((where.group(1), where.group(2)) if where and where.re.pattern.startswith("node") else
                    (where.group(2), where.group(1)) if where else ("", ""))
        at = f" at node '{name}' ({op})" if where else ""
        reason = remedies.translate(detail, op)
        raise ConversionError(f"engine build failed{at}: {_one_line(reason)} (full log: {log_path})") from exc
    except (AttributeError, TypeError, ValueError, RuntimeError) as exc:
        log_path.write_text(logger.capture.text() + native.text())
        raise ConversionError(f"engine build failed: {type(exc).__name__}: {_one_line(str(exc))} (full log: {log_path})") from exc
    seconds = time.time() - start
    data = bytes(blob)
    engine_path.write_bytes(data)
    log_path.write_text(logger.capture.text() + native.text())
    node_names = [n.name for n in loaded.model.graph.node]
    mapping = layer_to_node(layers, node_names)
    for layer in layers:
        layer["onnx_node"] = mapping.get(layer["name"], "")
    notes.append("layer table from the parsed network (the engine inspector needs a deserialized engine, which "
                 "needs a supported GPU)")
    layers_path.write_text(json.dumps({"source": "network", "layers": layers}, indent=1))
    return BuildResult(engine_path, log_path, layers_path, seconds, len(data), backend.describe(), notes)


def _network(pg: Any, loaded: LoadedModel, options: BuildOptions) -> Any:
    if loaded.has_external_data:  # the parser must find the weights next to the file
        return pg.NetworkFromOnnxPath(str(loaded.path), strongly_typed=options.strongly_typed)
    return pg.NetworkFromOnnxBytes(loaded.model.SerializeToString(), strongly_typed=options.strongly_typed)


def _mark_decomposable(pg: Any, trt: Any, network: Any, notes: list[str]) -> Any:
    if not hasattr(getattr(trt, "IAttention", object), "decomposable"):
        notes.append(f"{trt.__name__} has no IAttention.decomposable; --decomposable-attention ignored")
        return network
    if hasattr(pg, "SetDecomposableAttentions"):
        return pg.SetDecomposableAttentions(network)()
    mark_attention_decomposable(trt, network[1])
    return network


def _config_kwargs(pg: Any, trt: Any, backend: Backend, options: BuildOptions, profiles: list[Profile],
                   notes: list[str]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"profiling_verbosity": trt.ProfilingVerbosity.DETAILED}
    if profiles:
        kwargs["profiles"] = [_pg_profile(pg, p) for p in profiles]
    if options.workspace:
        kwargs["memory_pool_limits"] = {trt.MemoryPoolType.WORKSPACE: int(options.workspace)}
    if options.optimization_level is not None:
        if not backend.features.get("builder_optimization_level"):
            raise UserInputError(f"{backend.name} {backend.version} has no builder optimization level")
        kwargs["builder_optimization_level"] = int(options.optimization_level)
    if options.timing_cache:
        if not Path(options.timing_cache).is_file():
            notes.append(f"timing cache {options.timing_cache} does not exist yet; starting empty")
        else:
            kwargs["load_timing_cache"] = str(options.timing_cache)
    if options.hardware_compatibility:
        level = getattr(getattr(trt, "HardwareCompatibilityLevel", None), options.hardware_compatibility.upper(), None)
        if level is None:
            raise UserInputError(f"{backend.name} {backend.version} has no hardware compatibility level "
                                 f"'{options.hardware_compatibility}'")
        kwargs["hardware_compatibility_level"] = level
    if options.version_compatible:
        if not backend.features.get("version_compatible"):
            raise UserInputError(f"{backend.name} {backend.version} has no version-compatible engines")
        kwargs["version_compatible"] = True
    return kwargs


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
        import sys
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


def _failure_message(exc: Exception, errors: list[str], network: Any) -> str:
    parts = [str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__]
    parser = network[2] if isinstance(network, tuple) and len(network) > 2 else None
    if parser is not None and getattr(parser, "num_errors", 0):
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            parts.append(f"node '{err.node_name()}' ({err.node_operator()}): {err.desc()}")
    parts += errors[:5]
    return "; ".join(p for p in parts if p)
