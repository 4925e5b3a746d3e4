"""Per-node TensorRT capability: supported / unsupported / unknown, with reasons, partitions and a build.

Library backends classify nodes by data flow: parse the model; every parser error that names a node
marks that node unsupported; the node is cut out (its outputs become inputs of the rest) and the
remainder is parsed again, until it parses cleanly or an error names no node (then the rest is
"unknown"). A fully parsed model is then built with convert's own build (``build.EngineBuild``; a CPU
ahead-of-time build with TensorRT-RTX) to catch build-time failures, attributed to nodes through the
layer names/metadata the parser derives from ONNX node names. The parse loop and that build run in one
child process (``isolate.call_in_child``): a parser crash is located by parsing prefixes and reported as
kind ``crash`` on the node, a builder crash as a failed build. The ``static``
backend answers from the op tables and the capability rules instead (``rules.classify``). Then every
node, whichever backend answered, goes through the rules once more (``rules.review``: foreign-domain
names, plugin diagnosis, a remedy for each node not supported).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import onnx

from converter.runtime.partitions import Partition, find_partitions, infer_value_infos, save_partitions, submodel
from converter.trt import rules
from converter.trt.backends import Backend, make_logger, select_backend
from converter.trt.build import (BuildOptions, build_crash_message, empty_network, layer_to_node, load_plugins, probe_build,
                                 probe_in_process)
from converter.trt.isolate import ChildCrash, call_in_child, checkpoint
from converter.trt.profiles import ProfileChoice, describe_profile, profiles_for
from converter.trt.qdq import has_qdq, qdq_report
from surgery.io import LoadedModel, load_model
from converter.runtime.numerics import InputSpec
from converter.runtime.specs import resolve_spec
from surgery.errors import SurgeryError
from surgery.provenance import Source, source_map

log = logging.getLogger(__name__)


@dataclass
class NodeStatus:
    name: str
    op: str
    domain: str
    status: str = "supported"
    kind: str = "ok"
    reason: str = ""
    remedy: str = ""
    detail: str = ""
    source: Source | None = None  # where the exporter says the node came from

    def mark(self, status: str, kind: str, reason: str, detail: str = "") -> None:
        self.status, self.kind, self.reason, self.detail = status, kind, reason, detail

    def to_json(self) -> dict[str, str]:
        out = {"name": self.name, "op": self.op, "status": self.status, "reason": self.reason, "remedy": self.remedy,
               "kind": self.kind}
        if self.domain:
            out["domain"] = self.domain
        if self.detail:
            out["detail"] = self.detail
        if self.source is not None:
            out["source"] = self.source.to_json()
        return out


@dataclass
class BuildOutcome:
    """The engine build a check made: the profile it was built for, where that came from, the result."""

    attempted: bool = False
    ok: bool | None = None
    error: str = ""
    nodes: list[str] = field(default_factory=list)
    kind: str = ""  # why it failed: "build-failure", "profile" (failed only under derived shapes), ...
    profile: dict[str, tuple[list[int], list[int], list[int]]] = field(default_factory=dict)  # input -> min, opt, max
    profile_source: str = ""  # "--input-shapes", "--min/--opt/--max-shapes", "spec file PATH", "derived from the model"
    reduced: dict[str, Any] | None = None  # a failure that named no node, reduced to a minimal subgraph (or why not)

    def to_json(self) -> dict[str, Any]:
        out = {"attempted": self.attempted, "ok": self.ok, "kind": self.kind, "error": self.error, "nodes": self.nodes,
               "profile": {"source": self.profile_source,
                           "shapes": {k: {"min": v[0], "opt": v[1], "max": v[2]} for k, v in self.profile.items()}}}
        if self.reduced is not None:
            out["reduced"] = self.reduced
        return out


@dataclass
class CapabilityReport:
    backend: dict[str, str]
    model: str
    nodes: list[NodeStatus]
    partitions: list[Partition]
    build: BuildOutcome
    qdq: dict[str, Any] | None = None  # a Q/DQ model: what the parse and build made of its Q/DQ pairs (trt/qdq.py)

    @property
    def supported(self) -> bool:
        return all(n.status == "supported" for n in self.nodes) and self.build.ok is not False

    def to_json(self) -> dict[str, Any]:
        """Verdict first (supported, build and its profile, problem nodes by kind with remedies), then details."""
        groups: dict[str, dict[str, Any]] = {}
        for n in self.nodes:
            if n.status != "supported":
                g = groups.setdefault(n.kind, {"kind": n.kind, "status": n.status, "count": 0, "nodes": [],
                                               "ops": [], "remedies": []})
                g["count"] += 1
                g["nodes"].append(n.name)
                g["ops"] += [n.op] if n.op not in g["ops"] else []
                g["remedies"] += [n.remedy] if n.remedy and n.remedy not in g["remedies"] else []
        out = {"supported": self.supported, "build": self.build.to_json(), "unsupported": list(groups.values()),
               "model": self.model, "backend": self.backend,
               "nodes": [n.to_json() for n in self.nodes], "partitions": [p.to_json() for p in self.partitions]}
        if self.qdq is not None:
            out["qdq"] = self.qdq
        return out


def check_model(path: str | Path, backend: Backend, *, build: bool = True, spec_path: str | Path | None = None,
                plugins: Sequence[str | Path] = (), static_target: str | None = None,
                save_dir: str | Path | None = None, decomposable_attention: bool = False,
                shapes: argparse.Namespace | None = None, spec_for: str | Path | None = None,
                reduce: bool = True) -> CapabilityReport:
    """Classify every node of the model at ``path`` and group them into partitions.

    ``shapes`` carries the shape options (``--input-shapes``, ``--min/--opt/--max-shapes``); without
    them the build profile comes from ``spec_path`` (else the sibling spec of ``spec_for`` or ``path``)
    or is derived from the model. With ``reduce``, a build failure whose message names no node is
    reduced to a minimal failing subgraph (``converter.reduce``), whose nodes are then the ones blamed.
    """
    loaded = load_model(path)
    model = loaded.model
    qdq = None
    sources = source_map(model)
    nodes = [NodeStatus(n.name, n.op_type, n.domain, source=sources.get(n.name)) for n in model.graph.node]
    specs: list[InputSpec] | None = None
    target = ("tensorrt-rtx" if backend.is_rtx else "tensorrt") if backend.is_library else (static_target or "tensorrt-rtx")
    facts = rules.node_facts(model, target, backend.module)
    outcome = BuildOutcome(error="" if backend.is_library else "the static backend cannot build engines")
    if backend.is_library:
        load_plugins(backend.module, plugins, make_logger(backend.module))  # the report stage diagnoses plugin nodes
        request = None
        if build:
            args = argparse.Namespace(**vars(shapes or argparse.Namespace()))
            args.spec = spec_path or getattr(args, "spec", None)
            choice = profiles_for(model, spec_for or path, args)
            options = BuildOptions(profiles=choice.profiles, plugins=[str(p) for p in plugins],
                                   decomposable_attention=decomposable_attention)
            request = _BuildRequest(options, from_path=loaded.has_external_data)
            specs = choice.opt_specs(resolve_spec(model, spec_for or path, args.spec)) if reduce else None
        probe = _parse_isolated(backend, model, str(loaded.path), nodes, target, [str(p) for p in plugins], request)
        if probe is not None:
            outcome = _build(backend, loaded, options, choice, nodes, probe, specs)
            if outcome.ok and has_qdq(model):
                source = loaded.path if loaded.has_external_data else model.SerializeToString()
                qdq = qdq_report(backend, model, source, options)
        elif build:
            outcome.error = "skipped: the parser rejected some nodes"
    else:
        for n, fact in zip(nodes, facts):
            v = rules.classify(fact)
            n.mark(v.status, v.kind, v.reason)
    _review(nodes, facts)
    parts = find_partitions(model, [n.status for n in nodes])
    if save_dir is not None:
        save_partitions(model, parts, Path(save_dir), loaded.base_dir)
    return CapabilityReport(backend.describe(), str(path), nodes, parts, outcome, qdq)


def _parse_once(backend: Backend, logger: Any, data: bytes, path: str) -> tuple[bool, list[Any]]:
    """Parse into a network created as the build creates it; (ok, parser errors as tuples)."""
    builder, network = empty_network(backend, logger)
    parser = backend.module.OnnxParser(network, logger)
    ok = bool(parser.parse(data, path))
    errors = [parser.get_error(i) for i in range(parser.num_errors)]
    return ok, [(e.node(), e.node_name(), e.node_operator(), str(e.code()), e.desc()) for e in errors]


def _blame_by_table(facts: list[rules.NodeFacts], nodes: list[NodeStatus], pending: list[int], desc: str) -> set[int]:
    """When the parser's error names no node, attribute it to the nodes the static table rejects."""
    blamed = set()
    for i in pending:
        verdict = rules.classify(facts[i])
        if verdict.status == "unsupported":
            nodes[i].mark("unsupported", "unsupported-op",
                          f"{verdict.reason} (the parser's error named no node: {rules.translate(desc, nodes[i].op)})", desc)
            blamed.add(i)
    return blamed


@dataclass
class _BuildRequest:
    """The check's build, made in the parse's child when the parse is clean (``from_path``: external weights)."""

    options: BuildOptions
    from_path: bool = False


@dataclass
class _ParseState:
    """How far the parse loop got: the nodes as marked so far and the indices of those still to parse."""

    nodes: list[NodeStatus]
    pending: list[int]
    first: bool = True


_CRASH_LIMIT = 3  # crashing nodes located one by one before the rest is reported as not classified
_CHILD_TIMEOUT_S = 1200.0  # the parse loop and the build probe together


def _parse_isolated(backend: Backend, model: onnx.ModelProto, path: str, nodes: list[NodeStatus], target: str,
                    plugins: list[str], request: _BuildRequest | None) -> tuple[bool, str, list[dict[str, str]]] | None:
    """The parse loop (and, after a clean parse, the build probe) in one child process; marks ``nodes``.

    A parser crash kills only the child: the crashing node is located by parsing ever longer prefixes
    of what the crashed parse had (one child each, so about log2(n) of them), marked kind ``crash``
    and cut out, and the loop resumes in a new child. Returns the build probe's result, or None when
    no build was made.
    """
    state = _ParseState(list(nodes), list(range(len(nodes))))
    crashes = 0
    while True:
        try:
            state, probe = call_in_child(_parse_in_child, backend.name, plugins, model, path, target, state, request,
                                         timeout_s=_CHILD_TIMEOUT_S)
            break
        except ChildCrash as crash:
            if crash.checkpoint is None:  # it died before the first parse (loading TensorRT or the plugins)
                _mark_unclassified(state, f"the check's child process died ({crash.how}) before it reached the parser",
                                   crash.stderr_tail)
                probe = None
                break
            phase, state = crash.checkpoint
            if phase == "build":  # the parse was clean; the builder died
                probe = (False, build_crash_message(crash), [])
                break
            found = _crashing_node(backend, plugins, model, path, state.pending) if crashes < _CRASH_LIMIT else None
            if found is None:
                _mark_unclassified(state, f"the TensorRT parser crashed ({crash.how}) on this model before it could say "
                                          "anything about this node", crash.stderr_tail)
                probe = None
                break
            crashes += 1
            culprit, alone = found
            how_found = ("parsed on its own, it crashes" if alone else
                         "the nodes before it parse, adding it crashes; found by parsing prefixes in child processes")
            state.nodes[culprit].mark("unsupported", "crash", f"the TensorRT parser crashes ({crash.how}) on this node "
                                      f"({how_found})", crash.stderr_tail)
            state.pending = [i for i in state.pending if i != culprit]
            state.first = False
            request = probe = None  # a model with a crashing node gets no build
            if not state.pending:
                break
    nodes[:] = state.nodes
    return probe


def _mark_unclassified(state: _ParseState, why: str, detail: str) -> None:
    for i in state.pending:
        state.nodes[i].mark("unknown", "crash", "not classified: " + why, detail)


def _parse_in_child(backend_name: str, plugins: list[str], model: onnx.ModelProto, path: str, target: str,
                    state: _ParseState, request: _BuildRequest | None
                    ) -> tuple[_ParseState, tuple[bool, str, list[dict[str, str]]] | None]:
    """Child side of ``_parse_isolated``: the parse loop from ``state``, then the build probe if the parse was clean."""
    backend = select_backend(backend_name)
    logger = make_logger(backend.module)
    load_plugins(backend.module, plugins, logger)
    _parse_nodes(backend, logger, model, path, state, rules.node_facts(model, target, backend.module))
    if request is None or not all(n.status == "supported" for n in state.nodes):
        return state, None
    checkpoint(("build", state))
    source = path if request.from_path else model.SerializeToString()
    return state, probe_in_process(backend_name, source, request.options)


def _crashing_node(backend: Backend, plugins: list[str], model: onnx.ModelProto, path: str,
                   pending: list[int]) -> tuple[int, bool] | None:
    """The node of ``pending`` (in model order) whose parse crashes, the shortest crashing prefix ending with
    it, and whether that prefix is the node alone.

    None when the nodes of ``pending`` do not crash without the rest of the model.
    """
    infos = infer_value_infos(model)

    def crashes(count: int) -> bool | None:
        """Whether parsing the first ``count`` nodes crashes; None when the child died before it parsed."""
        data = submodel(model, pending[:count], infos, name="prefix").SerializeToString()
        try:
            call_in_child(_parse_bytes, backend.name, plugins, data, path)
            return False
        except ChildCrash as crash:
            return True if crash.checkpoint is not None else None

    if not pending or not crashes(len(pending)):
        return None
    good, bad = 0, len(pending)  # a prefix of `good` nodes parses, one of `bad` crashes
    while bad - good > 1:
        mid = (good + bad) // 2
        crashed = crashes(mid)
        if crashed is None:
            return None
        good, bad = (good, mid) if crashed else (mid, bad)
    return pending[bad - 1], bad == 1


def _parse_bytes(backend_name: str, plugins: list[str], data: bytes, path: str) -> bool:
    """Child side of ``_crashing_node``: one parse; whether it succeeded (only surviving it matters)."""
    backend = select_backend(backend_name)
    logger = make_logger(backend.module)
    load_plugins(backend.module, plugins, logger)
    checkpoint("parse")
    return _parse_once(backend, logger, data, path)[0]


def _parse_nodes(backend: Backend, logger: Any, model: onnx.ModelProto, path: str, state: _ParseState,
                 facts: list[rules.NodeFacts]) -> None:
    """Mark unsupported nodes by repeated parsing of the not-yet-rejected remainder (``state`` is updated;
    it is left as a checkpoint before every parse, so a crash says which parse it was)."""
    nodes, pending, first = state.nodes, state.pending, state.first
    infos: dict | None = None if first else infer_value_infos(model)
    while pending:
        state.pending, state.first = pending, first
        checkpoint(("parse", state))
        sub = model if first else submodel(model, pending, infos or {}, name="remainder")
        ok, errors = _parse_once(backend, logger, sub.SerializeToString(), path)
        if ok:
            break
        failed: dict[int, tuple] = {}
        for err in errors:
            local = err[0]
            if 0 <= local < len(pending):
                failed.setdefault(pending[local], err)
        if not failed:
            desc = errors[0][4] if errors else "the parser failed without an error"
            blamed = _blame_by_table(facts, nodes, pending, desc)
            if blamed:  # cut the nodes the static table rejects out and parse the rest again
                pending = [i for i in pending if i not in blamed]
                infos = infos if infos is not None else infer_value_infos(model)
                first = False
                continue
            for i in pending:
                nodes[i].mark("unknown", "parse-error",
                              "not classified: the parser stopped on an error that names no node: " + rules.translate(desc, nodes[i].op),
                              desc)
            break
        for i, err in failed.items():
            extra = "" if first else " (found after cutting out the nodes rejected before it)"
            nodes[i].mark("unsupported", "unsupported-op", rules.translate(err[4], nodes[i].op) + extra, err[4])
        pending = [i for i in pending if i not in failed]
        if first:
            infos = infer_value_infos(model)
        first = False
    state.pending, state.first = pending, first


def _build(backend: Backend, loaded: LoadedModel, options: BuildOptions, choice: ProfileChoice,
           nodes: list[NodeStatus], probe: tuple[bool, str, list[dict[str, str]]],
           specs: list[InputSpec] | None = None) -> BuildOutcome:
    """The check's build (``probe``: convert's ``EngineBuild`` run in the parse's child); a failure is
    attributed to nodes, or, over a derived profile, retried at its opt point; a failure that names no node is
    reduced to a minimal failing subgraph when ``specs`` (the opt point's inputs) are given."""
    ok, error, layers = probe
    shown = dict(profile=choice.first, profile_source=choice.source)
    if ok:
        return BuildOutcome(attempted=True, ok=True, **shown)
    if choice.derived and any(lo != hi for lo, _, hi in choice.first.values()):
        point = {k: (v[1], v[1], v[1]) for k, v in choice.first.items()}
        source = loaded.path if loaded.has_external_data else loaded.model.SerializeToString()
        at_point, _, _ = probe_build(backend, source, dataclasses.replace(options, profiles=[point]))
        if at_point:  # the model builds; the derived range is what failed: say so, never "no known remedy"
            reason = rules.translate(error, "")
            return BuildOutcome(attempted=True, ok=False, kind="profile", **shown,
                                error=f"the build fails over the derived range ({describe_profile(choice.first)}) but "
                                      f"succeeds at its opt point: {reason.splitlines()[0] if reason else 'see the log'}; "
                                      "give the shapes you deploy with --input-shapes or --min/--opt/--max-shapes")
    names = attribute_build_error(error, layers, {n.name: n.op for n in nodes})
    reason = rules.translate(error, "")
    reduced = None
    if not names and specs is not None:
        names, reduced = _reduce(backend.module, loaded.model, str(loaded.path), specs, options.decomposable_attention)
    for n in nodes:
        if n.name in names:
            where = ("the engine build fails on the minimal subgraph that holds this node" if reduced else
                     "the engine build failed here")
            n.mark("unsupported", "build-failure", f"{where}: {reason}", error[:2000])
    return BuildOutcome(attempted=True, ok=False, kind="build-failure", error=reason if names else error[:2000],
                        nodes=sorted(names), reduced=reduced, **shown)


def _reduce(trt: ModuleType, model: onnx.ModelProto, path: str, specs: list[InputSpec],
            decomposable_attention: bool) -> tuple[set[str], dict[str, Any]]:
    """Blame the non-constant nodes of the minimal failing subgraph; the reduction's summary (or why there is none)."""
    from converter.reduce.reducer import reduce_trt_failure

    log.info("the build failure names no node: reducing the model to a minimal failing subgraph")
    try:
        result = reduce_trt_failure(trt, model, path, "build", specs, decomposable_attention=decomposable_attention)
    except SurgeryError as exc:  # the failure did not reproduce at the opt point, or not deterministically
        return set(), {"error": str(exc)}
    summary = result.to_json()
    blamed = {n["name"] for n in summary["nodes"] if n["op"] != "Constant"}
    return blamed, {k: summary[k] for k in ("nodes", "nodes_before", "nodes_after", "probes", "shapes", "notes", "basis")}


def attribute_build_error(error: str, layers: Sequence[dict[str, str]], node_ops: dict[str, str]) -> set[str]:
    """ONNX node names a builder error is about: named layers/nodes, else the op kind it mentions."""
    mapping = layer_to_node(layers, list(node_ops))
    names = {node for layer, node in mapping.items() if layer and layer in error}
    names |= {n for n in node_ops if n and re.search(rf"(?<![\w/]){re.escape(n)}(?![\w/])", error)}
    if names:
        return names
    for op in sorted(set(node_ops.values())):
        if re.search(rf"\b{re.escape(op)} (operation|layer|node)", error, flags=re.IGNORECASE):
            names |= {n for n, o in node_ops.items() if o == op}
    return names


def _review(nodes: list[NodeStatus], facts: list[rules.NodeFacts]) -> None:
    """The capability rules on what the parser, the build or the table said; a remedy for every node not supported."""
    for n, fact in zip(nodes, facts):
        verdict = rules.review(fact, rules.Verdict(n.status, n.kind, n.reason))
        if (verdict.status, verdict.kind, verdict.reason) != (n.status, n.kind, n.reason):
            n.mark(verdict.status, verdict.kind, verdict.reason, n.detail)
        n.remedy = verdict.remedy
