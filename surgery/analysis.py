"""Graph analyses used by the rewrite driver."""
from __future__ import annotations

import onnx_graphsurgeon as gs


class Dataflow:
    """Data-flow successors over node positions, plus the node list and each node's position."""

    def __init__(self, graph: gs.Graph) -> None:
        self.nodes: list[gs.Node] = list(graph.nodes)
        self.index = {id(node): i for i, node in enumerate(self.nodes)}
        index = self.index
        succ: list[list[int]] = []
        for node in self.nodes:
            out: list[int] = []
            seen: set[int] = set()
            for t in node.outputs:
                for consumer in t.outputs:
                    j = index.get(id(consumer))
                    if j is not None and j not in seen:
                        seen.add(j)
                        out.append(j)
            succ.append(out)
        self.successors = succ

    def is_convex(self, members: set[int]) -> bool:
        """True when no path leaves ``members`` and comes back (fusing them would not make a cycle)."""
        succ = self.successors
        frontier = [s for m in members for s in succ[m] if s not in members]
        seen: set[int] = set()
        while frontier:
            n = frontier.pop()
            if n in seen:
                continue
            seen.add(n)
            for s in succ[n]:
                if s in members:
                    return False
                frontier.append(s)
        return True
