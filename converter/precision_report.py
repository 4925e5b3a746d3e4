"""Per-node precision report: which precision each node of the final model runs in, and why.

The precision is read from the model itself (tensor types after shape inference, Q/DQ around a node),
so the report cannot claim what the graph does not say. The reason comes from the decision that put
it there: convert-precision's site for every node it kept in fp32 (``fp16``/``bf16``), the
quantization step's decision for every Conv/MatMul/Gemm (``int8``/``fp8``/``int8-weight-only``), and
otherwise the op itself (normalization, softmax, reduction, residual Add, ...).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

import onnx

from converter.runtime.quantize import Decision
from passes.convert_precision import READS_EITHER

NORMALIZATION = frozenset("LayerNormalization GroupNormalization InstanceNormalization RMSNormalization "
                          "BatchNormalization SkipLayerNormalization".split())
SOFTMAX = frozenset({"Softmax", "LogSoftmax"})
RANGE_SENSITIVE = frozenset({"Pow", "Sqrt", "Exp", "Log"})
_TYPE_NAMES = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16",
               onnx.TensorProto.DOUBLE: "fp64", onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8",
               onnx.TensorProto.FLOAT8E4M3FN: "fp8", onnx.TensorProto.FLOAT8E5M2: "fp8-e5m2"}
_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
LOW_FLOATS = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}

# convert-precision's kept-fp32 reasons (its site reasons) -> the sentence the report shows
_KEPT_FP32 = {
    "island-chain": "part of a normalization chain: elementwise math between nodes kept in fp32",
    "large-constant": "reads a constant beyond the fp16 range (|v| > 65504, e.g. a -1e9 mask)",
    "not-polymorphic": "not a float-compute op convert-precision lowers (e.g. Cast, Resize, Range)",
    "type-not-allowed-at-opset": "its op schema at this opset has no low-precision type",
    "mixed-output-types": "its outputs are not all float32",
}


def _type_name(t: int | None) -> str:
    if not t:
        return "unknown"
    return _TYPE_NAMES.get(t) or onnx.TensorProto.DataType.Name(t).lower()


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # the types we can read without it
        inferred = model
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.input) + list(g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            types.setdefault(n.output[0], n.attribute[0].t.data_type)
    return types


def _by_op(op: str, precision: str) -> tuple[str, str]:
    """The rule that explains a float node no decision covered, from its op."""
    if op in NORMALIZATION:
        return "normalization", f"normalization: its mean/variance need {precision}'s range and precision"
    if op in SOFTMAX:
        return "softmax", "softmax: exponentials and a sum over the row stay in higher precision"
    if op.startswith("Reduce"):
        return "reduction", "reduction: a sum over many elements loses precision in low-precision accumulation"
    if op in RANGE_SENSITIVE:
        return "range-sensitive", f"{op} amplifies rounding and overflows low-precision ranges"
    return "", ""


def _island_reason(op: str) -> tuple[str, str]:
    rule, text = _by_op(op, "fp32")
    return (rule, text) if rule else ("island-op", f"{op} is kept in fp32 by convert-precision")


def precision_report(model: onnx.ModelProto, mode: str, *, kept_fp32: Mapping[str, str] | None = None,
                     decisions: Mapping[str, Decision] | None = None) -> dict[str, Any]:
    """``{"mode", "summary": {precision: count}, "rules": {rule: count}, "nodes": [...]}`` for every node.

    ``kept_fp32``: node -> convert-precision reason (fp16/bf16 modes); ``decisions``: the quantization
    step's decision per Conv/MatMul/Gemm (int8/fp8/int8-weight-only modes).
    """
    kept_fp32, decisions = dict(kept_fp32 or {}), dict(decisions or {})
    types = _tensor_types(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    quantizing = mode in ("int8", "fp8", "int8-weight-only")
    rows = []
    for n in model.graph.node:
        precision, rule, reason = _classify(n, types, producers, readers, mode, quantizing, kept_fp32, decisions)
        row: dict[str, Any] = {"node": n.name, "op": n.op_type, "precision": precision, "rule": rule, "reason": reason}
        if n.name in decisions and decisions[n.name].error is not None:
            row["error"] = round(decisions[n.name].error, 6)
        rows.append(row)
    return {"mode": mode, "nodes_total": len(rows),
            "summary": dict(sorted(Counter(r["precision"] for r in rows).items())),
            "rules": dict(sorted(Counter(r["rule"] for r in rows).items())), "nodes": rows}


def _classify(n: onnx.NodeProto, types: dict[str, int], producers: dict[str, onnx.NodeProto],
              readers: dict[str, list[onnx.NodeProto]], mode: str, quantizing: bool, kept_fp32: dict[str, str],
              decisions: dict[str, Decision]) -> tuple[str, str, str]:
    out_type = types.get(n.output[0]) if n.output else None
    if n.op_type == "QuantizeLinear":
        users = sorted({r.name for d in readers.get(n.output[0], []) for r in readers.get(d.output[0], [])})
        return (_type_name(out_type), "quantize",
                f"quantizes {n.input[0]} (per tensor) for {', '.join(users) or 'nothing'}")
    if n.op_type == "DequantizeLinear":
        users = ", ".join(sorted({r.name for r in readers.get(n.output[0], [])})) or "nothing"
        source = producers.get(n.input[0])
        if source is not None and source.op_type == "QuantizeLinear":
            return (_type_name(types.get(n.input[0])), "dequantize",
                    f"the dequantize half of the pair on {source.input[0]}; TensorRT fuses it into {users}")
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        return (_type_name(types.get(n.input[0])), "dequantize-weight",
                f"dequantizes the constant weight of {users} (per channel, axis {axis})")
    if n.name in decisions:
        d = decisions[n.name]
        if d.rule in ("quantized", "weight-only"):
            return mode, d.rule, d.reason + (f"; own error (relative L2) {d.error:.3g}" if d.error is not None else "")
        return _float_name(n, types), d.rule, d.reason
    if n.op_type == "Cast":
        to = next((a.i for a in n.attribute if a.name == "to"), 0)
        inserted = "inserted by convert-precision at an fp32 island boundary" if "convert-precision" in n.name else \
            "from the model"
        return _type_name(to), "cast", f"a Cast to {_type_name(to)}, {inserted}"
    floats = [types.get(t) for t in list(n.input) + list(n.output) if t and types.get(t) in _FLOATS]
    if not floats:
        what = _type_name(out_type) if out_type else "none"
        return what, "no-float", "no floating-point data (shape, index or mask computation)"
    precision = _float_name(n, types)
    if n.op_type == "Constant":
        return precision, "constant", "a constant: no computation"
    if precision in ("fp16", "bf16"):
        return precision, "converted", f"float-compute op: convert-precision runs it in {precision}"
    if n.op_type in READS_EITHER and n.input and types.get(n.input[0]) in LOW_FLOATS:
        return (_type_name(types.get(n.input[0])), "reads-either",
                "reads the low-precision tensor as it is: its output does not depend on the float type")
    if n.name in kept_fp32:
        why = kept_fp32[n.name]
        return (precision, *_island_reason(n.op_type)) if why == "island-op" else (precision, why, _KEPT_FP32.get(why, why))
    rule, text = _by_op(n.op_type, precision)
    if rule:
        return precision, rule, text
    if quantizing:
        if n.op_type in ("Add", "Sum") and sum(1 for t in n.input if t in producers and
                                                producers[t].op_type not in ("Constant",)) >= 2:
            return precision, "residual-add", ("residual Add: TensorRT's Q/DQ placement leaves it in higher "
                                               "precision (it reads the float tensors)")
        return precision, "not-quantized-op", ("not a Conv/MatMul/Gemm: TensorRT fuses Q/DQ only into their "
                                               "inputs, so it runs in float between them")
    return precision, "float", f"{precision} in the model"


def _float_name(n: onnx.NodeProto, types: dict[str, int]) -> str:
    """The precision of a node's float outputs; a node with only non-float outputs (Shape, Equal) is named by
    its output type; else the type of its float inputs."""
    outs = [types.get(t) for t in n.output if t and types.get(t)]
    if outs and not any(t in _FLOATS for t in outs):
        return _type_name(outs[0])
    for names in (n.output, n.input):
        for t in names:
            if t and types.get(t) in _FLOATS:
                return _type_name(types[t])
    return "fp32"


def render_summary(report: Mapping[str, Any]) -> list[str]:
    """A few lines for the terminal: counts by precision and by rule."""
    summary = ", ".join(f"{v} {k}" for k, v in report["summary"].items())
    rules = ", ".join(f"{k}={v}" for k, v in report["rules"].items())
    return [f"precision ({report['mode']}): {report['nodes_total']} nodes: {summary}", f"  rules: {rules}"]
