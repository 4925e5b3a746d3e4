"""rewrite-static-nonzero: NonZero of a constant and Compress with a constant condition become constants / Gather.

Summary: TensorRT has no NonZero without a plugin and no Compress at all. When the mask is a
constant (a boolean-mask index ``x[mask]`` with a registered buffer), the indices are known at
export time:

Matches:
    NonZero(constant m)                         ⇒  constant int64 indices, shape [rank(m), count]
    NonZero(constant m) → Transpose([1,0]) → Squeeze(1)   (the exporter's 1-D mask index chain)
                                                ⇒  one constant int64 vector
    Compress(x, constant c, axis=a)             ⇒  Gather(x, nonzero(c), axis=a)
    Compress(x, constant c)  (no axis)          ⇒  Gather(Reshape(x, [-1]), nonzero(c), axis=0)

Requires: nothing.

Rejects:
    mask-not-constant: the mask / condition is computed at run time.
    empty-selection: no element is selected (TensorRT cannot build zero-size Gather indices).
    too-large: the mask has more than ``max_elements`` elements (default 1 << 20).

Numerics: exact (the same elements are selected in the same order).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import onnx_graphsurgeon as gs

from surgery.graph_utils import NameGen, const_value, disconnect
from surgery.registry import register_pass
from surgery.rewrite import NodeRewritePass, Reject, State

__all__ = ["RewriteStaticNonzeroPass"]

DEFAULT_MAX_ELEMENTS = 1 << 20


def _mask_chain(node: gs.Node, graph: gs.Graph) -> list[gs.Node]:
    """[Transpose, Squeeze] following a NonZero of a 1-D mask, when nothing else reads them."""
    out = node.outputs[0]
    if len(out.outputs) != 1 or out in graph.outputs or out.outputs[0].op != "Transpose":
        return []
    tr = out.outputs[0]
    if list(tr.attrs.get("perm", [1, 0])) != [1, 0] or len(tr.outputs[0].outputs) != 1 or tr.outputs[0] in graph.outputs:
        return [tr]
    sq = tr.outputs[0].outputs[0]
    axes = const_value(sq.inputs[1]) if sq.op == "Squeeze" and len(sq.inputs) > 1 else sq.attrs.get("axes") if sq.op == "Squeeze" else None
    if axes is not None and [int(a) for a in np.asarray(axes).reshape(-1)] in ([1], [-1]):
        return [tr, sq]
    return [tr]


class _Selection(NamedTuple):
    """The plan: the constant mask, and for a NonZero the [Transpose, Squeeze] chain folded with it."""

    mask: np.ndarray
    chain: list[gs.Node]


@register_pass
class RewriteStaticNonzeroPass(NodeRewritePass[State]):
    """``max_elements`` bounds the mask size (a pass parameter); the outcome is the op rewritten."""

    name = "rewrite-static-nonzero"
    summary = "Turn NonZero of a constant mask into constant indices, and Compress with a constant condition into Gather."
    ops = ("NonZero", "Compress")

    def __init__(self, max_elements: int = DEFAULT_MAX_ELEMENTS) -> None:
        self.max_elements = max_elements

    def check(self, node: gs.Node, state: State) -> _Selection | Reject:
        source = node.inputs[0 if node.op == "NonZero" else 1]
        mask = const_value(source)
        if mask is None:
            return Reject("mask-not-constant", source)
        if mask.size > self.max_elements:
            return Reject("too-large", source)
        if not np.any(mask):
            return Reject("empty-selection", source)
        mask = np.asarray(mask)
        chain = _mask_chain(node, state.graph) if node.op == "NonZero" and mask.ndim == 1 else []
        return _Selection(mask, chain)

    def outcome(self, node: gs.Node, plan: _Selection) -> str:
        return node.op

    def rewrite(self, node: gs.Node, plan: _Selection, state: State, names: NameGen) -> list[gs.Node]:
        if node.op == "NonZero":
            return _nonzero(node, plan, names)
        return _compress(node, plan.mask, names)


def _nonzero(node: gs.Node, plan: _Selection, names: NameGen) -> list[gs.Node]:
    """One Constant node writing the indices where the chain (or the NonZero) wrote them."""
    values = np.array(np.nonzero(plan.mask), dtype=np.int64)
    if plan.chain:
        values = values.T
    if len(plan.chain) == 2:
        values = values.reshape(-1)
    last = plan.chain[-1] if plan.chain else node
    out = last.outputs[0]
    const = gs.Node("Constant", name=names(), attrs={"value": gs.Constant(names("/value"), values)}, outputs=[out])
    disconnect(plan.chain)
    return [const]


def _compress(node: gs.Node, mask: np.ndarray, names: NameGen) -> list[gs.Node]:
    """Gather of the selected indices (of the flattened input when Compress has no axis)."""
    x, out = node.inputs[0], node.outputs[0]
    indices = gs.Constant(names("/indices"), np.flatnonzero(mask.reshape(-1)).astype(np.int64))
    axis = node.attrs.get("axis")
    new = []
    if axis is None:
        flat = gs.Variable(names(), dtype=x.dtype)
        minus1 = gs.Constant(names("/shape"), np.array([-1], np.int64))
        new.append(gs.Node("Reshape", name=names(), inputs=[x, minus1], outputs=[flat]))
        x, axis = flat, 0
    new.append(gs.Node("Gather", name=names(), attrs={"axis": int(axis)}, inputs=[x, indices], outputs=[out]))
    return new
