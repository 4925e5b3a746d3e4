"""remove-dead-nodes: drop nodes and initializers that no graph output depends on.

Summary: wraps ``gs.Graph.cleanup``. Graph inputs are the model's interface and stay, even when
folding left one unused (code that feeds it by name keeps working); ``remove_inputs=True`` drops
unused ones too, each named in the notes.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from surgery.errors import VerificationError
from surgery.pass_base import Pass, PassContext, PassResult
from surgery.registry import register_pass


def _constants(graph: gs.Graph) -> set[str]:
    return {t.name for n in graph.nodes for t in n.inputs if isinstance(t, gs.Constant)}


@register_pass
class RemoveDeadNodesPass(Pass):
    name = "remove-dead-nodes"
    summary = "Remove nodes and initializers that no graph output depends on (graph inputs stay)."

    def __init__(self, remove_inputs: bool = False) -> None:
        self.remove_inputs = remove_inputs

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        nodes, consts, inputs = len(graph.nodes), _constants(graph), [t.name for t in graph.inputs]
        # Subgraph inputs (a Loop body's iteration count and condition) are part of the op's
        # signature: only the main graph may lose unused inputs.
        graph.cleanup(remove_unused_graph_inputs=False)
        if self.remove_inputs:
            graph.cleanup(remove_unused_graph_inputs=True, recurse_subgraphs=False)
        removed_inputs = [name for name in inputs if name not in {t.name for t in graph.inputs}]
        result.stats["nodes"] = nodes - len(graph.nodes)
        result.stats["initializers"] = len(consts - _constants(graph))
        result.stats["inputs"] = len(removed_inputs)
        result.notes += [f"removed unused graph input '{n}'" for n in removed_inputs]
        result.changed = result.stats["nodes"] + result.stats["initializers"] + result.stats["inputs"]
        result.stats = +result.stats
        return result

    def ensures(self, graph: gs.Graph, ctx: PassContext, result: PassResult) -> None:
        """Every node left writes a tensor something reads (a node, a subgraph, or a graph output)."""
        outputs = {id(t) for t in graph.outputs}
        dead = [n.name for n in graph.nodes if not any(t.outputs or id(t) in outputs for t in n.outputs)]
        if dead:
            raise VerificationError(f"remove-dead-nodes left {len(dead)} node(s) nothing reads: {', '.join(dead[:5])}")
