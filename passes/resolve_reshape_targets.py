"""resolve-reshape-targets: give a Reshape whose target is computed from shapes a constant target.

Summary: exporters build head split/merge targets at run time, ``Concat(Unsqueeze(Gather(Shape(h), 0)),
..., [12], [64])``. Where shape inference proves that such an entry is the Reshape input's own dim at the
same position (the same static value, or the same symbolic dim name), the entry becomes 0 ("copy this
dim", allowzero=0); when every entry is known the target becomes a constant, and the Shape / Gather /
Unsqueeze / Concat chain is left to remove-dead-nodes. On the GPU each of those small ops is a kernel
launch and a host round trip; for TensorRT they are shape tensors it must evaluate.

Matches:
    x -> Reshape(t) -> y  with t one of
        Shape(src)[start:end]
        Concat(axis 0) of pieces: constant 1-D ints | Unsqueeze(Gather(Shape(src), i), 0) | Gather(Shape(src), [i..])
                          | Slice(Shape(src), [a], [b]) | Shape(src)[start:end]
    each entry k read from dim j of src becomes 0 when src.shape[j] and x.shape[k] are the same
    symbol (or the same static int), src.shape[j] when static and not 0; constant entries stay.

Rejects:
    allowzero: the Reshape has allowzero=1 and a constant 0 entry (a real zero, which the copy-dim 0 of the
        new target cannot express). Without one, allowzero is dropped: every 0 written is a copy.
    target-form: the target is not built from constants and Shape reads as above.
    entry-unproven: an entry's dim is not proven equal to a static value or to x's dim at its position.

Numerics: exact (only the way the target is computed changes; the values are the same).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from surgery.graph_utils import const_value, producer
from surgery.pass_base import Pass, PassContext, PassResult
from surgery.registry import register_pass

__all__ = ["ResolveReshapeTargetsPass", "target_entries", "DimRef", "Entry"]

DimRef = tuple[gs.Tensor, int]  # dim j of tensor src
Entry = int | DimRef


@register_pass
class ResolveReshapeTargetsPass(Pass):
    name = "resolve-reshape-targets"
    summary = "Replace Reshape targets computed from Shape/Gather/Concat by constants where shapes prove the values."

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        for node in graph.nodes:
            if node.op != "Reshape" or (node.domain or "") not in ("", "ai.onnx") or len(node.inputs) != 2:
                continue
            if const_value(node.inputs[1]) is not None:
                continue
            verdict = self._target(node)
            if isinstance(verdict, str):
                result.reject(verdict, node.name, node.inputs[1].name)
                continue
            node.inputs[1] = gs.Constant(f"{node.name}/resolved_shape", np.array(verdict, np.int64))
            node.attrs.pop("allowzero", None)  # the target's zeros are copies now (none was literal: see _target)
            result.apply(node.name)
        return result

    def _target(self, node: gs.Node) -> list[int] | str:
        entries = target_entries(node.inputs[1])
        if entries is None:
            return "target-form"
        if int(node.attrs.get("allowzero", 0)) and 0 in entries:
            return "allowzero"  # a literal 0 entry would turn into a copy
        x_shape = node.inputs[0].shape
        out: list[int] = []
        for k, entry in enumerate(entries):
            if isinstance(entry, int):
                out.append(entry)
                continue
            value = _resolve(entry, k, x_shape)
            if value is None:
                return "entry-unproven"
            out.append(value)
        return out


def _resolve(ref: DimRef, k: int, x_shape) -> int | None:
    """The constant that stands for dim ``ref`` at target position ``k``: its static value, or 0 (copy x's dim k)."""
    src, j = ref
    shape = src.shape
    if shape is None or not -len(shape) <= j < len(shape):
        return None
    dim = shape[j]
    if isinstance(dim, int) and dim > 0:
        return dim
    if x_shape is None or k >= len(x_shape):
        return None
    same = x_shape[k] == dim and (isinstance(dim, int) or (isinstance(dim, str) and dim != ""))
    return 0 if same else None


def target_entries(t: gs.Tensor) -> list[Entry] | None:
    """The target's entries: ints where constant, (src, dim) where read off a shape; None for other forms."""
    node = producer(t)
    if node is None:
        return None
    if node.op == "Concat" and int(node.attrs.get("axis", 0)) in (0, -1):
        out: list[Entry] = []
        for piece in node.inputs:
            part = _piece(piece)
            if part is None:
                return None
            out += part
        return out
    return _shape_read(node)


def _piece(t: gs.Tensor) -> list[Entry] | None:
    value = const_value(t)
    if value is not None:
        return [int(v) for v in value.reshape(-1)] if value.ndim <= 1 and value.dtype.kind in "iu" else None
    node = producer(t)
    if node is None:
        return None
    if node.op == "Unsqueeze":  # a scalar dim made 1-D
        axes = node.attrs.get("axes") if len(node.inputs) == 1 else const_value(node.inputs[1])
        if axes is None or [int(a) for a in np.reshape(axes, -1)] != [0]:
            return None
        inner = producer(node.inputs[0])
        if inner is None or inner.op != "Gather":
            return None
        part = _shape_read(inner)
        return part if part is not None and len(part) == 1 else None
    return _shape_read(node)


def _shape_read(node: gs.Node) -> list[Entry] | None:
    """Dim refs for Shape(src)[start:end], Gather(Shape(src), idx) and Slice(Shape(src), [a], [b])."""
    if node.op == "Shape":
        src = node.inputs[0]
        if src.shape is None:
            return None
        rank = len(src.shape)
        start, end = (int(node.attrs.get("start", 0)), int(node.attrs.get("end", rank)))
        return [(src, j) for j in range(*slice(start, end).indices(rank))]
    if node.op not in ("Gather", "Slice"):
        return None
    shape_node = producer(node.inputs[0])
    if shape_node is None or shape_node.op != "Shape":
        return None
    dims = _shape_read(shape_node)
    if dims is None:
        return None
    if node.op == "Gather":
        idx = const_value(node.inputs[1])
        if idx is None or idx.ndim > 1 or int(node.attrs.get("axis", 0)) != 0:
            return None
        try:
            return [dims[int(i)] for i in idx.reshape(-1)]
        except IndexError:
            return None
    consts = [const_value(t) if t.name else None for t in node.inputs[1:]]
    if len(consts) < 2 or any(c is None for c in consts[:2]) or any(c is None for c in consts[2:]):
        return None
    if len(consts) >= 3 and [int(a) for a in consts[2].reshape(-1)] != [0]:
        return None
    if len(consts) >= 4 and [int(s) for s in consts[3].reshape(-1)] != [1]:
        return None
    start, end = int(consts[0].reshape(-1)[0]), int(consts[1].reshape(-1)[0])
    return dims[slice(start, end)]
