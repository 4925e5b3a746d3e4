"""fold-constants: evaluate every subgraph whose inputs are all constants, including shape arithmetic.

Summary: wraps ``gs.Graph.fold_constants`` (onnxruntime evaluates the constant subgraphs) with an
explicit size threshold and ``error_ok=False``. If evaluation fails, the error is recorded in the
report (``stats['fold-error']`` and a note) and folding is retried partition by partition, so the
failure is never silent.

Numerics: folded values are computed by onnxruntime on CPU, so they equal what the model computed.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from surgery.io import ExternalValues
from surgery.fingerprint import node_signatures, nodes_changed
from surgery.graph_utils import toposort
from surgery.pass_base import Pass, PassContext, PassResult
from surgery.registry import register_pass

log = logging.getLogger(__name__)

DEFAULT_SIZE_THRESHOLD = 4 << 20  # bytes; larger folded tensors would bloat the model


def _foldable_consumer(tensor: gs.Constant) -> bool:
    return any(all(isinstance(t, gs.Constant) for t in node.inputs) for node in tensor.outputs)


def _materialize_small_external(graph: gs.Graph, threshold: int) -> set[int]:
    """Load external constants up to ``threshold`` bytes that feed a node whose inputs are all
    constants (onnxruntime cannot see external files when folding from memory); return the ids of
    larger ones, whose consumers are left unfolded so big weights are never pulled into memory.
    Weights that only feed nodes with a runtime input cannot fold and stay on disk."""
    too_big: set[int] = set()
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant) and isinstance(tensor._values, ExternalValues):
            if not _foldable_consumer(tensor):
                continue
            if tensor._values.nbytes <= threshold:
                tensor.values = tensor._values.load()
                tensor.data_location = None  # now inline; gs would otherwise export it as external
            else:
                too_big.add(id(tensor))
    return too_big


def _fix_sliced_shapes(graph: gs.Graph) -> int:
    """onnx-graphsurgeon 0.6.1 folds ``Shape`` as if its ``start``/``end`` attributes were absent
    (its Gather/Slice-of-Shape shortcuts too), giving wrong constants. Fold such a Shape ourselves when
    the selected dims are static; split it into Shape -> Slice (which gs folds correctly) when only
    some dims of its input are static and a Gather or Slice reads it (the shortcuts gs would take);
    leave it otherwise (gs folds nothing there).

    Splitting only where gs would misfold keeps the pass stable: a split adds constants (merged by
    cse a sweep later) and, for a Shape whose input gets its shape only from a later infer-shapes,
    another split a sweep after that, so every split cost the fixed point two more sweeps."""
    fixed = 0
    for node in list(graph.nodes):
        if node.op != "Shape" or not ({"start", "end"} & set(node.attrs)) or node.inputs[0].shape is None:
            continue
        dims, out = list(node.inputs[0].shape), node.outputs[0]
        start, end = node.attrs.get("start", 0), node.attrs.get("end")
        selected = dims[start:end]
        if len(selected) == len(dims):  # full range (dynamo writes start=0, end=rank): plain Shape
            node.attrs.pop("start", None)
            node.attrs.pop("end", None)
        elif all(isinstance(d, int) and d >= 0 for d in selected):
            const = gs.Constant(f"{node.name}/value", np.array(selected, dtype=np.int64))
            if out in graph.outputs:  # the output keeps its name: Identity of the value, folded next
                node.op, node.attrs = "Identity", {}
                node.inputs.clear()
                node.inputs.append(const)
                fixed += 1
                continue
            for consumer in list(out.outputs):
                for j, t in enumerate(consumer.inputs):
                    if t is out:
                        consumer.inputs[j] = const
            node.inputs.clear()
            node.outputs.clear()
        elif any(isinstance(d, int) and d >= 0 for d in dims) and any(c.op in ("Gather", "Slice") for c in out.outputs):
            full = gs.Variable(f"{node.name}/full", dtype=np.int64, shape=[len(dims)])
            node.outputs[0] = full
            node.attrs.pop("start", None)
            node.attrs.pop("end", None)
            bounds = [np.array([v], np.int64) for v in (start, end if end is not None else 2**62, 0)]
            consts = [gs.Constant(f"{node.name}/{k}", v) for k, v in zip(("starts", "ends", "axes"), bounds)]
            graph.nodes.append(gs.Node("Slice", name=f"{node.name}/slice", inputs=[full, *consts], outputs=[out]))
        else:
            continue
        fixed += 1
    return fixed


# ops whose values are sequences or optionals: gs evaluates only tensors (it fails on a list's nbytes)
_NOT_TENSOR_OPS = frozenset({
    "SequenceConstruct", "SequenceEmpty", "SequenceInsert", "SequenceErase", "SequenceAt", "SequenceLength",
    "SequenceMap", "SplitToSequence", "ConcatFromSequence", "Optional", "OptionalHasElement", "OptionalGetElement",
})

# ops whose output can be far larger than their inputs: folded only when the size is known beforehand
_GENERATORS = frozenset({"ConstantOfShape", "Expand", "Tile", "Range", "Resize", "Upsample", "Pad", "OneHot",
                         "RandomNormal", "RandomUniform", "EyeLike", "CenterCropPad", "Col2Im"})


def _count(dims) -> int | None:
    if dims is None or not all(isinstance(d, (int, np.integer)) and d >= 0 for d in dims):
        return None
    return int(np.prod([int(d) for d in dims], dtype=object))


def _values(t: gs.Tensor):
    if isinstance(t, gs.Constant) and not isinstance(t._values, ExternalValues) and t.shape is not None \
            and (_count(t.shape) or 0) <= 64:
        return np.asarray(t.values).reshape(-1)
    return None


def estimated_output_bytes(node: gs.Node) -> int | None:
    """Bytes of ``node``'s largest output, estimated before anything is computed (None: unknown, and the
    op cannot grow beyond its inputs). Big generators (a ConstantOfShape of 2**40 elements) must never
    be evaluated: gs checks its size threshold only after onnxruntime has built the tensor."""
    itemsize = max((np.dtype(o.dtype).itemsize for o in node.outputs
                    if o.dtype is not None and isinstance(o.dtype, type | np.dtype)), default=8)
    counts = [_count(o.shape) for o in node.outputs]
    if counts and all(c is not None for c in counts):
        return max(counts) * itemsize
    if node.op not in _GENERATORS:
        return None
    ins = node.inputs
    if node.op == "ConstantOfShape" and ins and (v := _values(ins[0])) is not None:
        count = _count(v.tolist())
        return None if count is None else count * itemsize
    if node.op in ("Expand", "Tile") and len(ins) > 1 and (v := _values(ins[1])) is not None and ins[0].shape:
        dims = [d for d in ins[0].shape]
        if _count(dims) is None:
            return 1 << 62
        if node.op == "Tile":
            return (_count([a * int(b) for a, b in zip(dims, v)]) or 0) * itemsize
        rank = max(len(dims), len(v))
        a = [1] * (rank - len(dims)) + dims
        b = [1] * (rank - len(v)) + [int(x) for x in v]
        return (_count([max(x, y) for x, y in zip(a, b)]) or 0) * itemsize
    if node.op == "Range" and all((_values(t) is not None) for t in ins[:3]):
        start, limit, delta = (float(_values(t)[0]) for t in ins[:3])
        return int(max(0.0, np.ceil((limit - start) / delta)) if delta else 0) * itemsize
    return 1 << 62  # an unknown output size of an op that may grow it: never folded


def _not_tensor(node: gs.Node) -> bool:
    """Whether ``node`` computes a sequence or an optional (itself, or through a subgraph's outputs)."""
    if node.op in _NOT_TENSOR_OPS or any(isinstance(a, onnx.TypeProto) for a in node.attrs.values()):
        return True
    outs = list(node.outputs) + [t for g in node.attrs.values() if isinstance(g, gs.Graph) for t in g.outputs]
    return any(getattr(t, "type", "tensor_type") not in ("tensor_type", None) for t in outs)


# ops gs.Graph.fold_constants may rewrite around Casts of shape tensors ("cast elision")
_CAST_ELISION_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Equal", "Greater", "Less", "Concat"})


def _nothing_to_fold(graph: gs.Graph) -> bool:
    """True when ``gs.Graph.fold_constants`` would provably leave ``graph`` as it is.

    gs copies the whole graph before it looks for work, which made most of this pass's time in the
    fixed-point sweeps that find nothing. It changes a graph only through: Constant nodes; nodes whose
    (non-omitted) inputs are all constants, or that have none; a Shape whose static dims it can read
    (the whole shape, or a Gather/Slice of it: ``_shape_folds`` mirrors those rules); a Cast(to float) ->
    op -> Cast chain whose op output only Casts read (``_cast_elision_candidate``, gs's own preconditions); subgraphs and functions. When none of these is present, skipping the
    call is exact; where the rules are unclear the answer is "fold".
    """
    if graph.functions:
        return False
    for node in graph.nodes:
        if node.op == "Constant" or any(isinstance(a, gs.Graph) for a in node.attrs.values()):
            return False
        if all(isinstance(t, gs.Constant) for t in node.inputs if not t.is_empty()):
            return False
        if node.op == "Shape":
            if _shape_folds(node):
                return False
        elif node.op in _CAST_ELISION_OPS and _cast_elision_candidate(node, graph):
            return False
    return True


def _cast_elision_candidate(node: gs.Node, graph: gs.Graph) -> bool:
    """gs's own preconditions for eliding Cast(to float) -> op -> Cast: every output read only by Casts (and no
    graph output), some input from a Cast to float."""
    outputs = {id(t) for t in graph.outputs}
    if any(id(t) in outputs or not t.outputs or any(c.op != "Cast" for c in t.outputs) for t in node.outputs):
        return False
    return any(len(t.inputs) == 1 and t.inputs[0].op == "Cast" and t.inputs[0].attrs.get("to") == onnx.TensorProto.FLOAT
               for t in node.inputs)


def _static(dims) -> bool:
    return all(isinstance(d, int) and d >= 0 for d in dims)


def _shape_folds(shape_node: gs.Node) -> bool:
    """Whether gs 0.6 folds this Shape (it ignores start/end), alone or through a Gather/Slice consumer."""
    dims = shape_node.inputs[0].shape
    if dims is None:
        return False
    if _static(dims):
        return True
    out = shape_node.outputs[0]
    for consumer in out.outputs:
        try:
            selected = _selected_dims(consumer, out, dims)
        except Exception:  # gs may fail (or succeed) here: let it decide
            return True
        if selected is not None and _static(selected):
            return True
    return False


def _scalar(t: gs.Constant):
    return t.values if not t.shape else list(t.values)[0]


def _selected_dims(node: gs.Node, shape: gs.Tensor, dims: list) -> list | None:
    """The dims a Gather/Slice of ``shape`` picks, by gs's own reading (its fold_shape_gather and
    fold_shape_slice), or None when gs would not fold it."""
    if not node.inputs or node.inputs[0] is not shape:
        return None
    if node.op == "Gather":
        indices = node.inputs[1]
        if not isinstance(indices, gs.Constant):
            return None
        v = indices.values
        return [dims[int(v)]] if not v.shape else [dims[i] for i in v]
    if node.op != "Slice":
        return None
    ins, attrs = node.inputs, node.attrs
    if len(ins) >= 3:
        if not all(isinstance(t, gs.Constant) for t in ins[1:3]):
            return None
        starts, ends = _scalar(ins[1]), _scalar(ins[2])
    elif "starts" in attrs and "ends" in attrs:
        starts, ends = attrs["starts"][0], attrs["ends"][0]
    else:
        return None
    if len(ins) > 3:
        if not isinstance(ins[3], gs.Constant) or _scalar(ins[3]) != 0:
            return None
    elif "axes" in attrs and attrs["axes"][0] != 0:
        return None
    steps = 1
    if len(ins) > 4:
        if not isinstance(ins[4], gs.Constant):
            return None
        steps = _scalar(ins[4])
    elif "steps" in attrs:
        steps = attrs["steps"][0]
    return list(dims[starts:ends:steps])


@register_pass
class FoldConstantsPass(Pass):
    name = "fold-constants"
    summary = "Evaluate constant subgraphs (incl. Shape arithmetic) with onnxruntime and replace them by constants."

    def __init__(self, size_threshold: int = DEFAULT_SIZE_THRESHOLD) -> None:
        self.size_threshold = size_threshold

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        before = node_signatures(graph)
        threshold = self.size_threshold if ctx.options.fold_size_threshold is None else ctx.options.fold_size_threshold
        too_big = _materialize_small_external(graph, threshold)
        result.stats["sliced-shapes"] = _fix_sliced_shapes(graph)
        def exclude(node: gs.Node) -> bool:
            if _not_tensor(node) or any(id(t) in too_big for t in node.inputs):
                return True
            estimate = estimated_output_bytes(node)
            if estimate is not None and estimate > threshold:
                result.stats["too-large"] += 1
                return True
            return False

        quiet = gs.logger.G_LOGGER.suppress(gs.logger.G_LOGGER.CRITICAL)
        try:
            quiet.__enter__()
            if not _nothing_to_fold(graph):
                graph.fold_constants(error_ok=False, size_threshold=threshold, flatten_subgraphs=False,
                                     should_exclude_node=exclude)
        except Exception as exc:
            message = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
            log.info("constant folding hit an error, retrying per partition: %s", message)
            result.stats["fold-error"] += 1
            result.notes.append(f"evaluation failed, folded per partition instead: {message}")
            try:
                graph.fold_constants(error_ok=True, partitioning="recursive", size_threshold=threshold,
                                     flatten_subgraphs=False, should_exclude_node=exclude)
            except Exception as again:  # folding is an optimization: leave what could not be folded
                message = (str(again).strip().splitlines() or [type(again).__name__])[-1][:300]
                result.notes.append(f"per-partition folding failed too, left unfolded: {message}")
        finally:
            quiet.__exit__(None, None, None)
        toposort(graph.cleanup())
        # attribute-only edits (a full-range Shape losing start/end) leave the signatures alone
        result.changed = nodes_changed(before, node_signatures(graph)) or result.stats["sliced-shapes"]
        result.stats["folded-nodes"] = max(0, sum(before.values()) - len(graph.nodes))
        result.stats = +result.stats
        return result
