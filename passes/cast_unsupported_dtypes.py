"""cast-unsupported-dtypes: remove intermediate tensors of types TensorRT cannot hold when the values
provably survive.

TensorRT has no double, int16, uint16, uint32 or uint64 tensors and no uint8 intermediates (the
TensorRT-RTX parser: "Unsupported data type for the Cast operator", "does not support UINT8 types
for intermediate tensors"; full TensorRT also rejects double activations). Two conservative rules:

Matches:
    Cast(A→B) → Cast(B→C), B unsupported, every A value exactly representable in B
        ⇒  Cast(A→C)        (same value, so the same conversion; Cast(A→A) becomes nothing)
    Cast(float→double) → op → Cast(double→float), op ∈ {Add, Sub, Mul, Div, Sqrt, Neg, Abs}, the
    other operand (if any) another such upcast or a double constant exactly representable in float
        ⇒  op in float
        (double rounding is innocuous: 53 >= 2*24 + 2 bits, so rounding the exact result to double
        and then to float equals rounding it to float once)

Requires: nothing.

Rejects:
    value-may-not-fit: A has values B cannot hold exactly (the round trip could change them).
    unsafe-op: a double op outside the list above (e.g. Exp, MatMul, ReduceSum: not exact).
    shared-intermediate: a double/unsupported intermediate has other consumers.
    graph-output: the intermediate is a graph output.
    constant-not-float: a double constant operand is not exactly a float value.

Numerics: bit-exact for every rewrite.
"""
from __future__ import annotations


import numpy as np
import onnx
import onnx_graphsurgeon as gs

from surgery.graph_utils import NameGen, const_value
from surgery.pass_base import Pass, PassContext, PassResult
from surgery.registry import register_pass

__all__ = ["CastUnsupportedDtypesPass"]

T = onnx.TensorProto
UNSUPPORTED = {T.DOUBLE, T.INT16, T.UINT16, T.UINT32, T.UINT64, T.UINT8}
# A -> the types that hold every A value exactly
_EXACT_IN = {
    T.BOOL: {T.UINT8, T.INT8, T.INT16, T.UINT16, T.INT32, T.UINT32, T.INT64, T.UINT64, T.FLOAT16, T.FLOAT, T.DOUBLE},
    T.UINT8: {T.INT16, T.UINT16, T.INT32, T.UINT32, T.INT64, T.UINT64, T.FLOAT16, T.FLOAT, T.DOUBLE},
    T.INT8: {T.INT16, T.INT32, T.INT64, T.FLOAT16, T.FLOAT, T.DOUBLE},
    T.INT16: {T.INT32, T.INT64, T.FLOAT, T.DOUBLE},
    T.UINT16: {T.INT32, T.UINT32, T.INT64, T.UINT64, T.FLOAT, T.DOUBLE},
    T.INT32: {T.INT64, T.DOUBLE},
    T.UINT32: {T.INT64, T.UINT64, T.DOUBLE},
    T.FLOAT16: {T.FLOAT, T.DOUBLE},
    T.FLOAT: {T.DOUBLE},
}
_EXACT_DOUBLE_OPS = {"Add", "Sub", "Mul", "Div", "Sqrt", "Neg", "Abs"}


def _elem(t: gs.Tensor) -> int | None:
    if t.dtype is None:
        return None
    try:
        return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype))
    except (TypeError, KeyError):
        return None


def _only_consumer(t: gs.Tensor, graph: gs.Graph) -> gs.Node | str:
    if t in graph.outputs:
        return "graph-output"
    if len(t.outputs) != 1:
        return "shared-intermediate"
    return t.outputs[0]


def _cast_pair(node: gs.Node, graph: gs.Graph) -> tuple | str | None:
    """Cast(A→B) → Cast(B→C) with B unsupported."""
    b = int(node.attrs["to"])
    a = _elem(node.inputs[0])
    if b not in UNSUPPORTED or a is None:
        return None
    nxt = _only_consumer(node.outputs[0], graph)
    if isinstance(nxt, str):
        return nxt
    if nxt.op == "Cast":
        if b not in _EXACT_IN.get(a, set()):
            return "value-may-not-fit"
        return ("pair", [node, nxt])
    if a == T.FLOAT and b == T.DOUBLE:
        return _double_op(node, nxt, graph)
    return None  # B is consumed by something else; nothing this pass can prove


def _double_op(up: gs.Node, op: gs.Node, graph: gs.Graph) -> tuple | str:
    if op.op not in _EXACT_DOUBLE_OPS or len(op.outputs) != 1:
        return "unsafe-op"
    down = _only_consumer(op.outputs[0], graph)
    if isinstance(down, str):
        return down
    if down.op != "Cast" or int(down.attrs["to"]) != T.FLOAT:
        return "unsafe-op"
    others = []
    for t in op.inputs:
        if t is up.outputs[0]:
            continue
        value = const_value(t)
        if value is not None:
            if not np.array_equal(value.astype(np.float32).astype(np.float64), value):
                return "constant-not-float"
            others.append(("const", t))
            continue
        src = t.inputs[0] if len(t.inputs) == 1 else None
        if src is None or src.op != "Cast" or _elem(src.inputs[0]) != T.FLOAT or len(t.outputs) != 1:
            return "unsafe-op"
        others.append(("cast", t))
    return ("double", [up, op, down], others)


@register_pass
class CastUnsupportedDtypesPass(Pass):
    name = "cast-unsupported-dtypes"
    summary = "Drop double/int16/uint intermediates where the values provably survive (cast pairs, exact double ops)."
    rewrites_ops = ("Cast",)  # the parser reports the unsupported type at the Cast that makes it

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        found, used = [], set()
        for node in graph.nodes:
            if node.op != "Cast" or (node.domain or "") not in ("", "ai.onnx") or id(node) in used:
                continue
            verdict = _cast_pair(node, graph)
            if isinstance(verdict, str):
                result.reject(verdict, node.name)
            elif verdict is not None and not any(id(n) in used for n in verdict[1]):
                used |= {id(n) for n in verdict[1]}
                found.append(verdict)
        names = NameGen(graph, self.name)
        for plan in found:
            if plan[0] == "pair":
                self._pair(graph, *plan[1], names)
            else:
                self._double(graph, plan[1], plan[2], names)
            result.apply(plan[1][0].name, plan[0])
        if found:
            graph.cleanup(remove_unused_graph_inputs=False).toposort()
        return result

    @staticmethod
    def _pair(graph: gs.Graph, first: gs.Node, second: gs.Node, names: NameGen) -> None:
        x, out = first.inputs[0], second.outputs[0]
        for n in (first, second):
            n.inputs.clear()
            n.outputs.clear()
        if _elem(x) == int(second.attrs["to"]) and out not in graph.outputs:
            for consumer in list(out.outputs):
                for j, t in enumerate(consumer.inputs):
                    if t is out:
                        consumer.inputs[j] = x
            return
        op = "Identity" if _elem(x) == int(second.attrs["to"]) else "Cast"
        attrs = {} if op == "Identity" else {"to": int(second.attrs["to"])}
        graph.nodes.append(gs.Node(op, name=names(), attrs=attrs, inputs=[x], outputs=[out]))

    @staticmethod
    def _double(graph: gs.Graph, chain: list[gs.Node], others: list, names: NameGen) -> None:
        up, op, down = chain
        inputs = []
        for t in op.inputs:
            if t is up.outputs[0]:
                inputs.append(up.inputs[0])
            elif isinstance(t, gs.Constant) or t.inputs[0].op == "Constant":
                inputs.append(gs.Constant(names("/value"), const_value(t).astype(np.float32)))
            else:
                inputs.append(t.inputs[0].inputs[0])  # the float tensor the other upcast read
        out = down.outputs[0]
        for n in chain:
            n.inputs.clear()
            n.outputs.clear()
        graph.nodes.append(gs.Node(op.op, name=names(), attrs=dict(op.attrs), inputs=inputs, outputs=[out]))
