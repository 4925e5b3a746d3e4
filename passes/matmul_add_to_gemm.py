"""``matmul-add-to-gemm``: turn a 2-D MatMul with constant weights and a constant Add into one Gemm.

Summary:
    ``Add(MatMul(a, B), c)`` with ``a`` of rank 2, ``B`` a constant ``[K, N]`` and ``c`` a constant
    that broadcasts onto the ``[M, N]`` product without enlarging it becomes ``Gemm(a, B, c)``
    (alpha = beta = 1): the same arithmetic in one node, the form a later fold-batchnorm or
    fuse-bias-add can extend.

Matches (either operand order of the Add)::

    MatMul(a, B) -> Add(c)      c an initializer; the MatMul's output feeds only the Add

Rejects:
    input-not-2d (``a`` has rank 1 or above 2: Gemm takes 2-D operands only, and reshaping ``a`` to
    2-D and the result back would add two nodes for the one saved; onnxruntime and TensorRT fuse
    such a MatMul + Add themselves), input-rank-unknown (run infer-shapes first), weight-not-constant,
    weight-not-2d, unsupported-dtype (not float16/32/64), addend-not-broadcastable (``c`` has more
    than 2 dims, or a size that differs from the output's on an axis where it is not 1, including
    a row count where M is not static). Below opset 7 nothing is matched (Gemm broadcast ``C`` only
    with ``broadcast=1`` there).

Numerics:
    Gemm computes ``a @ B + c``; outputs agree to float rounding.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes._channel_fold import FOLD_DTYPES, MIN_OPSET
from surgery.graph_utils import NameGen, commuted_patterns, const_value
from surgery.registry import register_pass
from surgery.rewrite import Match, PatternRewritePass, Reject, State

_BUILT = {order: p for order, p in commuted_patterns(
    ["a", "b"], [("mm", "MatMul", ["a", "b"]), ("add", "Add", ["mm", "$c"])], ["add"])}


@register_pass
class MatMulAddToGemmPass(PatternRewritePass[State, None]):
    name = "matmul-add-to-gemm"
    summary = "Turn a 2-D MatMul with constant weights plus a constant Add into one Gemm"
    anchor_ops = ("MatMul",)

    def patterns(self, state: State) -> dict[str, tuple[gs.GraphPattern, None]]:
        return {f"matmul-add:{order}": (p, None) for order, p in _BUILT.items()} if int(state.graph.opset) >= MIN_OPSET else {}

    def check(self, m: Match[None], state: State) -> bool | Reject:
        a, b = m.get("mm").inputs
        c = m.constants["c"]
        if a.shape is None:
            return Reject("input-rank-unknown", a)
        if len(a.shape) != 2:
            if self.name in state.ctx.explain and not any("input-not-2d" in n for n in state.notes):
                state.notes.append("input-not-2d: Gemm takes 2-D operands only; reshaping around it would add two nodes "
                                   "for the one saved, and onnxruntime and TensorRT fuse MatMul + Add themselves")
            return Reject("input-not-2d", a)
        weight = const_value(b)
        if weight is None:
            return Reject("weight-not-constant", b)
        if weight.ndim != 2:
            return Reject("weight-not-2d", b)
        if weight.dtype not in FOLD_DTYPES:
            return Reject("unsupported-dtype", b)
        rows = a.shape[0]
        shape = (1,) * (2 - c.values.ndim) + tuple(c.values.shape) if c.values.ndim <= 2 else None
        if shape is None or shape[1] not in (1, weight.shape[1]) or \
                (shape[0] != 1 and not (isinstance(rows, (int, np.integer)) and shape[0] == rows)):
            return Reject("addend-not-broadcastable", c)
        return True

    def rewrite(self, m: Match[None], plan: bool, state: State, names: NameGen) -> list[gs.Node]:
        mm = m.get("mm")
        return [gs.Node("Gemm", name=mm.name, inputs=[*mm.inputs, m.constants["c"]], outputs=[m.outputs[0]])]

    def unmatched_reason(self, node: gs.Node, state: State) -> str:
        out = node.outputs[0]
        adds = [n for n in out.outputs if n.op == "Add"]
        if not adds:
            return "no-add-after (the MatMul's output is not added to)"
        if out in state.graph.outputs:
            return f"matmul-output-is-graph-output ({out.name} must stay)"
        if len(out.outputs) > 1:
            return f"matmul-output-shared ({out.name} feeds {len(out.outputs)} nodes)"
        other = next((t for t in adds[0].inputs if t is not out), None)
        if other is None or not isinstance(other, gs.Constant):
            return f"addend-not-constant ({other.name if other is not None else out.name} is computed, not an initializer)"
        return "no-pattern-match"

    def site(self, nodes: list[gs.Node]) -> str:
        return nodes[0].name
