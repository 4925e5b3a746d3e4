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

import logging

import numpy as np
import onnx_graphsurgeon as gs

from surgery.graph_utils import NameGen, const_value
from surgery.pass_base import Pass, PassContext, PassResult
from surgery.registry import register_pass

__all__ = ["RewriteStaticNonzeroPass"]

log = logging.getLogger(__name__)

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


@register_pass
class RewriteStaticNonzeroPass(Pass):
    name = "rewrite-static-nonzero"
    summary = "Turn NonZero of a constant mask into constant indices, and Compress with a constant condition into Gather."
    rewrites_ops = ("NonZero", "Compress")

    def __init__(self, max_elements: int = DEFAULT_MAX_ELEMENTS) -> None:
        self.max_elements = max_elements

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        found = []
        for node in graph.nodes:
            if node.op not in ("NonZero", "Compress") or (node.domain or "") not in ("", "ai.onnx"):
                continue
            mask = const_value(node.inputs[0 if node.op == "NonZero" else 1])
            if mask is None:
                result.reject("mask-not-constant", node.name)
            elif mask.size > self.max_elements:
                result.reject("too-large", node.name)
            elif not np.any(mask):
                result.reject("empty-selection", node.name)
            else:
                found.append((node, np.asarray(mask)))
        names = NameGen(graph, self.name)
        for node, mask in found:
            if node.op == "NonZero":
                self._nonzero(graph, node, mask, names)
            else:
                self._compress(graph, node, mask, names)
            result.apply(node.name, node.op)
        if found:
            graph.cleanup(remove_unused_graph_inputs=False).toposort()
        return result

    @staticmethod
    def _nonzero(graph: gs.Graph, node: gs.Node, mask: np.ndarray, names: NameGen) -> None:
        values = np.array(np.nonzero(mask), dtype=np.int64)
        chain = _mask_chain(node, graph) if mask.ndim == 1 else []
        if chain:
            values = values.T
        if len(chain) == 2:
            values = values.reshape(-1)
        last = chain[-1] if chain else node
        out = last.outputs[0]
        graph.nodes.append(gs.Node("Constant", name=names(), attrs={"value": gs.Constant(names("/value"), values)},
                                   outputs=[out]))
        for n in [node, *chain]:
            n.inputs.clear()
            n.outputs.clear()

    @staticmethod
    def _compress(graph: gs.Graph, node: gs.Node, mask: np.ndarray, names: NameGen) -> None:
        x, out = node.inputs[0], node.outputs[0]
        indices = gs.Constant(names("/indices"), np.flatnonzero(mask.reshape(-1)).astype(np.int64))
        axis = node.attrs.get("axis")
        if axis is None:
            flat = gs.Variable(names(), dtype=x.dtype)
            minus1 = gs.Constant(names("/shape"), np.array([-1], np.int64))
            graph.nodes.append(gs.Node("Reshape", name=names(), inputs=[x, minus1], outputs=[flat]))
            x, axis = flat, 0
        graph.nodes.append(gs.Node("Gather", name=names(), attrs={"axis": int(axis)}, inputs=[x, indices], outputs=[out]))
        node.inputs.clear()
        node.outputs.clear()
