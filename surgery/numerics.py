"""Run models on onnxruntime with seeded inputs and compare outputs."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx

ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str
    low: float | None = None
    high: float | None = None


def load_spec(path: str | Path) -> list[InputSpec]:
    """Read ``{"inputs": [{"name", "shape", "dtype", "low"?, "high"?}, ...]}``; one-line errors."""
    from surgery.errors import UserInputError

    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"{p}: no such spec file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        specs = [InputSpec(str(d["name"]), tuple(int(x) for x in d["shape"]), str(np.dtype(d["dtype"])),
                           d.get("low"), d.get("high")) for d in data["inputs"]]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{p}: not an input spec ({type(exc).__name__}: {str(exc)[:120]}); expected "
                             '{"inputs": [{"name": ..., "shape": [...], "dtype": "float32"}]}') from None
    if any(d < 0 for s in specs for d in s.shape):
        raise UserInputError(f"{p}: negative dimension in the spec")
    return specs


def spec_from_model(model: onnx.ModelProto, dim_default: int = 1) -> list[InputSpec]:
    """Derive a spec from graph inputs, replacing symbolic dims with ``dim_default``."""
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else dim_default for d in tt.shape.dim)
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        specs.append(InputSpec(vi.name, shape, dtype))
    return specs


def random_feeds(specs: list[InputSpec], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for s in specs:
        dt = np.dtype(s.dtype)
        if dt.kind in "iu":
            low = 0 if s.low is None else int(s.low)
            high = 2 if s.high is None else int(s.high)
            feeds[s.name] = rng.integers(low, high, size=s.shape).astype(dt)
        elif dt.kind == "b":
            feeds[s.name] = rng.integers(0, 2, size=s.shape).astype(bool)
        else:
            low = -1.0 if s.low is None else float(s.low)
            high = 1.0 if s.high is None else float(s.high)
            feeds[s.name] = rng.uniform(low, high, size=s.shape).astype(dt)
    return feeds


def ort_session(model: onnx.ModelProto | str | Path, *, optimize: bool = False, providers: list[str] | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, opts, providers=providers or ["CPUExecutionProvider"])


def run_ort(model: onnx.ModelProto | str | Path, feeds: Mapping[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
    sess = ort_session(model)
    names = outputs or [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    values = sess.run(names, {k: v for k, v in feeds.items() if k in wanted})
    return dict(zip(names, values))


@dataclass
class OutputDiff:
    name: str
    max_abs: float
    mean_abs: float
    max_rel: float
    cosine: float
    passed: bool

    def describe(self) -> str:
        return f"{self.name}: max|d|={self.max_abs:.3g} max rel={self.max_rel:.3g} cos={self.cosine:.6f}"


def compare(reference: np.ndarray, candidate: np.ndarray, name: str, *, rtol: float, atol: float) -> OutputDiff:
    if reference.shape != candidate.shape:
        return OutputDiff(name, float("inf"), float("inf"), float("inf"), 0.0, False)
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    diff = np.abs(ref - cand)
    finite = np.isfinite(ref) & np.isfinite(cand)
    same_nonfinite = np.array_equal(np.isnan(ref), np.isnan(cand)) and np.array_equal(ref[~finite & ~np.isnan(ref)], cand[~finite & ~np.isnan(cand)])
    d = diff[finite] if finite.any() else np.zeros(1)
    rel = d / np.maximum(np.abs(ref[finite]), 1e-12) if finite.any() else np.zeros(1)
    a, b = ref[finite].ravel(), cand[finite].ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    cosine = float(a @ b / denom) if denom > 0 else float(np.allclose(a, b))
    passed = bool(same_nonfinite and np.all(d <= atol + rtol * np.abs(ref[finite]))) if finite.any() else same_nonfinite
    return OutputDiff(name, float(d.max()), float(d.mean()), float(rel.max()), cosine, passed)
