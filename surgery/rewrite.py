"""``PatternRewritePass``: the base of every fusion and replacement, built on ``gs.GraphPattern``.

``run`` collects all matches first, skips overlapping and non-convex ones, asks ``check`` for a
whole-match verdict, raises the opset once if the pass needs it, then applies ``rewrite`` to the
survivors and cleans up once.

``NodeRewritePass``: the same collect-then-apply contract for rewrites of one node at a time, judged
by op type instead of a pattern.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import onnx_graphsurgeon as gs

from surgery.analysis import NxView
from surgery.errors import UserInputError
from surgery.graph_utils import NameGen, disconnect, toposort
from surgery.matching import entry_op, match_all  # noqa: F401  (re-exported; run() matches with it)
from surgery.opset import raise_opset, raise_refusal
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


class PatternRewritePass(Pass):
    """Subclasses provide ``patterns`` (named variants), ``check`` and ``rewrite``.

    ``anchor_ops`` names op types that every instance of the pattern contains; with ``--explain``
    each anchor node not covered by any match is reported with ``unmatched_reason``.
    ``emits``, when set, lists the values ``ctx.option("emit")`` may take; ``run`` refuses others.
    ``required_opset`` names the default-domain opset the rewrites need: ``run`` raises the graph to it
    once, before the first rewrite, and only when some match is accepted.
    """

    anchor_ops: ClassVar[tuple[str, ...]] = ()
    emits: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def patterns(self, ctx: PassContext) -> dict[str, gs.GraphPattern]:
        """Pattern variants by name, tried in order; the first match of a node wins."""

    def check(self, m: gs.PatternMapping, variant: str, graph: gs.Graph, ctx: PassContext) -> str | None:
        """Return None to accept the match, or a short kebab-case rejection reason."""
        return None

    @abstractmethod
    def rewrite(self, graph: gs.Graph, m: gs.PatternMapping, variant: str, ctx: PassContext, names: NameGen) -> list[gs.Node]:
        """Return replacement nodes that produce ``m.outputs`` (the match's own output tensors)."""

    def required_opset(self, ctx: PassContext) -> int | None:
        """The default-domain opset the replacement ops need, or None when any opset will do."""
        return None

    def emit(self, ctx: PassContext) -> str:
        return ctx.option("emit", "onnx")

    def unmatched_reason(self, node: gs.Node, graph: gs.Graph) -> str:
        return "no-pattern-match"

    def site_name(self, m: gs.PatternMapping) -> str:
        return mapping_nodes(m)[0].name

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        if self.emits and self.emit(ctx) not in self.emits:
            raise UserInputError(f"{self.name}: emit must be one of {', '.join(self.emits)}, got {self.emit(ctx)!r}")
        result = PassResult()
        used: set[int] = set()
        accepted: list[tuple[gs.PatternMapping, str]] = []
        view = NxView(graph)
        target = self.required_opset(ctx)
        raise_to = target if target is not None and int(graph.opset) < target else None
        refusal: str | None = None  # of the dry run; None until the first match that needs it
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
                if reason is None and raise_to is not None:
                    refusal = self._dry_run_opset_raise(graph, raise_to, result) if refusal is None else refusal
                    reason = "opset-raise-refused" if refusal else None
                if reason:
                    result.reject(reason, site)
                    continue
                used |= ids
                accepted.append((m, variant))
        if accepted and raise_to is not None:
            self._raise_opset(graph, raise_to, result)
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

    def _dry_run_opset_raise(self, graph: gs.Graph, target: int, result: PassResult) -> str:
        """Ask whether the raise would succeed without doing it, so matching never sees a half-converted
        graph; '' when it would."""
        refusal = raise_refusal(graph, target) or ""
        if refusal:
            result.notes.append(f"raising the opset to {target} was refused: {refusal}")
        return refusal

    def _raise_opset(self, graph: gs.Graph, target: int, result: PassResult) -> None:
        before = int(graph.opset)
        refusal = raise_opset(graph, target)
        if refusal:
            raise RuntimeError(f"opset raise refused after a successful dry run: {refusal}")
        result.notes.append(f"opset raised {before} -> {target} for {self.name}")

    def site_name_from(self, nodes: list[gs.Node]) -> str:
        return nodes[0].name

    def _explain_unmatched(self, graph: gs.Graph, used: set[int], view: NxView, result: PassResult) -> None:
        reported = {s["site"] for s in result.sites}
        for node in view.nodes:
            if node.op in self.anchor_ops and id(node) not in used and node.name not in reported:
                result.sites.append({"site": node.name, "outcome": "unmatched", "reason": self.unmatched_reason(node, graph)})


class NodeRewritePass(Pass):
    """Subclasses provide ``ops``, ``decide`` and ``rewrite`` for rewrites of one node at a time.

    ``run`` asks ``decide`` about every node of the main graph whose op is in ``ops`` and whose domain
    is in ``domains``, rejecting or collecting it, before anything changes; it then applies ``rewrite``
    to each collected node, disconnects the node and runs one ``cleanup`` and toposort.
    """

    ops: ClassVar[tuple[str, ...]] = ()
    domains: ClassVar[tuple[str, ...]] = ("", "ai.onnx")

    @abstractmethod
    def decide(self, node: gs.Node, graph: gs.Graph, ctx: PassContext) -> Any:
        """Judge one candidate before the graph changes.

        Returns:
            A kebab-case rejection reason (str), None when the node is no candidate after all (no stat,
            no site), or anything else: the plan handed to ``rewrite``.
        """

    @abstractmethod
    def rewrite(self, node: gs.Node, plan: Any, graph: gs.Graph, ctx: PassContext,
                names: NameGen) -> tuple[list[gs.Node], str]:
        """Build the replacement of ``node``.

        Returns:
            The new nodes, which write the node's own output tensors (``run`` adds them to the graph
            in this order), and the outcome label of the site. Listing ``node`` itself keeps it,
            edited in place; otherwise ``run`` disconnects it.
        """

    def record(self, result: PassResult, plan: Any) -> None:
        """Add stats of an applied rewrite beyond ``applied`` (none by default)."""

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        accepted: list[tuple[gs.Node, Any]] = []
        for node in graph.nodes:
            if node.op not in self.ops or (node.domain or "") not in self.domains:
                continue
            plan = self.decide(node, graph, ctx)
            if isinstance(plan, str):
                result.reject(plan, node.name)
            elif plan is not None:
                accepted.append((node, plan))
        names = NameGen(graph, self.name)
        for node, plan in accepted:
            new, outcome = self.rewrite(node, plan, graph, ctx, names)
            if any(n is node for n in new):
                new = [n for n in new if n is not node]
            else:
                disconnect([node])
            graph.nodes.extend(new)
            result.apply(node.name, outcome)
            self.record(result, plan)
        if accepted:
            toposort(graph.cleanup())
        return result
