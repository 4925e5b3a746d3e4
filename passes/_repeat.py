"""Run a chain-shortening pattern pass until it finds nothing, so one run of it is idempotent.

A pattern of two adjacent nodes matches only every other pair of a longer chain (overlapping
matches are skipped), so a single sweep would leave work for the next run.
"""
from __future__ import annotations

from typing import Callable

import onnx_graphsurgeon as gs

from surgery.pass_base import PassContext, PassResult


def run_until_stable(sweep: Callable[[gs.Graph, PassContext], PassResult], graph: gs.Graph, ctx: PassContext) -> PassResult:
    """Repeat ``sweep`` while it changes something and merge the results.

    Every applied rewrite must remove at least one node, which bounds the number of sweeps by the
    node count. Applications accumulate over sweeps; rejections and unmatched sites are those of the
    last sweep, which are exactly the sites still left in the graph.
    """
    total = PassResult()
    while True:
        budget = len(graph.nodes)
        with gs.logger.G_LOGGER.suppress(gs.logger.G_LOGGER.CRITICAL):  # GraphPattern logs every attempt at INFO
            r = sweep(graph, ctx)
        total.changed += r.changed
        total.notes += r.notes
        final = not r.changed
        for site in r.sites:
            if final or site["outcome"] not in ("rejected", "unmatched"):
                total.sites.append(site)
        for key, value in r.stats.items():
            if key == "applied" or key.startswith("fused:") or final:
                total.stats[key] += value
        total.stats["matched"] += 0 if final else r.stats["applied"]
        if final:
            total.stats = +total.stats
            return total
        if len(graph.nodes) >= budget:
            raise AssertionError(f"a sweep applied {r.changed} rewrite(s) without removing a node")
