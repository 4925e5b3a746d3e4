"""merge-transposes: fold two consecutive Transposes into one, or drop both when they cancel.

Summary: ``Transpose(Transpose(x, p1), p2)`` equals ``Transpose(x, q)`` with ``q[j] = p1[p2[j]]``.
When ``q`` is the identity both nodes go and consumers read ``x`` (the second output's name is kept
when it is a graph output). Chains longer than two are merged within one run (``until_stable``).

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

from typing import NamedTuple

import onnx_graphsurgeon as gs

from passes._noop_rules import rank
from surgery.graph_utils import NameGen, bypass, disconnect, producer
from surgery.registry import register_pass
from surgery.rewrite import Match, PatternRewritePass, Reject, State

__all__ = ["MergeTransposesPass"]


class _Merged(NamedTuple):
    """The plan: the composed perm ``q``."""

    perm: list[int]

    @property
    def cancels(self) -> bool:
        return self.perm == list(range(len(self.perm)))


def _perm(node: gs.Node) -> list[int] | None:
    if "perm" in node.attrs:
        return [int(p) for p in node.attrs["perm"]]
    r = rank(node.inputs[0])
    if r is None:
        r = rank(node.outputs[0])
    return None if r is None else list(reversed(range(r)))


@register_pass
class MergeTransposesPass(PatternRewritePass[State, None]):
    """One pattern (``pair``), no variant parameters."""

    name = "merge-transposes"
    summary = "Merge consecutive Transposes into one, or remove both when their perms cancel."
    anchor_ops = ("Transpose",)
    until_stable = True

    def patterns(self, state: State) -> dict[str, tuple[gs.GraphPattern, None]]:
        p = gs.GraphPattern()
        x = p.variable()
        t = p.add("first", "Transpose", inputs=[x])
        y = p.add("second", "Transpose", inputs=[t])
        p.set_output_tensors([y])
        return {"pair": (p, None)}

    def check(self, m: Match[None], state: State) -> _Merged | Reject:
        first, second = m.get("first"), m.get("second")
        p1, p2 = _perm(first), _perm(second)
        if p1 is None or p2 is None:
            return Reject("rank-unknown", (first if p1 is None else second).inputs[0])
        if len(p1) != len(p2):
            return Reject("rank-mismatch")
        return _Merged([p1[j] for j in p2])

    def rewrite(self, m: Match[None], plan: _Merged, state: State, names: NameGen) -> list[gs.Node]:
        first, second = m.get("first"), m.get("second")
        x = first.inputs[0]  # live: an earlier rewrite may have re-pointed it
        if plan.cancels:
            disconnect([first])
            bypass(second, state.graph, x)
            return []
        return [gs.Node("Transpose", name=names(), attrs={"perm": plan.perm}, inputs=[x], outputs=[second.outputs[0]])]

    def unmatched_reason(self, node: gs.Node, state: State) -> str:
        src = producer(node.inputs[0]) if node.inputs else None
        if src is None or src.op != "Transpose":
            return "no-transpose-input"
        if src.outputs[0] in state.graph.outputs:
            return "intermediate-is-output"
        return "intermediate-shared" if len(src.outputs[0].outputs) > 1 else "no-pattern-match"
