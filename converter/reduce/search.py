"""The search behind ``surgery reduce``: bisect a window, then delta-debug it down to a 1-minimal node set.

``fails(nodes)`` answers whether a candidate node set (node indices, ascending) still fails the way the
whole model does. The search only ever moves to sets it has seen fail, so whatever it returns fails;
it is 1-minimal: removing any single node from it makes ``fails`` answer False. Every answer is
cached, so no set is probed twice, and the order of probes depends only on the inputs: the result is
deterministic whenever ``fails`` is.
"""
from __future__ import annotations

from typing import Callable, Sequence

Nodes = tuple[int, ...]


class Search:
    """Caching wrapper around a ``fails`` predicate; ``probes`` counts the distinct sets tried."""

    def __init__(self, fails: Callable[[Nodes], bool], on_probe: Callable[[int, Nodes, bool], None] | None = None) -> None:
        self._fails = fails
        self._seen: dict[Nodes, bool] = {}
        self._on_probe = on_probe

    @property
    def probes(self) -> int:
        return len(self._seen)

    def fails(self, nodes: Sequence[int]) -> bool:
        key = tuple(sorted(nodes))
        if not key:
            return False
        if key not in self._seen:
            self._seen[key] = bool(self._fails(key))
            if self._on_probe is not None:
                self._on_probe(len(self._seen), key, self._seen[key])
        return self._seen[key]


def bisect_window(search: Search, nodes: Nodes) -> Nodes:
    """The shortest failing suffix of ``nodes`` found by binary search, then its shortest failing prefix.

    Failure need not be monotone in the cut point; binary search still only lands on failing windows.
    """
    lo, hi = 0, len(nodes)  # nodes[lo:] fails; nodes[hi:] is not known to
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if search.fails(nodes[mid:]):
            lo = mid
        else:
            hi = mid
    window = nodes[lo:]
    lo, hi = 0, len(window)  # window[:hi] fails; window[:lo] is not known to
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if search.fails(window[:mid]):
            hi = mid
        else:
            lo = mid
    return window[:hi]


def delta_debug(search: Search, nodes: Nodes) -> Nodes:
    """Remove chunks (halves, quarters, ... single nodes) while the rest still fails (ddmin on complements)."""
    current = tuple(nodes)
    parts = 2
    while len(current) > 1:
        size = -(-len(current) // parts)  # ceil
        chunks = [current[i:i + size] for i in range(0, len(current), size)]
        for chunk in chunks:
            rest = tuple(n for n in current if n not in chunk)
            if search.fails(rest):
                current = rest
                parts = max(parts - 1, 2)
                break
        else:
            if size == 1:
                return current  # no single node can go: 1-minimal
            parts = min(parts * 2, len(current))
    return current


def minimize(search: Search, nodes: Nodes, seeds: Sequence[Nodes] = ()) -> Nodes:
    """A 1-minimal failing subset of ``nodes`` (which must fail): try ``seeds`` (sets the failure
    names, say) first, else bisect a window; then delta-debug."""
    start = next((tuple(sorted(s)) for s in seeds if s and search.fails(s)), None)
    if start is None:
        start = bisect_window(search, nodes)
    return delta_debug(search, start)
