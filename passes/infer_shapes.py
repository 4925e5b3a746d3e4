"""infer-shapes: annotate tensors with ONNX shape inference, keeping symbolic dims.

Summary: runs ``onnx.shape_inference`` on the graph's weightless export (weights stood in by typed
inputs: none is read or serialized) and copies dtypes and shapes back
onto tensors that had none (or only partial ones). Counts tensors whose shape or dtype became
known. Never changes computation.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.importers.onnx_importer import get_onnx_tensor_dtype, get_onnx_tensor_shape

from surgery.io import to_graph, weightless_model
from surgery.pass_base import Pass, PassContext, PassResult
from surgery.registry import register_pass


HUGE_DIM = 1 << 31


def _largest_dim(graph: gs.Graph) -> int:
    dims = [d for t in graph.tensors().values() if t.shape is not None for d in t.shape if isinstance(d, int)]
    return max(dims, default=0)


def _known(t: gs.Tensor) -> int:
    if t.dtype is None or t.shape is None:
        return 0
    return 1 + sum(isinstance(d, int) for d in t.shape)


class _Typed(NamedTuple):
    dtype: Any
    shape: Any


def _inferred_types(g: onnx.GraphProto) -> tuple[dict[str, _Typed], set[str]]:
    """dtype and shape of every variable of ``g`` the way ``gs.import_onnx`` would set them (value_info
    first, later duplicates filling gaps, then graph inputs and outputs), and the initializer names.

    Importing the whole inferred model into a second gs graph only to read these cost more than
    the inference itself, in every sweep.
    """
    constants = {t.name for t in g.initializer} | {t.values.name for t in g.sparse_initializer}
    types: dict[str, _Typed] = {}

    def typed(vi: onnx.ValueInfoProto) -> _Typed:
        if vi.type.HasField("tensor_type"):  # gs's readers fail on optional and nested types
            return _Typed(get_onnx_tensor_dtype(vi), get_onnx_tensor_shape(vi))
        return _Typed(None, None)

    for vi in g.value_info:
        if vi.name in constants:
            continue
        new, old = typed(vi), types.get(vi.name)
        types[vi.name] = new if old is None else _Typed(old.dtype or new.dtype, old.shape or new.shape)
    for vi in list(g.input) + list(g.output):
        if vi.name not in constants and vi.name not in types:
            types[vi.name] = typed(vi)
    return types, constants


@register_pass
class InferShapesPass(Pass):
    name = "infer-shapes"
    summary = "Annotate tensors with ONNX shape inference (symbolic dims kept)."
    changes_graph = False  # annotations from ONNX's own inference: no verification after it

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        model = weightless_model(graph)
        # onnx's data propagation walks shape values element by element: a dim like 2**40 hangs it
        huge = _largest_dim(graph) > HUGE_DIM
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=not huge)
        if huge:
            result.notes.append(f"a dim above {HUGE_DIM}: shape values not propagated")
        tensors = graph.tensors()
        new_tensors, constants = _inferred_types(inferred.graph)
        if any(name in constants for name, t in tensors.items() if not isinstance(t, gs.Constant)):
            new_tensors = to_graph(inferred).tensors()  # a variable exported as an initializer: let gs sort it out
        for name, tensor in tensors.items():
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
