"""TensorRT backends: detect ``tensorrt`` / ``tensorrt_rtx``, pick one, and feature-detect their APIs.

``auto`` prefers full TensorRT, then TensorRT-RTX, then the built-in ``static`` table. What differs
between the libraries is detected by looking for the attribute, never by comparing version strings:
``Backend.features`` holds the builder settings the build checks before it asks for them; the others
(strongly typed networks, decomposable attention, hardware compatibility levels) are detected where
they are used (``converter.trt.build``).
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from surgery.errors import ConversionError, UserInputError

log = logging.getLogger(__name__)

BACKEND_CHOICES = ("auto", "tensorrt", "tensorrt-rtx", "static")
_MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
STATIC_VERSION = "table for TensorRT 10.x/11.x"


@dataclass
class Backend:
    """A selected backend: its name, version and (for library backends) the imported module."""

    name: str
    version: str
    module: ModuleType | None = None
    features: dict[str, bool] = field(default_factory=dict)

    @property
    def is_library(self) -> bool:
        return self.module is not None

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt-rtx"

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


def _import(name: str) -> tuple[ModuleType | None, str]:
    """Import a TensorRT module; returns (module, "") or (None, why not)."""
    module_name = _MODULES[name]
    if module_name in sys.modules:
        return sys.modules[module_name], ""
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the PyPI 'tensorrt' stub raises at import when its wheel was not fetched
        return None, f"{module_name} cannot be imported ({type(exc).__name__}: {exc})".splitlines()[0]
    if not hasattr(module, "Builder"):
        return None, f"{module_name} is installed but has no Builder (stub package?)"
    return module, ""


def detect_features(trt: ModuleType) -> dict[str, bool]:
    """Which optional builder settings this TensorRT module has (checked by attribute, not by version)."""
    return {
        "version_compatible": hasattr(trt.BuilderFlag, "VERSION_COMPATIBLE"),
        "builder_optimization_level": hasattr(getattr(trt, "IBuilderConfig", object), "builder_optimization_level"),
    }


def select_backend(name: str = "auto") -> Backend:
    """Pick a backend by CLI name; raise ``UserInputError`` when an explicit one is missing."""
    if name not in BACKEND_CHOICES:
        raise UserInputError(f"unknown backend '{name}' (choose from {', '.join(BACKEND_CHOICES)})")
    if name == "static":
        return Backend("static", STATIC_VERSION)
    candidates = list(_MODULES) if name == "auto" else [name]
    reasons = []
    for cand in candidates:
        module, why = _import(cand)
        if module is not None:
            backend = Backend(cand, str(getattr(module, "__version__", "?")), module, detect_features(module))
            log.info("backend %s %s", backend.name, backend.version)
            return backend
        reasons.append(why)
    if name == "auto":
        log.info("no TensorRT library importable (%s); using the static table", "; ".join(reasons))
        return Backend("static", STATIC_VERSION)
    raise UserInputError(f"backend '{name}' is not available: {reasons[0]}")


def require_library(backend: Backend, what: str) -> ModuleType:
    """The TensorRT module of ``backend``, or a one-line ``UserInputError`` saying ``what`` needs one."""
    if backend.module is None:
        raise UserInputError(f"{what} needs tensorrt or tensorrt_rtx (backend '{backend.name}' cannot build engines)")
    return backend.module


def polygraphy_trt(backend: Backend) -> ModuleType:
    """``polygraphy.backend.trt`` bound to ``backend``'s module.

    Polygraphy chooses between tensorrt and tensorrt_rtx once, when ``polygraphy.backend.trt`` is
    first imported (from ``POLYGRAPHY_USE_TENSORRT_RTX`` via ``polygraphy.config``), so the switch is
    set before that import; a process that already imported it for the other library cannot switch.
    """
    require_library(backend, "polygraphy TensorRT loaders")
    want_rtx = backend.is_rtx
    if "polygraphy.backend.trt" not in sys.modules:
        os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1" if want_rtx else "0"
        from polygraphy import config as pg_config

        pg_config.USE_TENSORRT_RTX = want_rtx
    from polygraphy.logger import logger as pg_logger

    if pg_logger.COLORED_MODULE_PRESENT is None:  # else polygraphy prints a warning about colours to stdout
        pg_logger.COLORED_MODULE_PRESENT = importlib.util.find_spec("colored") is not None
    pg_trt = importlib.import_module("polygraphy.backend.trt")
    from polygraphy import config as pg_config

    if bool(pg_config.USE_TENSORRT_RTX) != want_rtx:
        raise ConversionError(
            f"polygraphy is already bound to {'tensorrt_rtx' if pg_config.USE_TENSORRT_RTX else 'tensorrt'} in this "
            f"process; run again with --backend matching it or in a fresh process"
        )
    return pg_trt


class _Capture:
    """Collects TensorRT log messages (severity name, text) and forwards warnings+ to logging."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def errors(self) -> list[str]:
        return [m for s, m in self.messages if s in ("INTERNAL_ERROR", "ERROR")]

    def text(self) -> str:
        return "\n".join(f"[{s}] {m}" for s, m in self.messages)


_LOGGERS: dict[str, Any] = {}


def make_logger(trt: ModuleType, verbose: bool = False) -> Any:
    """The process-wide recording ``trt.ILogger`` for ``trt`` with a fresh ``capture``.

    TensorRT keeps using the first logger it was given for some messages, so one instance per module
    lives for the whole process (a collected logger would be called after it is freed). Each call
    starts a new capture; the previous one keeps what it recorded.
    """
    logger = _LOGGERS.get(trt.__name__)
    if logger is None:

        class CaptureLogger(trt.ILogger):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.capture = _Capture()
                self.verbose = False

            def log(self, severity: Any, msg: str) -> None:
                try:
                    name = getattr(severity, "name", str(severity))
                    if name == "VERBOSE" and not self.verbose:
                        return
                    self.capture.messages.append((name, msg))
                    if name in ("INTERNAL_ERROR", "ERROR"):
                        log.debug("TensorRT: %s", msg)
                except Exception:  # log() is noexcept on the C++ side; never let an error escape
                    pass

        logger = _LOGGERS[trt.__name__] = CaptureLogger()
    logger.capture = _Capture()
    logger.verbose = verbose
    return logger
