"""merge-transposes: fold two consecutive Transposes into one, or drop both when they cancel.

Summary: ``Transpose(Transpose(x, p1), p2)`` equals ``Transpose(x, q)`` with ``q[j] = p1[p2[j]]``.
When ``q`` is the identity both nodes go and consumers read ``x`` (the second output's name is kept
when it is a graph output). Chains longer than two are merged within one run.

Matches:
    x → Transpose(p1) → t → Transpose(p2) → y   ⇒   x → Transpose(q) → y    (q ≠ identity)
                                                ⇒   x as y                  (q = identity)

Requires: ``t`` has no consumer besides the second Transpose and is not a graph output (the pattern
only matches then; ``--explain`` names those sites as ``intermediate-shared`` / ``intermediate-is-output``).

Rejects:
    rank-unknown: a Transpose without ``perm`` (reverse order) whose input rank is unknown.
    rank-mismatch: the two perms have different lengths (malformed model).

Numerics: exact (data movement only).
"""
from __future__ import annotations

import logging

import onnx_graphsurgeon as gs

from passes._noop_rules import rank
from passes._repeat import run_until_stable
from surgery.graph_utils import NameGen, bypass, disconnect, producer
from surgery.pass_base import PassContext, PassResult
from surgery.registry import register_pass
from surgery.rewrite import PatternRewritePass, mapping_nodes

__all__ = ["MergeTransposesPass"]

log = logging.getLogger(__name__)


def _perm(node: gs.Node) -> list[int] | None:
    if "perm" in node.attrs:
        return [int(p) for p in node.attrs["perm"]]
    r = rank(node.inputs[0])
    if r is None:
        r = rank(node.outputs[0])
    return None if r is None else list(reversed(range(r)))


def _composed(first: gs.Node, second: gs.Node) -> list[int] | str:
    p1, p2 = _perm(first), _perm(second)
    if p1 is None or p2 is None:
        return "rank-unknown"
    if len(p1) != len(p2):
        return "rank-mismatch"
    return [p1[j] for j in p2]


@register_pass
class MergeTransposesPass(PatternRewritePass):
    name = "merge-transposes"
    summary = "Merge consecutive Transposes into one, or remove both when their perms cancel."
    anchor_ops = ("Transpose",)

    def patterns(self, ctx: PassContext) -> dict[str, gs.GraphPattern]:
        p = gs.GraphPattern()
        x = p.variable()
        t = p.add("first", "Transpose", inputs=[x])
        y = p.add("second", "Transpose", inputs=[t])
        p.set_output_tensors([y])
        return {"pair": p}

    def check(self, m: gs.PatternMapping, variant: str, graph: gs.Graph, ctx: PassContext) -> str | None:
        q = _composed(m.get("first"), m.get("second"))
        return q if isinstance(q, str) else None

    def rewrite(self, graph: gs.Graph, m: gs.PatternMapping, variant: str, ctx: PassContext, names: NameGen) -> list[gs.Node]:
        first, second = mapping_nodes(m)
        q = _composed(first, second)
        assert not isinstance(q, str)  # check() accepted this match
        x = first.inputs[0]  # live: an earlier rewrite may have re-pointed it
        if q == list(range(len(q))):
            disconnect([first])
            bypass(second, graph, x)
            return []
        return [gs.Node("Transpose", name=names(), attrs={"perm": q}, inputs=[x], outputs=[second.outputs[0]])]

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        return run_until_stable(super().run, graph, ctx)

    def unmatched_reason(self, node: gs.Node, graph: gs.Graph) -> str:
        src = producer(node.inputs[0]) if node.inputs else None
        if src is None or src.op != "Transpose":
            return "no-transpose-input"
        if src.outputs[0] in graph.outputs:
            return "intermediate-is-output"
        return "intermediate-shared" if len(src.outputs[0].outputs) > 1 else "no-pattern-match"
