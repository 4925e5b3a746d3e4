"""remove-nodes: delete user-chosen nodes, wiring each one's first input to its first output.

Summary: ``ctx.options["remove_names"]`` and ``ctx.options["remove_ops"]`` (lists) select nodes of the
main graph by name or op type. Each selected node is bypassed like onnx-graphsurgeon's RemoveNode
example: consumers of its first output read its first input instead (a graph output keeps its name).
This changes the model's function on purpose, so only pass-through-shaped nodes are accepted.
Every removed node is named in the notes; names that match nothing are noted too.

Matches: ``x → op(x, consts...) → y  ⇒  x`` as ``y``.

Requires: nothing; with nothing configured the pass changes nothing.

Rejects:
    no-data-input: the node has no input or no output to connect.
    multiple-data-inputs: more than one non-constant input (the others would be silently dropped).
    extra-output-used: an output other than the first is consumed or is a graph output.
    dtype-mismatch: first input and first output have different known dtypes.
    shape-mismatch: first input and first output have known shapes that differ (rank or a static dim).
    output-passthrough: an Identity from a graph input, constant or other graph output to a graph
        output (removing it would insert another Identity).

Numerics: intentionally changed: the removed node no longer computes anything.
"""
from __future__ import annotations


import onnx_graphsurgeon as gs

from surgery.graph_utils import bypass, bypass_needs_identity
from surgery.pass_base import Pass, PassContext, PassResult
from surgery.registry import register_pass

__all__ = ["RemoveNodesPass"]


def _shapes_differ(a: gs.Tensor, b: gs.Tensor) -> bool:
    if a.shape is None or b.shape is None:
        return False
    if len(a.shape) != len(b.shape):
        return True
    return any(isinstance(x, int) and isinstance(y, int) and x >= 0 and y >= 0 and x != y for x, y in zip(a.shape, b.shape))


def _rejection(node: gs.Node, graph: gs.Graph) -> str | None:
    if not node.inputs or not node.outputs or not node.inputs[0].name:
        return "no-data-input"
    if sum(1 for t in node.inputs if t.name and not isinstance(t, gs.Constant)) > 1:
        return "multiple-data-inputs"
    if any(t.name and (t.outputs or t in graph.outputs) for t in node.outputs[1:]):
        return "extra-output-used"
    src, out = node.inputs[0], node.outputs[0]
    if src.dtype is not None and out.dtype is not None and src.dtype != out.dtype:
        return "dtype-mismatch"
    if _shapes_differ(src, out):
        return "shape-mismatch"
    if node.op == "Identity" and bypass_needs_identity(node, graph, src):
        return "output-passthrough"
    return None


@register_pass
class RemoveNodesPass(Pass):
    name = "remove-nodes"
    summary = "Remove nodes selected by name (remove_names) or op type (remove_ops), rewiring input to output."

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        names = list(ctx.options.remove_names)
        ops = set(ctx.options.remove_ops)
        if not names and not ops:
            return result
        wanted = set(names)
        selected = [n for n in graph.nodes if n.name in wanted or n.op in ops]
        found = {n.name for n in selected}
        for name in names:
            if name not in found:
                result.stats["not-found"] += 1
                result.notes.append(f"no node named '{name}'")
        accepted = []
        for node in selected:
            reason = _rejection(node, graph)
            if reason:
                result.reject(reason, node.name)
                result.notes.append(f"kept '{node.name}' ({node.op}): {reason}")
            else:
                accepted.append(node)
        for node in accepted:
            # Re-check at apply time: removing an earlier node may have made this one a graph passthrough.
            if node.op == "Identity" and bypass_needs_identity(node, graph, node.inputs[0]):
                result.reject("output-passthrough", node.name)
                continue
            bypass(node, graph, node.inputs[0])
            result.apply(node.name, "removed")
            result.notes.append(f"removed '{node.name}' ({node.op})")
        if result.changed:
            graph.cleanup().toposort()
        return result
