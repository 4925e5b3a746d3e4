"""One batch item in its own process: the ``run`` pipeline, its verdict, and a record in the item's folder.

``execute_item`` (called by every executor: a thread of the local pool, or a Ray task) starts the
item in a child process from a fork server that has the heavy modules imported once, waits for it
with the item's timeout and writes ``item.json``. A TensorRT build that crashes the child, or one
that runs past the timeout, costs that item only; the record says which (signal, exit code, time).
The child's stdout and stderr (TensorRT's own messages included) go to the item's ``batch.log``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.connection
import os
import resource
import select
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from converter.batch.items import RECORD

LOG = "batch.log"
# Files an item's folder may hold from an earlier run: removed before the item runs again, so that
# nothing stale (an engine the new run did not build) is read as this run's.
OUTPUTS = ("model.opt.onnx", "model.opt.onnx.data", "model.engine", "model.engine.build.log",
           "model.engine.layers.json", "report.json", "report.html", LOG, RECORD)
PRELOAD = ["numpy", "onnx", "onnxruntime", "onnx_graphsurgeon", "passes", "converter.pipeline"]
_BACKEND_MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
_STOP_POLL_S = 0.5
_context_lock = threading.Lock()
_context: Any = None


def fork_context(backends: list[str]) -> Any:
    """The fork-server context shared by this process's items; the server imports the pipeline (and the
    TensorRT modules the targets selected) once, and every item process is forked from it."""
    global _context
    with _context_lock:
        if _context is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD + sorted({_BACKEND_MODULES[b] for b in backends if b in _BACKEND_MODULES})
                                       + _main_as_module())
            warm = ctx.Process(target=_warm_up)  # the server starts (and imports) here, so that no item's time includes it
            warm.start()
            warm.join()
            _context = ctx
        return _context


def _warm_up() -> None:
    """A process that does nothing: its start waits until the fork server has imported the preloaded modules."""


def _main_as_module() -> list[str]:
    """The main script's module name, where the script lies in a package on sys.path (a Ray worker's default_worker).

    multiprocessing runs a main given by path again in every child; imported once by the fork server, what
    the script imports (all of Ray, for a Ray worker) is already loaded when each item process runs it.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or getattr(main, "__spec__", None) is not None or not path.endswith(".py"):
        return []
    script = Path(path).resolve()
    for entry in sys.path:
        root = Path(entry or ".").resolve()
        if script.is_relative_to(root):
            parts = script.relative_to(root).with_suffix("").parts
            if len(parts) > 1 and all(part.isidentifier() for part in parts):
                return [".".join(parts)]
    return []


def execute_item(item: dict[str, Any], timeout_s: float | None, stop: threading.Event | None = None,
                 stage: str = "all", optimized: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Run ``item`` (``Item.to_json()``) in its own process; returns its record (also written to its folder),
    or None when ``stop`` was set first (the item is left unrecorded, to run again).

    ``stage`` "all" runs the whole pipeline in one process. "optimize" and then "build" (given the first's
    result as ``optimized``) run it in two, as two Ray tasks with their own resources: "optimize" returns a
    partial result (``{"partial": "optimize", ...}``, no record) unless it failed, and "build" returns a
    record it was given unchanged. The timeout covers both stages together.
    """
    if stage == "build" and (optimized is None or "partial" not in optimized):
        return optimized  # the optimize stage ended the item: its record stands
    spent = optimized["seconds"] if stage == "build" else 0.0
    out = Path(item["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    if stage != "build":
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)
    ctx = fork_context([item["backend"]])
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(item, sender, str(out / LOG), os.getpid(), stage,
                                            optimized["optimize"] if stage == "build" else None),
                       name=f"surgery-batch {item['model']}/{item['target']['name']}")
    start = time.monotonic()
    proc.start()
    sender.close()
    outcome: tuple[str, dict[str, Any]] | None = None
    deadline = start + max(timeout_s - spent, 0.0) if timeout_s else None
    try:
        while outcome is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                outcome = ("timeout", {"ran": False, "error": f"timed out after {timeout_s:g} s (killed)"})
                break
            slice_s = left if stop is None else _STOP_POLL_S if left is None else min(left, _STOP_POLL_S)
            ready = multiprocessing.connection.wait([receiver, proc.sentinel], timeout=slice_s)
            if stop is not None and stop.is_set():
                return None
            if receiver in ready:
                try:
                    outcome = receiver.recv()
                except EOFError:  # the child died without a word
                    proc.join()
                    outcome = ("crashed", {"ran": False, "error": _death(proc.exitcode)})
            elif proc.sentinel in ready:
                proc.join()
                outcome = ("crashed", {"ran": False, "error": _death(proc.exitcode)})
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        receiver.close()
    status, body = outcome
    seconds = round(spent + time.monotonic() - start, 3)
    if stage == "build":
        body["cpu_s"] = round(body.get("cpu_s", 0.0) + optimized["cpu_s"], 3)
        body["optimize_seconds"] = optimized["seconds"]
    if stage == "optimize" and status == "done":
        return {"partial": "optimize", "optimize": body["optimize"], "seconds": seconds, "cpu_s": body["cpu_s"]}
    record = make_record(item, body.pop("status", status), seconds, timeout_s, **body)
    write_json(out / RECORD, record)
    return record


def make_record(item: dict[str, Any], status: str, seconds: float | None, timeout_s: float | None,
                **body: Any) -> dict[str, Any]:
    """An item's ``item.json``: which item (and from which inputs), its status, its time, and the verdict ``body``."""
    return {"model": item["model"], "path": item["path"], "spec": item["spec"], "target": item["target"]["name"],
            "fingerprint": item["fingerprint"], "status": status, "seconds": seconds, "timeout_s": timeout_s, **body}


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the item's process was killed by {name} (a crash in native code; see {LOG})"
    return f"the item's process exited with code {exitcode} before reporting (see {LOG})"


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


# ---- inside the item's process --------------------------------------------------------------------------------

def _die_with(pid: int) -> None:
    """End this process as soon as process ``pid`` (the one waiting for this item) is gone, so that a killed
    batch leaves no item running on (a later --resume runs it again). A daemon thread waits on the pid."""
    def watch() -> None:
        try:
            fd = os.pidfd_open(pid)  # Linux 5.3+: readable once the process has exited
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            select.select([fd], [], [])
        else:
            while True:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(_STOP_POLL_S)
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=watch, name="surgery-batch-watch", daemon=True).start()


def _child(item: dict[str, Any], sender: Any, log_path: str, waiter: int, stage: str,
           optimize: dict[str, Any] | None) -> None:
    _die_with(waiter)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the batch, which stops its items (not recorded)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if stage == "build" else os.O_TRUNC), 0o644)
    sys.stdout.flush(), sys.stderr.flush()
    os.dup2(log, 1), os.dup2(log, 2)
    try:
        sender.send(("done", {**run_item(item, stage, optimize), "cpu_s": _cpu_seconds()}))
    except Exception as exc:  # a user error (bad shapes for this model), a failed pass, a bug: this item only
        from surgery.errors import SurgeryError

        traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        kind = "" if isinstance(exc, SurgeryError) else f"{type(exc).__name__}: "
        sender.send(("error", {"ran": False, "error": f"{kind}{first}", "cpu_s": _cpu_seconds()}))
    finally:
        sys.stdout.flush(), sys.stderr.flush()


def _cpu_seconds() -> float:
    """CPU time this item used: its process (every thread) and the processes it waited for (the check's build)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return round(sum(u.ru_utime + u.ru_stime for u in usage), 3)


def run_item(item: dict[str, Any], stage: str = "all", optimize: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``run`` pipeline on one model for one target, in this process: all of it (returns the verdict), its
    optimize stage (returns ``{"optimize": report}``) or the rest after it (``optimize``: that report; the verdict)."""
    import logging

    import onnxruntime

    import passes  # noqa: F401  (registers passes and presets)
    from converter.pipeline import RunOptions, run_after_optimize, run_optimize, run_pipeline

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    onnxruntime.set_default_logger_severity(3)
    target = item["target"]
    spec = Path(item["spec"]) if item["spec"] else None
    opts = RunOptions(backend=target["backend"], preset=target["preset"], emit=target["emit"],
                      precision=None if target["precision"] == "fp32" else target["precision"], spec=spec,
                      shapes=shapes_for(target["profile"], Path(item["path"]), spec), atol=None, rtol=None)
    if stage == "optimize":
        return {"optimize": run_optimize(item["path"], item["out_dir"], opts)}
    if stage == "build":
        return verdict(run_after_optimize(item["path"], item["out_dir"], opts, optimize or {}).report)
    return verdict(run_pipeline(item["path"], item["out_dir"], opts).report)


def shapes_for(profile: str | dict[str, Any], model_path: Path, spec: Path | None) -> argparse.Namespace:
    """The shape options a target's profile stands for (what ``--input-shapes`` / ``--min/--opt/--max-shapes`` give)."""
    if profile == "derived":
        return argparse.Namespace()
    if profile == "opt":
        from converter.trt.profiles import profiles_for
        from surgery.io import load_model

        choice = profiles_for(load_model(model_path).model, model_path, argparse.Namespace(spec=spec))
        point = " ".join(f"{name}:[{','.join(map(str, opt))}]" for name, (_, opt, _) in choice.first.items())
        return argparse.Namespace(input_shapes=point or None)
    return argparse.Namespace(input_shapes=profile.get("input_shapes"), min_shapes=profile.get("min_shapes", []),
                              opt_shapes=profile.get("opt_shapes", []), max_shapes=profile.get("max_shapes", []))


def _first_line(text: str | None) -> str | None:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else None


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    """What the summary needs from a ``run`` report: ran / equal / builds / validated / blockers, and why."""
    validation = report["validation"]
    equal, engine_run = validation["optimized_vs_original"], validation["engine_vs_original"]
    engine = report["engine"]
    return {
        "status": "passed" if report["ok"] else "failed",
        "ran": True,
        "equal": equal["status"],
        "equal_tolerance": equal.get("tolerance"),
        "supported": report["supported"],
        "builds": bool(engine.get("built")),
        "engine_note": None if engine.get("built") else _first_line(engine.get("error")) or engine.get("reason"),
        "build": {"ok": bool(report["build"].get("ok")), "kind": report["build"].get("kind"),
                  "error": _first_line(report["build"].get("error"))},
        "validated": engine_run["status"],
        "validated_note": _first_line(engine_run.get("skipped")),
        "blockers": [{"kind": g["kind"], "status": g["status"], "ops": list(g["ops"]), "count": g["count"],
                      "nodes": list(g["nodes"]), "remedies": list(g["remedies"])} for g in report["unsupported"]],
        "backend": report["backend"],
        "nodes": [report["optimize"]["nodes_before"], report["optimize"]["nodes_after"]],
        "notes": list(report["optimize"].get("notes", [])),
    }
