"""Run TensorRT work in a child process, so that a crash inside the library becomes a finding.

TensorRT's parser and builder are C++ code; a segfault or an abort there ends the whole process.
``call_in_child`` runs a module-level function in a fresh Python process (arguments and result
travel as pickles over stdin/stdout) and raises ``ChildCrash`` when that process dies. The
function may call ``checkpoint(obj)`` as it goes; the last object it left is what the crash
carries, so the caller knows how far the child got (which parse was under way).
"""
from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_CHECKPOINT_ENV = "SURGERY_CHILD_CHECKPOINT"


class ChildCrash(Exception):
    """The child process died (a signal, a non-zero exit) or ran past its time limit."""

    def __init__(self, how: str, signal: int | None, stderr_tail: str, checkpoint: Any) -> None:
        super().__init__(how)
        self.how, self.signal, self.stderr_tail, self.checkpoint = how, signal, stderr_tail, checkpoint


def call_in_child(function: Callable[..., T], *args: Any, timeout_s: float = 600.0) -> T:
    """``function(*args)`` in a fresh Python process: its result, or the exception it raised (raised
    again here), or ``ChildCrash`` when the process dies or runs longer than ``timeout_s``."""
    payload = pickle.dumps((function.__module__, function.__qualname__, args))
    cmd = [sys.executable, "-c", "from converter.trt.isolate import _child_main; _child_main()"]
    with tempfile.TemporaryDirectory(prefix="surgery-child-") as tmp:
        marks = Path(tmp) / "checkpoint.pkl"
        env = {**os.environ, _CHECKPOINT_ENV: str(marks)}
        try:
            proc = subprocess.run(cmd, input=payload, capture_output=True, timeout=timeout_s, check=False, env=env)
        except subprocess.TimeoutExpired as exc:
            raise ChildCrash(f"did not finish within {timeout_s:.0f} s", None, _tail(exc.stderr), _load(marks)) from None
        if proc.returncode != 0 or not proc.stdout:
            how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
            raise ChildCrash(how, -proc.returncode if proc.returncode < 0 else None, _tail(proc.stderr), _load(marks))
    kind, value = pickle.loads(proc.stdout)
    if kind == "raise":
        raise value
    return value


def checkpoint(obj: Any) -> None:
    """In a child of ``call_in_child``: leave ``obj`` for the parent should this process die (else a no-op)."""
    path = os.environ.get(_CHECKPOINT_ENV)
    if path:
        tmp = path + ".tmp"
        Path(tmp).write_bytes(pickle.dumps(obj))
        os.replace(tmp, path)


def _child_main() -> None:
    """The child's entry: (module, function name, args) on stdin; ("return", value) or ("raise", exc) on stdout."""
    result_fd = os.dup(1)
    os.dup2(2, 1)  # whatever polygraphy or TensorRT print goes to stderr; stdout carries only the result
    module, name, args = pickle.load(sys.stdin.buffer)
    function: Any = importlib.import_module(module)
    for part in name.split("."):
        function = getattr(function, part)
    try:
        result = pickle.dumps(("return", function(*args)))
    except Exception as exc:  # raised again in the parent, as if the call had been local
        try:
            result = pickle.dumps(("raise", exc))
        except Exception:  # an exception that cannot travel: its text does
            result = pickle.dumps(("raise", RuntimeError(f"{type(exc).__name__}: {exc}")))
    with os.fdopen(result_fd, "wb") as out:
        out.write(result)


def _load(path: Path) -> Any:
    try:
        return pickle.loads(path.read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError):
        return None


def _tail(stderr: bytes | None) -> str:
    lines = (stderr or b"").decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""
