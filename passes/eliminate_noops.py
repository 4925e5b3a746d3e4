"""eliminate-noops: remove nodes whose first output equals one of their inputs.

Summary: each node of the main graph is judged by the per-op rule in ``passes._noop_rules``; every
no-op is then bypassed with ``surgery.graph_utils.bypass`` (graph-output names survive: the producer
of the kept tensor is re-pointed, or an Identity is left where nothing else can carry the name).

Matches (``x → op → y  ⇒  x`` as ``y``):
    Identity; Dropout in inference (no training_mode, mask unused); Cast to the input's own type;
    Reshape/Flatten/Squeeze/Unsqueeze whose output shape, computed from a fully static input shape,
    equals it; a Reshape whose constant target keeps every dim of its input's rank (0 = copy, the static
    dim, at most one -1: ``[0, 0, -1]`` on a rank-3 tensor); Transpose with the identity perm; Expand to a shape the input already has; Tile with
    all-ones repeats; one-input Concat; Slice over the full range with step 1; Pad with all-zero pads;
    ``x*1``, ``1*x``, ``x/1``, ``x+0``, ``0+x``, ``x-0`` where the constant does not broadcast ``x``.

Requires: nothing; rules that need the input shape simply do not fire without it (run infer-shapes).

Rejects:
    output-passthrough: an Identity from a graph input, constant or other graph output to a graph
        output (removing it would only insert another Identity).
    training-mode: Dropout with a training_mode input that is not a constant false (or is_test=0).
    mask-used: Dropout whose mask output is consumed or is a graph output.
    broadcasts: the neutral constant of Mul/Div/Add/Sub could broadcast the other operand.
    shape-unknown: the other operand of Mul/Div/Add/Sub has no known shape.

Numerics: exact, except that ``x+0`` turns ``-0.0`` into ``+0.0`` (equal under comparison).
Only nodes of the main graph in the default ONNX domain are considered; subgraphs are left alone.
"""
from __future__ import annotations


import onnx_graphsurgeon as gs

from passes._noop_rules import RULES
from surgery.graph_utils import bypass, bypass_needs_identity
from surgery.pass_base import Pass, PassContext, PassResult
from surgery.registry import register_pass

__all__ = ["EliminateNoopsPass"]

_DEFAULT_DOMAINS = ("", "ai.onnx")


@register_pass
class EliminateNoopsPass(Pass):
    name = "eliminate-noops"
    summary = "Remove Identity, inference Dropout, same-type Cast and other nodes that pass their input through unchanged."

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        """Sweep until nothing is left to remove: bypassing one no-op can make the next provable (a Reshape
        whose input shape is known only once the Reshape before it is gone), so one run is idempotent.
        Removals accumulate; rejections are those of the last sweep, the sites still in the graph."""
        total = PassResult()
        while True:
            sweep = self._sweep(graph)
            total.changed += sweep.changed
            total.stats.update({k: v for k, v in sweep.stats.items() if not k.startswith("rejected:")})
            total.sites += [s for s in sweep.sites if s["outcome"] != "rejected"]
            if not sweep.changed:
                total.stats.update({k: v for k, v in sweep.stats.items() if k.startswith("rejected:")})
                total.sites += [s for s in sweep.sites if s["outcome"] == "rejected"]
                return total

    def _sweep(self, graph: gs.Graph) -> PassResult:
        result = PassResult()
        found: list[tuple[gs.Node, int]] = []
        for node in graph.nodes:
            rule = RULES.get(node.op)
            if rule is None or (node.domain or "") not in _DEFAULT_DOMAINS or not node.inputs or not node.outputs:
                continue
            verdict = rule(node, graph)
            if isinstance(verdict, str):
                result.reject(verdict, node.name)
            elif verdict is not None:
                found.append((node, verdict))
        for node, keep_index in found:
            # Read the kept tensor now: an earlier bypass may have renamed or replaced it.
            keep = node.inputs[keep_index]
            if node.op == "Identity" and bypass_needs_identity(node, graph, keep):
                result.reject("output-passthrough", node.name)
                continue
            bypass(node, graph, keep)
            result.apply(node.name, node.op)
            result.stats[node.op] += 1
        if result.changed:
            graph.cleanup().toposort()
        return result
