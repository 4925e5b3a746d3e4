"""rewrite-static-scatter: a reducing ScatterElements / ScatterND with constant, distinct indices
becomes a plain (reduction "none") scatter of pre-reduced updates.

Summary: TensorRT rejects every scatter reduction ("Unsupported reduction type", "ScatterND with
reduction is not supported") but takes the plain forms. When no element is written twice, reducing
into the data equals writing ``op(data[idx], update)`` once:

Matches:
    ScatterElements(x, idx, u, axis, reduction=r)  ⇒  ScatterElements(x, idx, R(GatherElements(x, idx, axis), u), axis)
    ScatterND(x, idx, u, reduction=r)              ⇒  ScatterND(x, idx, R(GatherND(x, idx), u))
    with R = Add / Mul / Max / Min for r = add / mul / max / min.

Requires: nothing; negative indices need the static size of the axes they index.

Rejects:
    indices-not-constant: the indices are computed at run time.
    duplicate-indices: two updates land on the same element (the reduction combines them).
    negative-index-unknown-dim: a negative index into an axis of unknown size.
    unknown-reduction: a reduction attribute this pass does not know.

Numerics: exact; each element receives exactly one reduction, computed by the same binary op.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import onnx_graphsurgeon as gs

from surgery.graph_utils import NameGen, const_value
from surgery.registry import register_pass
from surgery.rewrite import NodeRewritePass, Reject, State

__all__ = ["RewriteStaticScatterPass"]

_REDUCE = {"add": "Add", "mul": "Mul", "max": "Max", "min": "Min"}


class _Plan(NamedTuple):
    """The binary op that pre-reduces the updates."""

    op: str


def _dim(x: gs.Tensor, axis: int) -> int | None:
    if x.shape is None or axis >= len(x.shape):
        return None
    d = x.shape[axis]
    return int(d) if isinstance(d, (int, np.integer)) and d >= 0 else None


def _targets(node: gs.Node, idx: np.ndarray) -> np.ndarray | Reject:
    """Every written coordinate as a row (negative indices normalised), or why they are unknown."""
    x = node.inputs[0]
    idx = idx.astype(np.int64)
    if node.op == "ScatterElements":
        axis = int(node.attrs.get("axis", 0)) % max(idx.ndim, 1)
        if (idx < 0).any():
            size = _dim(x, axis)
            if size is None:
                return Reject("negative-index-unknown-dim", x)
            idx = np.where(idx < 0, idx + size, idx)
        grid = np.indices(idx.shape).reshape(idx.ndim, -1)
        grid[axis] = idx.reshape(-1)
        return grid.T
    k = idx.shape[-1]
    rows = idx.reshape(-1, k)
    if (rows < 0).any():
        sizes = [_dim(x, a) for a in range(k)]
        if any(s is None for s in sizes):
            return Reject("negative-index-unknown-dim", x)
        rows = np.where(rows < 0, rows + np.array(sizes), rows)
    return rows


@register_pass
class RewriteStaticScatterPass(NodeRewritePass[State]):
    """Outcomes are ``<op>:<binary op>``, e.g. ``ScatterND:Add``."""

    name = "rewrite-static-scatter"
    summary = "Turn reducing ScatterElements/ScatterND with constant distinct indices into plain scatters."
    ops = ("ScatterElements", "ScatterND")

    def check(self, node: gs.Node, state: State) -> _Plan | Reject | None:
        reduction = node.attrs.get("reduction", "none")
        reduction = reduction.decode() if isinstance(reduction, bytes) else str(reduction)
        if reduction == "none":
            return None  # already the form TensorRT takes
        if reduction not in _REDUCE:
            return Reject("unknown-reduction")
        idx = const_value(node.inputs[1])
        if idx is None:
            return Reject("indices-not-constant", node.inputs[1])
        rows = _targets(node, np.asarray(idx))
        if isinstance(rows, Reject):
            return rows
        if len(np.unique(rows, axis=0)) != len(rows):
            return Reject("duplicate-indices", node.inputs[1])
        return _Plan(_REDUCE[reduction])

    def outcome(self, node: gs.Node, plan: _Plan) -> str:
        return f"{node.op}:{plan.op}"

    def rewrite(self, node: gs.Node, plan: _Plan, state: State, names: NameGen) -> list[gs.Node]:
        """GatherElements/GatherND of the data at the indices, reduced with the updates; the scatter is kept, plain."""
        x, idx, updates = node.inputs
        gathered = gs.Variable(names(), dtype=updates.dtype, shape=updates.shape)
        combined = gs.Variable(names(), dtype=updates.dtype, shape=updates.shape)
        if node.op == "ScatterElements":
            gather = gs.Node("GatherElements", name=names(), attrs={"axis": int(node.attrs.get("axis", 0))},
                             inputs=[x, idx], outputs=[gathered])
        else:
            gather = gs.Node("GatherND", name=names(), inputs=[x, idx], outputs=[gathered])
        reduce = gs.Node(plan.op, name=names(), inputs=[gathered, updates], outputs=[combined])
        node.inputs[2] = combined
        node.attrs.pop("reduction")
        return [gather, reduce, node]
