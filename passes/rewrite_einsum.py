"""rewrite-einsum: lower Einsum to Transpose / MatMul / Unsqueeze / Squeeze.

Summary: TensorRT's Einsum layer has historically refused ellipses, diagonals and more than two
operands, and a MatMul gives the builder its best kernels. Two equation shapes are lowered:

Matches:
    one operand, a pure permutation      ``ij->ji``          ⇒ Transpose(perm)
    two operands, batched matmul         ``bij,bjk->bik``    ⇒ [Transpose] → [Unsqueeze] → MatMul → [Squeeze] → [Transpose]
    (every letter is a batch letter (both operands and the output), a row letter (first operand and
    output, at most one), a column letter (second operand and output, at most one) or the one
    contracted letter (both operands, not the output)); an implicit output (no ``->``) is the sorted
    letters that occur once.

Requires: nothing (no shapes are needed).

Rejects:
    ellipsis: the equation uses ``...``.
    operand-count: three or more operands.
    repeated-letter: a letter repeats inside one term (a diagonal or trace).
    reduced-letter: a letter of one operand is summed away without being contracted.
    one-operand-reduction: a single operand whose output is not a permutation of its letters.
    no-contraction: two operands without a contracted letter (an outer product).
    grouped-axes: two or more row, column or contracted letters (needs static shapes to reshape).

Numerics: MatMul sums the same products as Einsum; only the summation order may differ (fp32
rounding, well below 1e-5 relative for the sizes exported models use).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import onnx_graphsurgeon as gs

from surgery.graph_utils import NameGen
from surgery.registry import register_pass
from surgery.rewrite import NodeRewritePass, Reject, State

__all__ = ["RewriteEinsumPass", "plan_einsum"]


class TransposePlan(NamedTuple):
    """One operand permuted: ``out = Transpose(x, perm)`` (Identity when ``perm`` is empty)."""

    perm: list[int]


class MatMulPlan(NamedTuple):
    """Two operands: operand perms to [batch, row, k] / [batch, k, col], whether a row / column letter
    exists (else an axis is unsqueezed and squeezed again), and the perm of the result to the output."""

    perm_a: list[int]
    perm_b: list[int]
    rows: bool
    cols: bool
    perm_out: list[int]
    nbatch: int


def _parse(equation: str) -> tuple[list[str], str] | str:
    eq = equation.replace(" ", "")
    if "..." in eq:
        return "ellipsis"
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if "->" not in eq:
        letters = "".join(terms)
        rhs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    if any(len(set(t)) != len(t) for t in terms + [rhs]):
        return "repeated-letter"
    return terms, rhs


def plan_einsum(equation: str) -> TransposePlan | MatMulPlan | str:
    """The lowering plan of an equation, or the rejection reason."""
    parsed = _parse(equation)
    if isinstance(parsed, str):
        return parsed
    terms, out = parsed
    if len(terms) == 1:
        if sorted(terms[0]) != sorted(out):
            return "one-operand-reduction"
        return TransposePlan([terms[0].index(c) for c in out])
    if len(terms) != 2:
        return "operand-count"
    a, b = terms
    if any(c not in a and c not in b for c in out):
        return "repeated-letter"  # an output letter no operand has: malformed, never lowered
    batch = [c for c in out if c in a and c in b]
    rows = [c for c in a if c in out and c not in b]
    cols = [c for c in b if c in out and c not in a]
    contracted = [c for c in a if c in b and c not in out]
    if any(c not in out and c not in b for c in a) or any(c not in out and c not in a for c in b):
        return "reduced-letter"
    if not contracted:
        return "no-contraction"
    if len(contracted) > 1 or len(rows) > 1 or len(cols) > 1:
        return "grouped-axes"
    k = contracted[0]
    return MatMulPlan(perm_a=[a.index(c) for c in batch + rows + [k]], perm_b=[b.index(c) for c in batch + [k] + cols],
                      rows=bool(rows), cols=bool(cols), perm_out=[(batch + rows + cols).index(c) for c in out],
                      nbatch=len(batch))


@register_pass
class RewriteEinsumPass(NodeRewritePass[State]):
    """Plans are ``TransposePlan`` (outcome "transpose") or ``MatMulPlan`` (outcome "matmul")."""

    name = "rewrite-einsum"
    summary = "Lower Einsum (batched-matmul equations and pure transposes) to MatMul/Transpose."
    ops = ("Einsum",)

    def check(self, node: gs.Node, state: State) -> TransposePlan | MatMulPlan | Reject:
        plan = plan_einsum(str(node.attrs.get("equation", "")))
        return Reject(plan) if isinstance(plan, str) else plan

    def outcome(self, node: gs.Node, plan: TransposePlan | MatMulPlan) -> str:
        return "transpose" if isinstance(plan, TransposePlan) else "matmul"

    def rewrite(self, node: gs.Node, plan: TransposePlan | MatMulPlan, state: State, names: NameGen) -> list[gs.Node]:
        opset = int(state.graph.opset)
        out = node.outputs[0]
        dtype = out.dtype
        new: list[gs.Node] = []

        def emit(op: str, inputs: list, attrs: dict | None = None, dst: gs.Tensor | None = None) -> gs.Tensor:
            t = dst if dst is not None else gs.Variable(names(), dtype=dtype)
            new.append(gs.Node(op, name=names(), attrs=attrs or {}, inputs=inputs, outputs=[t]))
            return t

        def squeeze_op(op: str, x: gs.Tensor, values: list[int], dst: gs.Tensor | None = None) -> gs.Tensor:
            if opset < 13:  # axes became an input in opset 13
                return emit(op, [x], {"axes": values}, dst)
            return emit(op, [x, gs.Constant(names("/axes"), np.array(values, np.int64))], dst=dst)

        if isinstance(plan, TransposePlan):
            perm = plan.perm
            emit("Transpose" if perm else "Identity", [node.inputs[0]], {"perm": perm} if perm else {}, out)
            return new
        a, b = node.inputs
        if plan.perm_a != sorted(plan.perm_a):
            a = emit("Transpose", [a], {"perm": plan.perm_a})
        if plan.perm_b != sorted(plan.perm_b):
            b = emit("Transpose", [b], {"perm": plan.perm_b})
        if not plan.rows:
            a = squeeze_op("Unsqueeze", a, [-2])
        if not plan.cols:
            b = squeeze_op("Unsqueeze", b, [-1])
        squeeze = ([] if plan.rows else [-2]) + ([] if plan.cols else [-1])
        identity_out = plan.perm_out == sorted(plan.perm_out)
        y = emit("MatMul", [a, b], dst=out if not squeeze and identity_out else None)
        if squeeze:
            y = squeeze_op("Squeeze", y, squeeze, dst=out if identity_out else None)
        if not identity_out:
            emit("Transpose", [y], {"perm": plan.perm_out}, out)
        return new
