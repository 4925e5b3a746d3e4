"""Deserialized engines: what TensorRT's engine inspector says about one (``surgery inspect ENGINE``).

An engine deserializes only where its runtime runs it (a supported GPU; TensorRT-RTX's CPU-built
engines too). Elsewhere ``load_engine`` raises ``EngineSkipped`` with TensorRT's own reason, and the
commands report "skipped" (exit 3), never a result.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from converter.runtime.validate import EngineSkipped
from converter.trt.backends import Backend, make_logger


def load_engine(backend: Backend, data: bytes) -> tuple[Any, Any]:
    """(runtime, engine) for the serialized ``data``; ``EngineSkipped`` with the reason where it cannot load."""
    if backend.module is None:
        raise EngineSkipped("no TensorRT runtime is installed (backend 'static')")
    trt = backend.module
    logger = make_logger(trt)
    try:
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(data) if runtime is not None else None
    except Exception as exc:
        raise EngineSkipped(f"{trt.__name__} cannot create a runtime here: {exc}") from exc
    if engine is None:
        why = "; ".join(m.splitlines()[0] for m in logger.capture.errors()[-2:]) or "deserialization returned nothing"
        raise EngineSkipped(f"{trt.__name__} {trt.__version__} cannot deserialize the engine on this machine: {why}")
    return runtime, engine


def io_tensors(trt: Any, engine: Any) -> list[dict[str, Any]]:
    """Name, mode, dtype, shape (-1 = dynamic), and each profile's min/opt/max for inputs."""
    out = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        entry = {"name": name, "mode": str(mode).split(".")[-1].lower(), "dtype": str(engine.get_tensor_dtype(name)).split(".")[-1].lower(),
                 "shape": list(engine.get_tensor_shape(name))}
        if mode == trt.TensorIOMode.INPUT and any(d < 0 for d in entry["shape"]):
            entry["profiles"] = [[list(s) for s in engine.get_tensor_profile_shape(name, p)]
                                 for p in range(engine.num_optimization_profiles)]
        out.append(entry)
    return out


def layer_information(trt: Any, engine: Any) -> tuple[list[Any], str]:
    """Each layer as the engine inspector describes it (JSON; only names unless the engine was built with
    detailed profiling verbosity), and a note when the inspector is missing."""
    if not hasattr(engine, "create_engine_inspector"):
        return [], f"{trt.__name__} {trt.__version__} has no engine inspector"
    inspector = engine.create_engine_inspector()
    fmt = trt.LayerInformationFormat.JSON
    layers = []
    for i in range(engine.num_layers):
        text = inspector.get_layer_information(i, fmt)
        try:
            layers.append(json.loads(text))
        except ValueError:  # a plain layer name
            layers.append({"Name": text.strip().strip('"')})
    return layers, ""


def engine_info(backend: Backend, path: str | Path) -> dict[str, Any]:
    """What the engine at ``path`` holds: I/O, profiles, device memory, layers (the inspector's view)."""
    data = Path(path).read_bytes()
    _, engine = load_engine(backend, data)
    trt = backend.module
    layers, note = layer_information(trt, engine)
    memory = getattr(engine, "device_memory_size_v2", None) or getattr(engine, "device_memory_size", None)
    info: dict[str, Any] = {"path": str(path), "bytes": len(data), "backend": backend.describe(),
                            "profiles": engine.num_optimization_profiles, "io": io_tensors(trt, engine),
                            "device_memory": memory, "layers": layers}
    if note:
        info["notes"] = [note]
    return info
