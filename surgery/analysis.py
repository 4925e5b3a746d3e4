"""Cached analyses over a graph, invalidated whenever a pass changes it."""
from __future__ import annotations

from typing import Callable, TypeVar

import networkx as nx
import onnx_graphsurgeon as gs

T = TypeVar("T")


class NxView:
    """A networkx DiGraph over node positions (edges follow data flow), plus the node list."""

    def __init__(self, graph: gs.Graph) -> None:
        self.nodes: list[gs.Node] = list(graph.nodes)
        self.index = {id(node): i for i, node in enumerate(self.nodes)}
        self.digraph = nx.DiGraph()
        self.digraph.add_nodes_from(range(len(self.nodes)))
        for i, node in enumerate(self.nodes):
            for out in node.outputs:
                for consumer in out.outputs:
                    j = self.index.get(id(consumer))
                    if j is not None:
                        self.digraph.add_edge(i, j)

    def is_convex(self, members: set[int]) -> bool:
        """True when no path leaves ``members`` and comes back (fusing them would not make a cycle)."""
        frontier = [s for m in members for s in self.digraph.successors(m) if s not in members]
        seen: set[int] = set()
        while frontier:
            n = frontier.pop()
            if n in seen:
                continue
            seen.add(n)
            for s in self.digraph.successors(n):
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
