"""Cached analyses over a graph, invalidated whenever a pass changes it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, TypeVar

import onnx_graphsurgeon as gs

if TYPE_CHECKING:
    import networkx as nx

T = TypeVar("T")


class NxView:
    """Data-flow successors over node positions, plus the node list; ``digraph`` is the same graph
    as a networkx DiGraph, built on first use (networkx takes about 0.1 s to import, and the
    rewrite driver only needs ``is_convex``)."""

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
        self._digraph: nx.DiGraph | None = None

    @property
    def digraph(self) -> nx.DiGraph:
        if self._digraph is None:
            import networkx as nx

            g = nx.DiGraph()
            g.add_nodes_from(range(len(self.nodes)))
            g.add_edges_from((i, j) for i, out in enumerate(self.successors) for j in out)
            self._digraph = g
        return self._digraph

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


class AnalysisManager:
    """Caches analyses by type until the graph generation changes."""

    def __init__(self) -> None:
        self.generation = 0
        self._cache: dict[type, tuple[int, object]] = {}

    def get(self, kind: Callable[[gs.Graph], T], graph: gs.Graph) -> T:
        hit = self._cache.get(kind)  # type: ignore[arg-type]
        if hit is not None and hit[0] == self.generation:
            return hit[1]  # type: ignore[return-value]
        value = kind(graph)
        self._cache[kind] = (self.generation, value)  # type: ignore[index]
        return value

    def invalidate(self, preserved: frozenset[str] = frozenset()) -> None:
        kept = {k: (self.generation + 1, v[1]) for k, v in self._cache.items() if k.__name__ in preserved}
        self.generation += 1
        self._cache = kept
