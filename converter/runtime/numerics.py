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
    rel_l2: float = float("nan")  # ||cand - ref|| / ||ref||
    top1: float | None = None  # share of rows whose argmax (last axis) agrees; classifier-shaped outputs only

    def describe(self) -> str:
        top1 = f" top-1={self.top1:.3f}" if self.top1 is not None else ""
        return (f"{self.name}: max|d|={self.max_abs:.3g} max rel={self.max_rel:.3g} cos={self.cosine:.6f} "
                f"rel L2={self.rel_l2:.3g}{top1}")


@dataclass(frozen=True)
class MetricThresholds:
    """Pass/fail of a quantized candidate by whole-output metrics instead of element-wise bounds.

    Element-wise bounds do not fit int8/fp8: one rounding step of a coarse scale is far beyond any
    float tolerance, while the output as a whole stays close. An output passes when its cosine
    similarity and relative L2 error meet the bounds, and (classifier-shaped outputs) its top-1 agreement.
    """

    min_cosine: float
    max_rel_l2: float
    min_top1: float
    why: str = ""

    def judge(self, cosine: float, rel_l2: float, top1: float | None) -> bool:
        return cosine >= self.min_cosine and rel_l2 <= self.max_rel_l2 and (top1 is None or top1 >= self.min_top1)

    def describe(self) -> str:
        return (f"cosine >= {self.min_cosine:g}, rel L2 <= {self.max_rel_l2:g}, top-1 agreement >= {self.min_top1:g} "
                "(classifier outputs)" + (f" ({self.why})" if self.why else ""))


def is_classifier_output(shape: tuple[int, ...]) -> bool:
    """[batch, classes] with at least two classes: the outputs whose top-1 agreement is judged."""
    return len(shape) == 2 and shape[-1] >= 2


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Share of rows (all axes but the last) whose argmax over the last axis is the same."""
    return float(np.mean(np.argmax(reference, axis=-1) == np.argmax(candidate, axis=-1)))


def compare(reference: np.ndarray, candidate: np.ndarray, name: str, *, rtol: float, atol: float,
            metrics: MetricThresholds | None = None, top1: bool = False) -> OutputDiff:
    """Element-wise ``|d| <= atol + rtol*|ref|``, or with ``metrics`` the whole-output bounds; ``top1`` adds
    the top-1 agreement (rows of the last axis)."""
    if reference.shape != candidate.shape:
        return OutputDiff(name, float("inf"), float("inf"), float("inf"), 0.0, False, float("inf"))
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
    norm = float(np.linalg.norm(a))
    gap = float(np.linalg.norm(a - b))
    rel_l2 = gap / norm if norm > 0 else (0.0 if gap == 0 else float("inf"))
    agree = top1_agreement(ref, cand) if top1 and ref.ndim >= 1 and ref.size else None
    if metrics is not None:
        passed = bool(same_nonfinite and metrics.judge(cosine, rel_l2, agree))
    else:
        passed = bool(same_nonfinite and np.all(d <= atol + rtol * np.abs(ref[finite]))) if finite.any() else same_nonfinite
    return OutputDiff(name, float(d.max()), float(d.mean()), float(rel.max()), cosine, passed, rel_l2, agree)


# --- low-precision candidates: precision detection, fp32 upcast, tolerances ---------------------------------

LOW_FLOATS = {onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}
_TYPE_ATTRS = ("to", "dtype")  # Cast's target, EyeLike/RandomNormal*/... output type


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    return [g for a in node.attribute for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs))]


def _graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """``graph`` and every subgraph (If/Loop/Scan bodies) nested in it."""
    return [graph] + [g for n in graph.node for sub in _subgraphs(n) for g in _graphs(sub)]


def _value_types(graph: onnx.GraphProto) -> list[onnx.TypeProto.Tensor]:
    return [vi.type.tensor_type for vi in list(graph.input) + list(graph.output) + list(graph.value_info)]


def low_precision(model: onnx.ModelProto) -> str | None:
    """'bf16' or 'fp16' when the model holds tensors, Casts or value types of that precision (bf16 wins), else None."""
    found: set[int] = set()
    for g in _graphs(model.graph):
        found |= {t.data_type for t in g.initializer} | {t.elem_type for t in _value_types(g)}
        for n in g.node:
            found |= {a.t.data_type for a in n.attribute if a.type == onnx.AttributeProto.TENSOR}
            found |= {a.i for a in n.attribute if a.name in _TYPE_ATTRS and a.type == onnx.AttributeProto.INT}
    names = {LOW_FLOATS[t] for t in found if t in LOW_FLOATS}
    return "bf16" if "bf16" in names else ("fp16" if names else None)


def _to_float32(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """The same values as float32 (exact for fp16/bf16), same name."""
    from onnx import numpy_helper

    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)


def _low_outputs(graph: onnx.GraphProto) -> dict[str, int]:
    """Node outputs of ``graph`` typed fp16/bf16 (Constants left out: their values are exact) -> that type."""
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(graph.value_info) + list(graph.output)}
    return {o: types[o] for n in graph.node if n.op_type != "Constant" for o in n.output
            if types.get(o) in LOW_FLOATS}


def _upcast_node(node: onnx.NodeProto, counts: dict[str, int]) -> None:
    for a in node.attribute:
        if a.type == onnx.AttributeProto.TENSOR and a.t.data_type in LOW_FLOATS:
            a.t.CopyFrom(_to_float32(a.t))
            counts["constants"] += 1
        elif a.name in _TYPE_ATTRS and a.type == onnx.AttributeProto.INT and a.i in LOW_FLOATS:
            a.i = onnx.TensorProto.FLOAT
            counts["casts"] += 1


def _rounding(name: str, low: int, source: str) -> list[onnx.NodeProto]:
    """Cast ``source`` to ``low`` and back to float32 as ``name``: the rounding the low-precision tensor had."""
    mid = f"{name}/upcast_{LOW_FLOATS[low]}"
    return [onnx.helper.make_node("Cast", [source], [mid], name=f"{mid}/round", to=low),
            onnx.helper.make_node("Cast", [mid], [name], name=f"{mid}/back", to=onnx.TensorProto.FLOAT)]


def _round_inputs(graph: onnx.GraphProto, counts: dict[str, int]) -> list[onnx.NodeProto]:
    """Rounding Casts for fp16/bf16 graph inputs (fed as float32 once upcast); consumers read the rounded copy."""
    inits = {t.name for t in graph.initializer}
    low = {vi.name: vi.type.tensor_type.elem_type for vi in graph.input
           if vi.name not in inits and vi.type.tensor_type.elem_type in LOW_FLOATS}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in low:
                node.input[i] = f"{name}/upcast_rounded"
    counts["rounded tensors"] += len(low)
    return [c for name, t in low.items() for c in _rounding(f"{name}/upcast_rounded", t, name)]


def _upcast_graph(graph: onnx.GraphProto, counts: dict[str, int]) -> None:
    low = _low_outputs(graph)
    nodes = _round_inputs(graph, counts)
    for node in graph.node:
        _upcast_node(node, counts)
        nodes.append(node)
        for i, out in enumerate(node.output):
            if out in low:
                node.output[i] = f"{out}/upcast_unrounded"
                nodes += _rounding(out, low[out], node.output[i])
                counts["rounded tensors"] += 1
    del graph.node[:]
    graph.node.extend(nodes)
    for t in graph.initializer:
        if t.data_type in LOW_FLOATS:
            t.CopyFrom(_to_float32(t))
            counts["initializers"] += 1
    for t in _value_types(graph):
        if t.elem_type in LOW_FLOATS:
            t.elem_type = onnx.TensorProto.FLOAT
            counts["value types"] += 1


def upcast_to_float32(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """A copy that onnxruntime runs in float32 where ``model`` has fp16/bf16 (no bf16 CPU kernels there).

    Initializers, tensor attributes (Constant), Cast/dtype targets, graph inputs/outputs and value_info
    become float32; fp16/bf16 values upcast exactly, so the weights keep their rounding. Every node output
    that was fp16/bf16 is rounded through a Cast pair (to the low type and back), so activations keep the
    low precision's storage rounding; only the arithmetic inside an op runs in float32 (as TensorRT's
    accumulation does). Returns the copy and counts of what changed.
    """
    try:
        out = onnx.shape_inference.infer_shapes(model)  # types of every tensor, for the rounding Casts
    except Exception:  # untyped tensors are then only upcast, not rounded
        out = onnx.ModelProto()
        out.CopyFrom(model)
    counts = dict.fromkeys(("initializers", "constants", "casts", "value types", "rounded tensors"), 0)
    for g in _graphs(out.graph):
        _upcast_graph(g, counts)
    return out, {k: v for k, v in counts.items() if v}


def ort_refusal(model: onnx.ModelProto) -> str | None:
    """Why onnxruntime's CPU provider cannot run ``model`` (a missing kernel, e.g. bf16 Add), or None."""
    try:
        ort_session(model)
    except Exception as exc:  # onnxruntime's NotImplemented/Fail carry no common base worth naming
        if type(exc).__name__ == "NotImplemented" or "NOT_IMPLEMENTED" in str(exc):
            return str(exc).split(" : ")[-1].strip()[:300]
        raise
    return None


def ort_runnable(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """``model`` when onnxruntime runs it as it is, else its float32 upcast; plus a note on the upcast ('' if none)."""
    why = ort_refusal(model)
    if why is None:
        return model, ""
    precision = low_precision(model) or "low-precision"
    upcast, counts = upcast_to_float32(model)
    what = ", ".join(f"{v} {k}" for k, v in counts.items())
    return upcast, (f"upcast to float32, as onnxruntime cannot run it at {precision} ({why}): {what}; the weights keep "
                    f"their {precision} values and every {precision} tensor is rounded to {precision} and back")


_FLOAT_NP = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.DOUBLE: np.float64}


def cast_feeds(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``feeds`` with float arrays cast to the float type of the model's graph inputs (e.g. fp16 I/O)."""
    want = {vi.name: _FLOAT_NP.get(vi.type.tensor_type.elem_type) for vi in model.graph.input}
    return {k: v.astype(want[k]) if want.get(k) is not None and v.dtype.kind == "f" else v for k, v in feeds.items()}


@dataclass(frozen=True)
class Tolerance:
    """``|d| <= atol + rtol*|ref|`` where atol is ``max(atol, scale * max|ref|)`` for each output; with
    ``metrics`` (quantized candidates) the whole-output bounds decide instead."""

    rtol: float
    atol: float
    scale: float = 0.0
    why: str = ""
    metrics: MetricThresholds | None = None

    def atol_for(self, reference: np.ndarray) -> float:
        ref = np.asarray(reference, dtype=np.float64)
        finite = np.abs(ref[np.isfinite(ref)])
        return max(self.atol, self.scale * float(finite.max())) if self.scale and finite.size else self.atol

    def describe(self) -> str:
        if self.metrics is not None:
            return self.metrics.describe()
        floor = f"max({self.atol:g}, {self.scale:g}*max|ref|)" if self.scale else f"{self.atol:g}"
        return f"atol={floor} rtol={self.rtol:g}" + (f" ({self.why})" if self.why else "")


# Quantized candidates (Q/DQ): per-tensor int8 of a calibrated range is ~1/254 of that range per step, fp8 E4M3
# ~6% relative per element; errors add up over the layers. These bounds admit that and still catch a broken
# scale (a clipped range or a wrong axis gives cosine < 0.9 on the tests' models).
QUANT_THRESHOLDS = {
    "int8": MetricThresholds(0.99, 0.10, 0.90, "int8 Q/DQ candidate: judged on whole outputs, not element-wise"),
    "fp8": MetricThresholds(0.99, 0.10, 0.90, "fp8 E4M3 Q/DQ candidate: judged on whole outputs, not element-wise"),
    "int8-weight-only": MetricThresholds(0.999, 0.05, 0.95, "int8 weight-only candidate: only the weights are rounded"),
}

PRECISION_TOLERANCES = {
    "fp16": Tolerance(1e-3, 1e-4, 1e-3, "fp16 candidate: 11 significant bits; the floor scales with each output"),
    "bf16": Tolerance(1e-2, 1e-3, 1e-2, "bf16 candidate: 8 significant bits; the floor scales with each output"),
    **{mode: Tolerance(0.0, 0.0, why=m.why, metrics=m) for mode, m in QUANT_THRESHOLDS.items()},
}


def precision_tolerance(precision: str | None, default: Tolerance) -> Tolerance:
    """The tolerance for a candidate of ``precision`` ('fp16'/'bf16'/'int8'/'fp8'/'int8-weight-only'), else ``default``."""
    return PRECISION_TOLERANCES.get(precision or "", default)


_FP8 = {onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E4M3FNUZ, onnx.TensorProto.FLOAT8E5M2,
        onnx.TensorProto.FLOAT8E5M2FNUZ}


def quantized_precision(model: onnx.ModelProto) -> str | None:
    """'fp8', 'int8' or 'int8-weight-only' for a Q/DQ model (by its DequantizeLinear inputs), else None.

    A DequantizeLinear reading an fp8 tensor makes it 'fp8'; int8 DequantizeLinear nodes with no
    QuantizeLinear anywhere (only constant weights are dequantized) make it 'int8-weight-only'.
    """
    graph = model.graph
    types = {t.name: t.data_type for t in graph.initializer}
    types.update({vi.name: vi.type.tensor_type.elem_type for vi in list(graph.value_info) + list(graph.input)})
    for n in graph.node:  # a QuantizeLinear's output type is its zero point's type
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in types:
            types[n.output[0]] = types[n.input[2]]
        elif n.op_type == "QuantizeLinear":
            types[n.output[0]] = next((a.i for a in n.attribute if a.name == "output_dtype" and a.i), onnx.TensorProto.UINT8)
    dq = [types.get(n.input[0]) for n in graph.node if n.op_type == "DequantizeLinear"]
    if not dq:
        return None
    if any(t in _FP8 for t in dq):
        return "fp8"
    return "int8" if any(n.op_type == "QuantizeLinear" for n in graph.node) else "int8-weight-only"
