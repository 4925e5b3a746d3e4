"""Structural fingerprints: count what a pass changed without trusting node counts."""
from __future__ import annotations

from collections import Counter

import onnx_graphsurgeon as gs


def node_signatures(graph: gs.Graph) -> Counter:
    """Multiset of (op, input names, output names) over all nodes."""
    return Counter(
        (n.op, tuple(t.name for t in n.inputs), tuple(t.name for t in n.outputs)) for n in graph.nodes
    )


def nodes_changed(before: Counter, after: Counter) -> int:
    """Number of node signatures that disappeared or appeared."""
    return sum((before - after).values()) + sum((after - before).values())
