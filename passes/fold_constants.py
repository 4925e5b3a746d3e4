"""fold-constants: evaluate every subgraph whose inputs are all constants, including shape arithmetic.

Summary: wraps ``gs.Graph.fold_constants`` (onnxruntime evaluates the constant subgraphs) with an
explicit size threshold and ``error_ok=False``. If evaluation fails, the error is recorded in the
report (``stats['fold-error']`` and a note) and folding is retried partition by partition, so the
failure is never silent.

Numerics: folded values are computed by onnxruntime on CPU, so they equal what the model computed.
"""
from __future__ import annotations

import logging

import onnx_graphsurgeon as gs

from surgery.io import ExternalValues
from surgery.fingerprint import node_signatures, nodes_changed
from surgery.pass_base import Pass, PassContext, PassResult
from surgery.registry import register_pass

log = logging.getLogger(__name__)

DEFAULT_SIZE_THRESHOLD = 4 << 20  # bytes; larger folded tensors would bloat the model


def _materialize_small_external(graph: gs.Graph, threshold: int) -> set[int]:
    """Load external constants up to ``threshold`` bytes (onnxruntime cannot see external files when
    folding from memory); return the ids of larger ones, whose consumers are left unfolded so big
    weights are never pulled into memory."""
    too_big: set[int] = set()
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant) and isinstance(tensor._values, ExternalValues):
            if tensor._values.nbytes <= threshold:
                tensor.values = tensor._values.load()
            else:
                too_big.add(id(tensor))
    return too_big


@register_pass
class FoldConstantsPass(Pass):
    name = "fold-constants"
    summary = "Evaluate constant subgraphs (incl. Shape arithmetic) with onnxruntime and replace them by constants."

    def __init__(self, size_threshold: int = DEFAULT_SIZE_THRESHOLD) -> None:
        self.size_threshold = size_threshold

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        before = node_signatures(graph)
        threshold = ctx.option("fold_size_threshold", self.size_threshold)
        too_big = _materialize_small_external(graph, threshold)
        exclude = lambda node: any(id(t) in too_big for t in node.inputs)  # noqa: E731
        quiet = gs.logger.G_LOGGER.suppress(gs.logger.G_LOGGER.CRITICAL)
        try:
            quiet.__enter__()
            graph.fold_constants(error_ok=False, size_threshold=threshold, flatten_subgraphs=False,
                                 should_exclude_node=exclude)
        except Exception as exc:
            message = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
            log.warning("constant folding hit an error, retrying per partition: %s", message)
            result.stats["fold-error"] += 1
            result.notes.append(f"evaluation failed, folded per partition instead: {message}")
            graph.fold_constants(error_ok=True, partitioning="recursive", size_threshold=threshold,
                                 flatten_subgraphs=False, should_exclude_node=exclude)
        finally:
            quiet.__exit__(None, None, None)
        graph.cleanup().toposort()
        result.changed = nodes_changed(before, node_signatures(graph))
        result.stats["folded-nodes"] = max(0, sum(before.values()) - len(graph.nodes))
        return result
