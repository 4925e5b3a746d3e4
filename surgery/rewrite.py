"""The rewrite contract shared by every fusion and replacement.

A rewrite pass is written as four steps; the driver here does the rest (collect every candidate
before the graph changes, skip overlapping and non-convex matches, raise the opset once, apply, clean
up once, report each site):

``prepare(graph, ctx) -> State``
    Everything derived from the whole graph (the opset, which variants can occur, the emit). Returned,
    never stored on the pass: a pass instance keeps no graph state between or during runs.
``check(candidate, state) -> Plan | Reject``
    Judge one candidate (a ``Match`` of a pattern, or one node) before anything changes. The plan
    carries what the analysis found, so ``rewrite`` never repeats it; a ``Reject`` names the reason
    and, where one is to blame, the offending tensor. ``NodeRewritePass.check`` may also return None
    (not a candidate after all: no stat, no site).
``rewrite(candidate, plan, state, names) -> list[gs.Node]``
    Build the replacement nodes, which write the candidate's own output tensors.
``site(nodes) -> str``
    The name a report uses for the site (the first node by default).

``PatternRewritePass`` finds candidates with ``gs.GraphPattern`` (``patterns(state)`` gives each
pattern a name and a typed variant); ``NodeRewritePass`` takes every node whose op is in ``ops``.
"""
from __future__ import annotations

from abc import abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

import onnx_graphsurgeon as gs

from surgery.analysis import Dataflow
from surgery.graph_utils import NameGen, disconnect, toposort
from surgery.matching import OpIndex, match_all
from surgery.opset import raise_opset, raise_refusal
from surgery.pass_base import Pass, PassContext, PassResult


class Reject(NamedTuple):
    """Why a candidate is not rewritten: a kebab-case reason and, when one is to blame, the tensor."""

    reason: str
    tensor: gs.Tensor | None = None


@dataclass
class State:
    """What ``prepare`` derived from the graph; subclass it (as a dataclass) to add fields.

    ``notes`` collects remarks and ``stats`` extra counts any step wants in the pass's report.
    """

    graph: gs.Graph
    ctx: PassContext
    notes: list[str] = field(default_factory=list, kw_only=True)
    stats: Counter = field(default_factory=Counter, kw_only=True)

    @property
    def emit(self) -> str:
        return self.ctx.options.emit


S = TypeVar("S", bound=State)
V = TypeVar("V")


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


class Match(Generic[V]):
    """One match of a pattern variant: the mapping, the variant's name and its typed parameters."""

    def __init__(self, mapping: gs.PatternMapping, key: str, variant: V) -> None:
        self.mapping, self.key, self.variant = mapping, key, variant
        self.nodes = mapping_nodes(mapping)

    @property
    def inputs(self) -> list[gs.Tensor]:
        return self.mapping.inputs

    @property
    def outputs(self) -> list[gs.Tensor]:
        return self.mapping.outputs

    @property
    def constants(self) -> dict[str, gs.Tensor]:
        return self.mapping.constants

    def get(self, name: str) -> gs.Node:
        """The graph node bound to pattern node ``name``."""
        return self.mapping.get(name)

    def has(self, name: str) -> bool:
        return name in self.mapping


class _RewriteDriver(Pass):
    """What both rewrite bases share: ``prepare``, the site hook, reporting and the apply loop."""

    def prepare(self, graph: gs.Graph, ctx: PassContext) -> State:
        return State(graph, ctx)

    @abstractmethod
    def rewrite(self, candidate: Any, plan: Any, state: Any, names: NameGen) -> list[gs.Node]:
        """Replacement nodes writing the candidate's own output tensors."""

    def site(self, nodes: list[gs.Node]) -> str:
        return nodes[0].name

    def _reject(self, result: PassResult, found: Reject, site: str) -> None:
        result.reject(found.reason, site, found.tensor.name if found.tensor is not None else None)

    def _apply(self, graph: gs.Graph, accepted: list[tuple[Any, Any, list[gs.Node], str]], state: State,
               result: PassResult) -> None:
        names = NameGen(graph, self.name)
        for candidate, plan, old, outcome in accepted:
            new = self.rewrite(candidate, plan, state, names)
            for node in new:
                node.name = node.name or names()
            kept = {id(n) for n in new} & {id(n) for n in old}
            disconnect([n for n in old if id(n) not in kept])
            graph.nodes.extend(n for n in new if id(n) not in kept)
            result.apply(self.site(old), outcome)
        if accepted:
            toposort(graph.cleanup())
        result.notes.extend(state.notes)
        result.stats.update(state.stats)


class PatternRewritePass(_RewriteDriver, Generic[S, V]):
    """Rewrites of ``gs.GraphPattern`` matches.

    ``anchor_ops`` names op types every instance of the pattern contains; with ``--explain`` each
    anchor node no match covered is reported with ``unmatched_reason``. ``required_opset`` names the
    default-domain opset the replacements need: the graph is raised to it once, before the first
    rewrite, and only when some match is accepted. ``until_stable`` repeats the sweep until it applies
    nothing (see ``run``).
    """

    anchor_ops: ClassVar[tuple[str, ...]] = ()
    # Chain-shortening pair patterns set it: overlapping matches are skipped, so one sweep merges only
    # every other pair of a longer chain; repeating makes one run complete and idempotent.
    until_stable: ClassVar[bool] = False

    @abstractmethod
    def patterns(self, state: S) -> dict[str, tuple[gs.GraphPattern, V]]:
        """Pattern variants by name with their typed parameters, tried in order; the first match of a node wins."""

    @abstractmethod
    def check(self, m: Match[V], state: S) -> Any:
        """The plan handed to ``rewrite``, or a ``Reject``."""

    def required_opset(self, state: S) -> int | None:
        return None

    def unmatched_reason(self, node: gs.Node, state: S) -> str:
        return "no-pattern-match"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        """One sweep; with ``until_stable``, sweeps until one applies nothing, merging their results.

        Every applied rewrite must then remove at least one node, which bounds the number of sweeps by
        the node count. Applications accumulate over sweeps; rejections and unmatched sites are those
        of the last sweep, which are exactly the sites still left in the graph.
        """
        if not self.until_stable:
            return self._sweep(graph, ctx)
        total = PassResult()
        while True:
            budget = len(graph.nodes)
            r = self._sweep(graph, ctx)
            final = not r.changed
            total.changed += r.changed
            total.notes += r.notes
            total.sites += [s for s in r.sites if final or s["outcome"] not in ("rejected", "unmatched")]
            for key, value in r.stats.items():
                if key == "applied" or final:
                    total.stats[key] += value
            if final:
                total.stats = +total.stats
                return total
            total.stats["matched"] += r.stats["applied"]  # a rejected match is judged again next sweep
            if len(graph.nodes) >= budget:
                raise AssertionError(f"{self.name}: a sweep applied {r.changed} rewrite(s) without removing a node")

    def _sweep(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        state = self.prepare(graph, ctx)
        result = PassResult()
        used: set[int] = set()
        accepted: list[tuple[Match, Any, list[gs.Node], str]] = []
        flow, index = Dataflow(graph), OpIndex(graph)
        target = self.required_opset(state)
        raise_to = target if target is not None and int(graph.opset) < target else None
        refusal: str | None = None  # of the dry run; None until the first match that needs it
        for key, (pattern, variant) in self.patterns(state).items():
            with gs.logger.G_LOGGER.suppress(gs.logger.G_LOGGER.CRITICAL):  # GraphPattern logs every probe at INFO
                mappings = match_all(pattern, graph, index)
            for mapping in mappings:
                m = Match(mapping, key, variant)
                ids = {id(n) for n in m.nodes}
                if ids & used:
                    continue  # the same site already matched an earlier variant or overlaps an accepted match
                result.stats["matched"] += 1
                plan = self.check(m, state)
                if not isinstance(plan, Reject) and not flow.is_convex({flow.index[i] for i in ids}):
                    plan = Reject("non-convex")
                if not isinstance(plan, Reject) and raise_to is not None:
                    refusal = self._dry_run_opset_raise(graph, raise_to, result) if refusal is None else refusal
                    plan = Reject("opset-raise-refused") if refusal else plan
                if isinstance(plan, Reject):
                    self._reject(result, plan, self.site(m.nodes))
                    continue
                used |= ids
                accepted.append((m, plan, m.nodes, f"fused:{key}"))
        if accepted and raise_to is not None:
            self._raise_opset(graph, raise_to, result)
        self._apply(graph, accepted, state, result)
        if self.name in ctx.explain:
            self._explain_unmatched(used, flow, state, result)
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

    def _explain_unmatched(self, used: set[int], flow: Dataflow, state: S, result: PassResult) -> None:
        reported = {s["site"] for s in result.sites}
        for node in flow.nodes:
            if node.op in self.anchor_ops and id(node) not in used and node.name not in reported:
                result.sites.append({"site": node.name, "outcome": "unmatched", "reason": self.unmatched_reason(node, state)})


class NodeRewritePass(_RewriteDriver, Generic[S]):
    """Rewrites of one node at a time, chosen by op type (``ops``) and domain (``domains``).

    ``rewrite`` may list the candidate node itself among the new nodes to keep it, edited in place;
    otherwise the driver disconnects it. ``outcome`` labels an applied site in the report.
    """

    ops: ClassVar[tuple[str, ...]] = ()
    domains: ClassVar[tuple[str, ...]] = ("", "ai.onnx")

    @abstractmethod
    def check(self, node: gs.Node, state: S) -> Any:
        """The plan handed to ``rewrite``, a ``Reject``, or None when the node is no candidate after all."""

    def outcome(self, node: gs.Node, plan: Any) -> str:
        return "rewritten"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        state = self.prepare(graph, ctx)
        result = PassResult()
        accepted: list[tuple[gs.Node, Any, list[gs.Node], str]] = []
        for node in graph.nodes:
            if node.op not in self.ops or (node.domain or "") not in self.domains:
                continue
            plan = self.check(node, state)
            if isinstance(plan, Reject):
                self._reject(result, plan, self.site([node]))
            elif plan is not None:
                accepted.append((node, plan, [node], self.outcome(node, plan)))
        self._apply(graph, accepted, state, result)
        return result
