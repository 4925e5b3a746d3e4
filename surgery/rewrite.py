"""``PatternRewritePass``: the base of every fusion and replacement, built on ``gs.GraphPattern``.

``run`` collects all matches first, skips overlapping and non-convex ones, asks ``check`` for a
whole-match verdict, then applies ``rewrite`` to the survivors and cleans up once.
"""
from __future__ import annotations

from abc import abstractmethod

import onnx_graphsurgeon as gs

from surgery.analysis import NxView
from surgery.graph_utils import NameGen, disconnect
from surgery.pass_base import Pass, PassContext, PassResult


def mapping_nodes(m: gs.PatternMapping) -> list[gs.Node]:
    """Every graph node of a (possibly nested) pattern mapping, in pattern order."""
    nodes: list[gs.Node] = []
    for key in m:
        sub = m[key]
        if sub.onnx_node is not None:
            nodes.append(sub.onnx_node)
        else:
            nodes.extend(mapping_nodes(sub))
    return nodes


def entry_op(pattern: gs.GraphPattern, tensor_index: int = 0) -> str | None:
    """The op of the pattern node that ``GraphPattern.match`` compares a candidate node against
    first (through nested patterns), or None when it cannot be told."""
    try:
        while pattern.op is None:
            tensor, first = pattern._get_inbound(tensor_index)
            if first is None:
                return None
            tensor_index = pattern._get_tensor_index_for_node(first, tensor, is_node_input=True)
            pattern = pattern.nodes[first]
        return pattern.op
    except Exception:  # a gs version with other internals: fall back to trying every node
        return None


def match_all(pattern: gs.GraphPattern, graph: gs.Graph) -> list[gs.PatternMapping]:
    """``pattern.match_all(graph)``, trying only nodes of the pattern's entry op.

    gs tries every node and fails most of them only after some recursion and a few log calls each;
    on a 4000-node model this filter makes matching about ten times faster. Same results, same order.
    """
    op = entry_op(pattern)
    if op is None:
        return pattern.match_all(graph)
    outputs = {t.name for t in graph.outputs}
    found = []
    with graph.node_ids():
        for node in graph.nodes:
            if node.op != op:
                continue
            m = pattern.match(node, from_inbound=True, from_tensor_index=0, mapped_onnx_nodes=set(),
                              onnx_graph_output_tensors=outputs)
            if m is not None:
                found.append(m)
    return found


class PatternRewritePass(Pass):
    """Subclasses provide ``patterns`` (named variants), ``check`` and ``rewrite``.

    ``anchor_ops`` names op types that every instance of the pattern contains; with ``--explain``
    each anchor node not covered by any match is reported with ``unmatched_reason``.
    """

    anchor_ops: tuple[str, ...] = ()

    @abstractmethod
    def patterns(self, ctx: PassContext) -> dict[str, gs.GraphPattern]:
        """Pattern variants by name, tried in order; the first match of a node wins."""

    def check(self, m: gs.PatternMapping, variant: str, graph: gs.Graph, ctx: PassContext) -> str | None:
        """Return None to accept the match, or a short kebab-case rejection reason."""
        return None

    @abstractmethod
    def rewrite(self, graph: gs.Graph, m: gs.PatternMapping, variant: str, ctx: PassContext, names: NameGen) -> list[gs.Node]:
        """Return replacement nodes that produce ``m.outputs`` (the match's own output tensors)."""

    def unmatched_reason(self, node: gs.Node, graph: gs.Graph) -> str:
        return "no-pattern-match"

    def site_name(self, m: gs.PatternMapping) -> str:
        return mapping_nodes(m)[0].name

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        used: set[int] = set()
        accepted: list[tuple[gs.PatternMapping, str]] = []
        view = NxView(graph)
        for variant, pattern in self.patterns(ctx).items():
            with gs.logger.G_LOGGER.suppress(gs.logger.G_LOGGER.CRITICAL):  # GraphPattern logs every probe at INFO
                matches = match_all(pattern, graph)
            for m in matches:
                nodes = mapping_nodes(m)
                ids = {id(n) for n in nodes}
                if ids & used:
                    continue  # the same site already matched an earlier variant or overlaps an accepted match
                result.stats["matched"] += 1
                site = self.site_name(m)
                members = {view.index[id(n)] for n in nodes}
                reason = self.check(m, variant, graph, ctx)
                if reason is None and not view.is_convex(members):
                    reason = "non-convex"
                if reason:
                    result.reject(reason, site)
                    continue
                used |= ids
                accepted.append((m, variant))
        names = NameGen(graph, self.name)
        for m, variant in accepted:
            old = mapping_nodes(m)
            new = self.rewrite(graph, m, variant, ctx, names)
            for node in new:
                node.name = node.name or names()
            disconnect(old)
            graph.nodes.extend(new)
            result.apply(self.site_name_from(old), f"fused:{variant}")
        if accepted:
            graph.cleanup().toposort()
        if self.name in ctx.explain:
            self._explain_unmatched(graph, used, view, result)
        return result

    def site_name_from(self, nodes: list[gs.Node]) -> str:
        return nodes[0].name

    def _explain_unmatched(self, graph: gs.Graph, used: set[int], view: NxView, result: PassResult) -> None:
        reported = {s["site"] for s in result.sites}
        for node in view.nodes:
            if node.op in self.anchor_ops and id(node) not in used and node.name not in reported:
                result.sites.append({"site": node.name, "outcome": "unmatched", "reason": self.unmatched_reason(node, graph)})
