"""onnx's own backend test models as a corpus: locate them, run them on onnxruntime, compare.

The onnx wheel installed here ships ``light``, ``pytorch-converted``, ``pytorch-operator`` and
``simple`` under ``onnx/backend/test/data``; the ``node`` tests left the wheel after 1.19, so they are
taken from the onnx 1.19.0 wheel on PyPI, downloaded once into a cache folder (never committed).
"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

NODE_WHEEL = "onnx==1.19.0"
CACHE = Path(os.environ.get("SURGERY_CORPUS_CACHE", Path.home() / ".cache" / "onnx-surgery" / "onnx-1.19.0"))
CATEGORIES = ("node", "light", "pytorch-converted", "pytorch-operator", "simple")


@dataclass
class Case:
    category: str
    name: str
    model: Path
    feeds: list[dict[str, object]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.category}/{self.name}"


def _installed_data() -> Path:
    return Path(onnx.__file__).parent / "backend" / "test" / "data"


def node_data() -> Path:
    """The folder of onnx 1.19's node tests, downloading the wheel into the cache if needed."""
    installed = _installed_data() / "node"
    if installed.is_dir():
        return installed
    target = CACHE / "node"
    if (CACHE / ".complete").exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = CACHE / "wheel"
    if not list(wheels.glob("onnx-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "-d", str(wheels), NODE_WHEEL], check=True)
    wheel = next(wheels.glob("onnx-*.whl"))
    prefix = "onnx/backend/test/data/node/"
    with zipfile.ZipFile(wheel) as z:
        for member in z.namelist():
            if member.startswith(prefix) and not member.endswith("/"):
                dest = target / member[len(prefix):]
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(z.read(member))
    (CACHE / ".complete").write_text(NODE_WHEEL + "\n")
    wheel.unlink()
    return target


def _read_pb(path: Path, type_proto: onnx.TypeProto | None):
    data = path.read_bytes()
    if type_proto is not None and type_proto.HasField("sequence_type"):
        seq = onnx.SequenceProto()
        seq.ParseFromString(data)
        return onnx.numpy_helper.to_list(seq)
    if type_proto is not None and type_proto.HasField("optional_type"):
        opt = onnx.OptionalProto()
        opt.ParseFromString(data)
        return onnx.numpy_helper.to_optional(opt)
    t = onnx.TensorProto()
    t.ParseFromString(data)
    return numpy_helper.to_array(t)


def _feeds_of(test_dir: Path, model_path: Path) -> list[dict[str, object]]:
    model = onnx.load_model(str(model_path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    sets = []
    for data_set in sorted(test_dir.glob("test_data_set_*")):
        files = sorted(data_set.glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
        feeds = {}
        for f, vi in zip(files, inputs):
            feeds[vi.name] = _read_pb(f, vi.type)
        if len(feeds) == len(inputs):
            sets.append(feeds)
    return sets[:1]


def cases(categories: tuple[str, ...] = CATEGORIES) -> list[Case]:
    out: list[Case] = []
    for category in categories:
        root = node_data() if category == "node" else _installed_data() / category
        if category == "light":
            out += [Case("light", p.stem, p) for p in sorted(root.glob("*.onnx"))]
            continue
        for test_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            model = test_dir / "model.onnx"
            if model.is_file():
                out.append(Case(category, test_dir.name, model, _feeds_of(test_dir, model)))
    return out


def generated_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for a model that ships no test data (the ``light`` CNNs: static float inputs)."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.dim_value > 0 else 1 for d in tt.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run(path: Path, feeds: dict[str, object]) -> dict[str, object]:
    sess = ort_session(path)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def mismatch(expected, got, rtol: float = 1e-4, atol: float = 1e-5) -> str | None:
    """None if ``got`` equals ``expected`` (exact for non-floats, fp16 at fp16 resolution), else why not."""
    if isinstance(expected, list):
        if not isinstance(got, list) or len(got) != len(expected):
            return f"sequence of {len(expected)} vs {type(got).__name__}"
        for i, (e, g) in enumerate(zip(expected, got)):
            why = mismatch(e, g, rtol, atol)
            if why:
                return f"[{i}] {why}"
        return None
    if expected is None or got is None:
        return None if expected is got else "optional presence differs"
    e, g = np.asarray(expected), np.asarray(got)
    if e.dtype != g.dtype:
        return f"dtype {e.dtype} vs {g.dtype}"
    if e.shape != g.shape:
        return f"shape {e.shape} vs {g.shape}"
    if e.dtype.kind in "fc":
        if e.dtype == np.float16:
            rtol, atol = max(rtol, 1e-3), max(atol, 1e-3)
        close = np.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
        if not close.all():
            diff = np.abs(g.astype(np.float64) - e.astype(np.float64))
            return f"max abs diff {np.nanmax(diff):.3g} at {int((~close).sum())} element(s)"
        return None
    if not np.array_equal(e, g):
        return f"{int((e != g).sum())} element(s) differ"
    return None


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(mismatch(a[k], b[k], 0, 0) is None for k in a)


def reference(case: Case) -> tuple[dict, dict] | None:
    """(feeds, outputs) of the original on onnxruntime, or None when onnxruntime cannot run it.
    Outputs of a non-deterministic model (random ops) come back as None values: only presence counts."""
    try:
        feeds = case.feeds[0] if case.feeds else generated_feeds(onnx.load_model(str(case.model), load_external_data=False))
        first = run(case.model, feeds)
        second = run(case.model, feeds)
    except Exception:
        return None
    if not _same(first, second):
        first = {k: None for k in first}
    return feeds, first


def optimize_and_compare(case: Case, preset: str, out_dir: Path, ref: tuple[dict, dict]) -> str | None:
    """Optimize ``case`` with ``preset`` through the Python API; None if the result is ORT-equal, else why."""
    from converter.optimize import OptimizeOptions, optimize_file

    feeds, expected = ref
    dst = out_dir / f"{case.category}-{case.name}-{preset}.onnx"
    try:
        optimize_file(case.model, dst, OptimizeOptions(preset=preset))
    except Exception as exc:  # noqa: BLE001  (the corpus reports every failure, it does not stop)
        return f"optimize: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
    try:
        got = run(dst, feeds)
    except Exception as exc:  # noqa: BLE001
        return f"ORT on optimized: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
    finally:
        dst.unlink(missing_ok=True)
    if set(got) != set(expected):
        return f"outputs {sorted(got)} vs {sorted(expected)}"
    for name, value in expected.items():
        if value is None:
            continue
        why = mismatch(value, got[name])
        if why:
            return f"output {name}: {why}"
    return None
