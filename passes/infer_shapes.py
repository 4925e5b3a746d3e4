"""infer-shapes: annotate tensors with ONNX shape inference, keeping symbolic dims.

Summary: runs ``onnx.shape_inference`` on the exported graph and copies dtypes and shapes back
onto tensors that had none (or only partial ones). Counts tensors whose shape or dtype became
known. Never changes computation.
"""
from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from surgery.io import to_graph, to_model
from surgery.pass_base import Pass, PassContext, PassResult
from surgery.registry import register_pass


def _known(t: gs.Tensor) -> int:
    if t.dtype is None or t.shape is None:
        return 0
    return 1 + sum(isinstance(d, int) for d in t.shape)


@register_pass
class InferShapesPass(Pass):
    name = "infer-shapes"
    summary = "Annotate tensors with ONNX shape inference (symbolic dims kept)."
    preserves = frozenset({"NxView"})

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        inferred = onnx.shape_inference.infer_shapes(to_model(graph), data_prop=True)
        new_tensors = to_graph(inferred).tensors()
        for name, tensor in graph.tensors().items():
            if isinstance(tensor, gs.Constant) or name not in new_tensors:
                continue
            other = new_tensors[name]
            if other.shape is None and other.dtype is None:
                continue
            if _known(other) > _known(tensor):
                tensor.dtype = other.dtype if other.dtype is not None else tensor.dtype
                tensor.shape = other.shape if other.shape is not None else tensor.shape
                result.changed += 1
        result.stats["annotated"] = result.changed
        result.stats = +result.stats
        return result
