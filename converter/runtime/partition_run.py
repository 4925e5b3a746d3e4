"""Split a model into TensorRT-supported and unsupported partitions, and run them in order.

``partition_model`` runs ``capability.check_model`` with ``save_dir`` (exactly what ``surgery check
--save-partitions`` does: the same statuses, the same ``partitions.find_partitions``, whose ids are a
valid run order), and adds ``manifest.json``::

    {"format": 1, "model": ..., "inputs": [...], "outputs": [...], "classified_by": {...},
     "partitions": [{"id", "file", "status", "backend", "nodes", "inputs", "outputs", "reason"}]}

``run_partitioned`` executes them: a ``tensorrt`` partition is built and run with Polygraphy's
TrtRunner where a runnable TensorRT exists, and falls back to onnxruntime (CPU) otherwise, recording
why; every other partition runs on onnxruntime.
"""
from __future__ import annotations

import argparse

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from converter.trt.backends import Backend, select_backend
from converter.trt.capability import check_model
from surgery.errors import ConversionError, UserInputError
from surgery.io import load_model
from converter.runtime.numerics import InputSpec, run_ort

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1


def partition_model(model_path: str | Path, out_dir: str | Path, backend: Backend | None = None,
                    shapes: argparse.Namespace | None = None) -> dict[str, Any]:
    """Write the partitions of ``model_path`` and their manifest under ``out_dir``; return the manifest.

    ``shapes`` carries ``--spec``/``--input-shapes``/``--min/--opt/--max-shapes`` for the build that
    classifies the nodes, as for ``check``; the manifest records the profile used."""
    backend = backend or select_backend("auto")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"{out}: exists and is not a folder")
    report = check_model(model_path, backend, save_dir=out, shapes=shapes)
    model = load_model(model_path).model
    reasons = {n.name: n.reason for n in report.nodes}
    entries = []
    for p in report.partitions:
        first_bad = next((reasons[n] for n in p.nodes if reasons.get(n)), "")
        entries.append({"id": p.id, "file": Path(p.path).name, "status": p.status,
                        "backend": "tensorrt" if p.status == "supported" else "onnxruntime",
                        "nodes": p.nodes, "inputs": p.inputs, "outputs": p.outputs, "reason": first_bad})
    inits = {t.name for t in model.graph.initializer}
    manifest = {"format": FORMAT, "model": str(Path(model_path).resolve()),
                "inputs": [i.name for i in model.graph.input if i.name not in inits],
                "outputs": [o.name for o in model.graph.output], "classified_by": report.backend,
                "profile": {k: list(map(list, v)) for k, v in (report.build.profile or {}).items()},
                "profile_source": report.build.profile_source, "partitions": entries}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def load_manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UserInputError(f"{folder}: no {MANIFEST} (create it with `surgery partition`)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise UserInputError(f"{path}: unknown manifest format {manifest.get('format')!r}")
    return manifest


@dataclass
class PartitionedRun:
    """Outputs of a partitioned run and, per partition, which backend ran it and why."""

    outputs: dict[str, np.ndarray]
    ran_on: list[dict[str, Any]] = field(default_factory=list)


class _TensorRT:
    """Builds and runs TensorRT partitions until the first sign that no engine can run here."""

    def __init__(self, backend: Backend | None) -> None:
        self.backend = backend
        self.unavailable = "" if backend is not None and backend.module is not None else \
            "no TensorRT library is installed"

    def run(self, path: Path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """Outputs, or None after setting ``unavailable`` to the reason the engine cannot run here."""
        if self.unavailable:
            return None
        from converter.trt.build import BuildOptions, build_engine
        from converter.runtime.validate import EngineSkipped, run_engine

        specs = [InputSpec(k, tuple(v.shape), v.dtype.name) for k, v in feeds.items()]
        with tempfile.TemporaryDirectory() as tmp:
            engine = Path(tmp) / "part.engine"
            try:
                build_engine(load_model(path), engine, self.backend,
                             BuildOptions(profiles=[{s.name: (list(s.shape),) * 3 for s in specs}]))
                return run_engine(self.backend, engine.read_bytes(), feeds)
            except ConversionError as exc:
                log.warning("%s: TensorRT build failed, running it on onnxruntime: %s", path.name, exc)
                return None  # this partition only; others may still build
            except EngineSkipped as exc:
                self.unavailable = str(exc)
                return None


def run_partitioned(folder: str | Path, feeds: Mapping[str, np.ndarray], **options: Any) -> dict[str, np.ndarray]:
    """The model outputs of running the partitions under ``folder`` on ``feeds`` (see ``execute_partitions``)."""
    return execute_partitions(folder, feeds, **options).outputs


def execute_partitions(folder: str | Path, feeds: Mapping[str, np.ndarray], *, use_tensorrt: bool = True,
                       backend: Backend | None = None) -> PartitionedRun:
    """Run the partitions under ``folder`` in manifest order on ``feeds``.

    Args:
        folder: what ``partition_model`` wrote.
        feeds: one array per model input.
        use_tensorrt: False runs every partition on onnxruntime.
        backend: the TensorRT backend (default: the best importable one).

    Returns:
        The model outputs and, per partition, the backend that ran it and why.
    """
    folder = Path(folder)
    manifest = load_manifest(folder)
    missing = [n for n in manifest["inputs"] if n not in feeds]
    if missing:
        raise UserInputError(f"missing input(s): {', '.join(missing)}")
    if use_tensorrt and backend is None:
        backend = select_backend("auto")
    trt = _TensorRT(backend if use_tensorrt else None)
    if not use_tensorrt:
        trt.unavailable = "TensorRT disabled by the caller"
    env: dict[str, np.ndarray] = {k: np.asarray(v) for k, v in feeds.items()}
    ran_on = []
    for part in manifest["partitions"]:
        path = folder / part["file"]
        sub_feeds = {n: env[n] for n in part["inputs"]}
        got, used, why = None, "onnxruntime", part.get("reason", "")
        if part["backend"] == "tensorrt":
            got = trt.run(path, sub_feeds)
            used, why = ("tensorrt", "") if got is not None else ("onnxruntime", f"fallback: {trt.unavailable or 'build failed'}")
        if got is None:
            got = run_ort(path, sub_feeds, outputs=part["outputs"])
        env.update(got)
        ran_on.append({"id": part["id"], "planned": part["backend"], "ran": used, "reason": why})
    return PartitionedRun({n: env[n] for n in manifest["outputs"]}, ran_on)

