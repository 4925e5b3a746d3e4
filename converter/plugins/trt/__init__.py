"""onnx-surgery's TensorRT plugins, written in Python (IPluginV3 + IPluginCreatorV3One).

``register_python_plugins(trt)`` registers one creator per onnx-surgery plugin op (SurgeryLayerNorm,
SurgeryRMSNorm, SurgeryGroupNorm, SurgeryGelu, SurgeryAttention) in ``trt.get_plugin_registry()`` under
the op's PluginSpec namespace and version, so the ONNX parser turns plugin-fused nodes into
plugin layers and the builder builds them (on a CPU, with TensorRT-RTX). ``converter.trt.build.
load_plugins`` calls it, so ``surgery check``, ``convert`` and ``run`` see the plugins registered.

Build-time code needs only numpy; running an engine calls ``enqueue``, which needs torch and triton
and a CUDA GPU (kernels in ``kernels.py`` / ``triton_kernels.py``). Importing this package imports
nothing heavy, so ``bench/plugins.py`` can import ``converter.plugins.trt.kernels`` on a bare GPU box.
"""
from __future__ import annotations

import ctypes
import importlib.util
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

# Creators must outlive the registry's reference to them (the registry holds a raw pointer), so they
# are kept here for the life of the process, keyed by (module name, op, version, namespace).
_CREATORS: dict[tuple[str, str, str, str], Any] = {}
RTX_ALIAS = "libtensorrt_rtx.so"


def rtx_libs_dir() -> Path | None:
    """The folder of the tensorrt-rtx wheel's shared libraries (``tensorrt_rtx_libs``), if installed."""
    spec = importlib.util.find_spec("tensorrt_rtx_libs")
    return Path(spec.origin).parent if spec and spec.origin else None


def rtx_alias_problem(trt: ModuleType) -> str | None:
    """Why TensorRT-RTX's parser would abort on a Python plugin node, or None when it will not.

    TensorRT-RTX 1.7.1's ONNX parser dlopens ``libtensorrt_rtx.so`` (unversioned) when it adds an
    IPluginV3 layer; the pip wheel ships only ``libtensorrt_rtx.so.1``, so the load fails inside a
    noexcept path and the whole process ends in ``std::terminate``. The parser searches its own
    folder (RPATH $ORIGIN), LD_LIBRARY_PATH and the ld cache, so an alias in any of them fixes it.
    """
    if trt.__name__ != "tensorrt_rtx":
        return None
    libs = rtx_libs_dir()
    if libs is not None and (libs / RTX_ALIAS).exists():
        return None
    try:
        ctypes.CDLL(RTX_ALIAS)  # found through LD_LIBRARY_PATH or the ld cache: the parser finds it too
        return None
    except OSError:
        pass
    target = libs / (RTX_ALIAS + ".1") if libs else Path(RTX_ALIAS + ".1")
    return (f"TensorRT-RTX's ONNX parser loads '{RTX_ALIAS}' to import plugin nodes, and the tensorrt-rtx wheel "
            f"ships only '{target.name}' (the process would abort). Fix: ln -s {target.name} {target.parent}/{RTX_ALIAS} "
            f"(or put a '{RTX_ALIAS}' link to {target} in a folder on LD_LIBRARY_PATH)")


def make_rtx_alias(folder: str | Path) -> Path:
    """Create ``folder/libtensorrt_rtx.so`` -> the wheel's ``libtensorrt_rtx.so.1``; returns the folder.

    For LD_LIBRARY_PATH of a child process (tests, CI) without touching the installed wheel.
    """
    libs = rtx_libs_dir()
    if libs is None:
        raise FileNotFoundError("tensorrt_rtx_libs is not installed")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / RTX_ALIAS
    if not link.exists():
        link.symlink_to((libs / (RTX_ALIAS + ".1")).resolve())
    return folder


def register_python_plugins(trt: ModuleType) -> list[str]:
    """Register the Python plugin creators with ``trt``'s plugin registry; idempotent.

    A creator of the same name, version and namespace already in the registry (e.g. from a C++
    library loaded with ``--plugins``) is left in place and not counted. Nothing is registered (and a
    warning says why) when TensorRT-RTX's parser could not load its own library for plugin nodes
    (``rtx_alias_problem``): a registered plugin would make it abort the process instead of failing.

    Returns:
        The plugin op names whose Python creator is registered (now or by an earlier call).
    """
    missing = [a for a in ("IPluginV3", "IPluginV3OneCore", "IPluginV3OneBuild", "IPluginV3OneRuntime",
                           "IPluginCreatorV3One", "get_plugin_registry") if not hasattr(trt, a)]
    if missing:
        log.warning("%s lacks %s: Python plugins not registered", trt.__name__, ", ".join(missing))
        return []
    problem = rtx_alias_problem(trt)
    if problem:
        log.warning("onnx-surgery Python plugins not registered: %s", problem)
        return []
    import passes.plugins  # noqa: F401  (registers the PluginSpecs)
    from converter.plugins.trt.ops import PLUGIN_OPS
    from converter.plugins.trt.plugin import make_plugin_classes
    from surgery.plugins import get_plugin_spec

    registry = trt.get_plugin_registry()
    present = {(c.name, str(c.plugin_version), str(c.plugin_namespace)) for c in registry.all_creators}
    names = []
    for op, pop in PLUGIN_OPS.items():
        spec = get_plugin_spec(op)
        if spec is None:
            log.warning("plugin %s has a Python implementation but no PluginSpec; not registered", op)
            continue
        key = (trt.__name__, op, spec.version, spec.namespace)
        if key in _CREATORS:
            names.append(op)
            continue
        if (op, spec.version, spec.namespace) in present:
            log.info("plugin %s v%s (%s) already registered by a library; keeping it", op, spec.version, spec.namespace)
            continue
        _, creator_cls = make_plugin_classes(trt, spec, pop)
        creator = creator_cls()
        if not registry.register_creator(creator, spec.namespace):
            log.warning("registering the Python plugin %s v%s (%s) failed", op, spec.version, spec.namespace)
            continue
        _CREATORS[key] = creator
        names.append(op)
    log.debug("Python plugins registered with %s: %s", trt.__name__, ", ".join(names) or "none")
    return names
