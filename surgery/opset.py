"""Raising a graph's ONNX opset so fused ops (LayerNormalization 17, Gelu 20, Attention 23...) become legal.

A raise is only done when every existing op keeps its meaning: ops whose schema is unchanged between
the two versions are kept, Reduce*/Split/Squeeze/Unsqueeze-style "axes attribute became an input"
changes are converted, and anything else refuses with a reason.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

_AXES_TO_INPUT = {  # op -> opset where 'axes' moved from attribute to input
    "ReduceMean": 18, "ReduceMax": 18, "ReduceMin": 18, "ReduceProd": 18, "ReduceL1": 18, "ReduceL2": 18,
    "ReduceLogSum": 18, "ReduceLogSumExp": 18, "ReduceSumSquare": 18, "ReduceSum": 13, "Squeeze": 13, "Unsqueeze": 13,
}
# Schema revisions that only widened types or added optional behaviour the old model cannot use.
_COMPATIBLE = {
    "Cast", "CastLike", "Constant", "ConstantOfShape", "Equal", "Identity", "If", "Loop", "Pad", "Reshape",
    "Shape", "Size", "Flatten", "Transpose", "Where", "Scan", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
    "Split", "Resize", "QuantizeLinear", "DequantizeLinear", "ScatterND", "ScatterElements", "GroupNormalization",
    "Col2Im", "BitShift", "Max", "Min", "Sum", "Mean", "Gather", "GatherElements", "GatherND", "Concat", "Expand",
    "Tile", "Slice", "Range", "Squeeze", "Unsqueeze", "ReduceMax", "ReduceMin", "Clip", "Relu", "Abs", "Neg",
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Erf", "Tanh", "Sigmoid", "Exp", "Log", "Softmax", "MatMul", "Gemm",
    "Conv", "ConvTranspose", "BatchNormalization", "InstanceNormalization", "LayerNormalization", "Einsum",
    "TopK", "NonZero", "Not", "And", "Or", "Xor", "Floor", "Ceil", "Round", "Sign", "Reciprocal", "IsNaN", "IsInf",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LSTM", "GRU", "RNN", "Trilu", "CumSum",
    "ArgMax", "ArgMin", "Dropout", "LeakyRelu", "HardSigmoid", "Softplus", "Elu", "Selu", "PRelu", "Mod",
    "OneHot", "Upsample", "DepthToSpace", "SpaceToDepth", "Unique", "Sin", "Cos", "MatMulInteger", "Attention",
    "RMSNormalization", "RotaryEmbedding", "Gelu", "Mish", "HardSwish", "Celu", "Shrink", "ThresholdedRelu",
}
# Ops whose semantics (not just types) changed at some version; refuse unless they don't straddle it.
_SEMANTIC_BREAKS = {"Split": 18, "Resize": 19, "Pad": 18, "ScatterND": 18, "ScatterElements": 18, "GroupNormalization": 21,
                    "Upsample": 10, "Col2Im": 18}


def default_opset(graph: gs.Graph) -> int:
    return int(graph.opset)


def raise_refusal(graph: gs.Graph, target: int) -> str | None:
    """Why ``raise_opset(graph, target)`` would refuse, or None when it would succeed. Changes nothing."""
    current = default_opset(graph)
    if current >= target:
        return None
    if target > onnx.defs.onnx_opset_version():
        return f"opset-{target}-unknown-to-onnx"
    for node in _onnx_nodes(graph):
        brk = _SEMANTIC_BREAKS.get(node.op)
        if brk is not None and current < brk <= target and not _axes_convertible(node, current, target):
            return f"{node.op}-changes-meaning-between-opset-{current}-and-{target}"
        if node.op not in _COMPATIBLE and node.op not in _AXES_TO_INPUT and _schema_changed(node.op, current, target):
            return f"{node.op}-schema-changed-between-opset-{current}-and-{target}"
    return None


def raise_opset(graph: gs.Graph, target: int) -> str | None:
    """Raise the default-domain opset to ``target`` in place. Returns None on success, else a reason.

    Nothing is changed when a reason is returned.
    """
    refusal = raise_refusal(graph, target)
    current = default_opset(graph)
    if refusal or current >= target:
        return refusal
    for node in _onnx_nodes(graph):
        moved = _AXES_TO_INPUT.get(node.op)
        if moved is not None and current < moved <= target and "axes" in node.attrs:
            axes = np.array(node.attrs.pop("axes"), dtype=np.int64)
            name = f"{node.name}/axes"
            node.inputs.insert(1, gs.Constant(name, axes)) if len(node.inputs) == 1 else node.inputs.append(gs.Constant(name, axes))
    for g in _graphs(graph):
        g.opset = target
        # a fresh list: the imported one may be the source model's own protobuf field
        g.import_domains = [
            onnx.helper.make_opsetid(o.domain, target if o.domain in ("", "ai.onnx") else o.version)
            for o in (g.import_domains or [])
        ]
    return None


def _axes_convertible(node: gs.Node, current: int, target: int) -> bool:
    if node.op == "Split" and "num_outputs" not in node.attrs:
        return True  # explicit 'split' input (or equal split inferred from outputs) keeps its meaning
    if node.op == "Pad":
        return True  # opset 18 only added the optional 'axes' input
    if node.op in ("ScatterND", "ScatterElements"):
        return node.attrs.get("reduction", "none") in ("none", "add", "mul")
    if node.op == "Resize":
        return node.attrs.get("mode", "nearest") != "cubic" or "antialias" not in node.attrs
    return False


def _schema_changed(op: str, current: int, target: int) -> bool:
    try:
        return onnx.defs.get_schema(op, current).since_version != onnx.defs.get_schema(op, target).since_version
    except onnx.defs.SchemaError:
        return False  # not an ONNX op (plugin or custom); the opset does not concern it


def _onnx_nodes(graph: gs.Graph) -> list[gs.Node]:
    return [n for g in _graphs(graph) for n in g.nodes if n.domain in ("", "ai.onnx", None)]


def _graphs(graph: gs.Graph):
    yield graph
    yield from graph.subgraphs(recursive=True)
