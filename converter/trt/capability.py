"""Per-node TensorRT capability: supported / unsupported / unknown, with reasons, partitions and a build.

Library backends classify nodes by data flow: parse the model; every parser error that names a node
marks that node unsupported; the node is cut out (its outputs become inputs of the rest) and the
remainder is parsed again, until it parses cleanly or an error names no node (then the rest is
"unknown"). A fully parsed model is then built (a CPU ahead-of-time build with TensorRT-RTX) to catch
build-time failures, attributed to nodes through the layer names/metadata the parser derives from
ONNX node names. The ``static`` backend answers from ``static_support``'s table instead.
"""
from __future__ import annotations

import argparse
import ctypes
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import onnx
from onnx import helper

from converter.trt import remedies
from converter.trt.backends import Backend, make_logger
from converter.runtime.partitions import Partition, find_partitions, infer_value_infos, save_partitions, submodel
from converter.trt.profiles import ProfileChoice, describe_profile, profiles_for
from converter.runtime.numerics import InputSpec
from converter.runtime.specs import resolve_spec
from converter.trt.static_support import classify as static_classify
from converter.plugins.trt import register_python_plugins
from converter.trt.raw import attribute_build_error, build_check_isolated, create_network
from surgery.errors import ConversionError, SurgeryError, UserInputError
from surgery.io import load_model
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
        return {"supported": self.supported, "build": self.build.to_json(), "unsupported": list(groups.values()),
                "model": self.model, "backend": self.backend,
                "nodes": [n.to_json() for n in self.nodes], "partitions": [p.to_json() for p in self.partitions]}


def load_plugins(trt: ModuleType | None, libraries: Sequence[str | Path], logger: Any = None) -> None:
    """Load plugin libraries with ctypes, register TensorRT's own plugins, then onnx-surgery's Python plugins."""
    for lib in libraries:
        if not Path(lib).is_file():
            raise UserInputError(f"{lib}: no such plugin library")
        try:
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise UserInputError(f"{lib}: cannot load plugin library ({exc})") from None
    if trt is not None and hasattr(trt, "init_libnvinfer_plugins"):
        trt.init_libnvinfer_plugins(logger or make_logger(trt), "")
    if trt is not None:  # after the libraries, so a C++ build of the same plugin takes precedence
        register_python_plugins(trt)


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
    sources = source_map(model)
    nodes = [NodeStatus(n.name, n.op_type, n.domain, source=sources.get(n.name)) for n in model.graph.node]
    outcome = BuildOutcome(error="" if backend.is_library else "the static backend cannot build engines")
    if backend.is_library:
        trt = backend.module
        logger = make_logger(trt)
        load_plugins(trt, plugins, logger)
        _parse_nodes(trt, logger, model, str(loaded.path), nodes)
        if build and all(n.status == "supported" for n in nodes):
            args = argparse.Namespace(**vars(shapes or argparse.Namespace()))
            args.spec = spec_path or getattr(args, "spec", None)
            choice = profiles_for(model, spec_for or path, args)
            specs = choice.opt_specs(resolve_spec(model, spec_for or path, args.spec)) if reduce else None
            outcome = _build(trt, model, str(loaded.path), choice, nodes, decomposable_attention, specs)
        elif build:
            outcome.error = "skipped: the parser rejected some nodes"
    else:
        target = static_target or "tensorrt-rtx"
        for n, proto in zip(nodes, model.graph.node):
            n.mark(*static_classify(n.op, n.domain, _attrs(proto), target))
    _postprocess(backend, model, nodes)
    parts = find_partitions(model, [n.status for n in nodes])
    if save_dir is not None:
        save_partitions(model, parts, Path(save_dir), loaded.base_dir)
    return CapabilityReport(backend.describe(), str(path), nodes, parts, outcome)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else v for k, v in values.items()}


def _parse_once(trt: ModuleType, logger: Any, data: bytes, path: str) -> tuple[bool, list[Any]]:
    builder, network = create_network(trt, logger)
    parser = trt.OnnxParser(network, logger)
    ok = bool(parser.parse(data, path))
    errors = [parser.get_error(i) for i in range(parser.num_errors)]
    return ok, [(e.node(), e.node_name(), e.node_operator(), str(e.code()), e.desc()) for e in errors]


def _blame_by_table(model: onnx.ModelProto, nodes: list[NodeStatus], pending: list[int], desc: str,
                    target: str) -> set[int]:
    """When the parser's error names no node, attribute it to the nodes the static table rejects."""
    blamed = set()
    for i in pending:
        proto = model.graph.node[i]
        status, _, reason = static_classify(proto.op_type, proto.domain, _attrs(proto), target)
        if status == "unsupported":
            nodes[i].mark("unsupported", "unsupported-op",
                          f"{reason} (the parser's error named no node: {remedies.translate(desc, proto.op_type)})", desc)
            blamed.add(i)
    return blamed


def _parse_nodes(trt: ModuleType, logger: Any, model: onnx.ModelProto, path: str, nodes: list[NodeStatus]) -> None:
    """Mark unsupported nodes by repeated parsing of the not-yet-rejected remainder."""
    pending = list(range(len(nodes)))
    infos: dict | None = None
    first = True
    while pending:
        sub = model if first else submodel(model, pending, infos or {}, name="remainder")
        ok, errors = _parse_once(trt, logger, sub.SerializeToString(), path)
        if ok:
            return
        failed: dict[int, tuple] = {}
        for err in errors:
            local = err[0]
            if 0 <= local < len(pending):
                failed.setdefault(pending[local], err)
        if not failed:
            desc = errors[0][4] if errors else "the parser failed without an error"
            target = "tensorrt-rtx" if "rtx" in trt.__name__ else "tensorrt"
            blamed = _blame_by_table(model, nodes, pending, desc, target)
            if blamed:  # cut the nodes the static table rejects out and parse the rest again
                pending = [i for i in pending if i not in blamed]
                infos = infos if infos is not None else infer_value_infos(model)
                first = False
                continue
            for i in pending:
                nodes[i].mark("unknown", "parse-error",
                              "not classified: the parser stopped on an error that names no node: " + remedies.translate(desc, nodes[i].op),
                              desc)
            return
        for i, err in failed.items():
            extra = "" if first else " (found after cutting out the nodes rejected before it)"
            nodes[i].mark("unsupported", "unsupported-op", remedies.translate(err[4], nodes[i].op) + extra, err[4])
        pending = [i for i in pending if i not in failed]
        if first:
            infos = infer_value_infos(model)
        first = False


def _build(trt: ModuleType, model: onnx.ModelProto, path: str, choice: ProfileChoice, nodes: list[NodeStatus],
           decomposable_attention: bool = False, specs: list[InputSpec] | None = None) -> BuildOutcome:
    """The check build; a failure that names no node is reduced when ``specs`` (the opt point's inputs) are given."""
    data = model.SerializeToString()
    try:
        ok, error, layers = build_check_isolated(trt, data, path, choice.profiles, decomposable_attention)
    except ConversionError as exc:
        return BuildOutcome(attempted=False, ok=None, error=str(exc))
    shown = dict(profile=choice.first, profile_source=choice.source)
    if ok:
        return BuildOutcome(attempted=True, ok=True, **shown)
    if choice.derived and any(lo != hi for lo, _, hi in choice.first.values()):
        point = {k: (v[1], v[1], v[1]) for k, v in choice.first.items()}
        at_point, _, _ = build_check_isolated(trt, data, path, [point], decomposable_attention)
        if at_point:  # the model builds; the derived range is what failed: say so, never "no known remedy"
            reason = remedies.translate(error, "")
            return BuildOutcome(attempted=True, ok=False, kind="profile", **shown,
                                error=f"the build fails over the derived range ({describe_profile(choice.first)}) but "
                                      f"succeeds at its opt point: {reason.splitlines()[0] if reason else 'see the log'}; "
                                      "give the shapes you deploy with --input-shapes or --min/--opt/--max-shapes")
    names = attribute_build_error(error, layers, {n.name: n.op for n in nodes})
    reason = remedies.translate(error, "")
    reduced = None
    if not names and specs is not None:
        names, reduced = _reduce(trt, model, path, specs, decomposable_attention)
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


def _postprocess(backend: Backend, model: onnx.ModelProto, nodes: list[NodeStatus]) -> None:
    """Foreign-domain collisions, plugin diagnosis, and a remedy for every node not supported."""
    for n, proto in zip(nodes, model.graph.node):
        attrs = _attrs(proto)
        collision = remedies.foreign_collision(n.op, n.domain)
        if collision:
            n.mark("unsupported", "foreign-domain", collision, n.detail)
        elif remedies.is_plugin_node(n.domain, attrs):  # every plugin node, even one the parser took
            trt = backend.module if backend.is_library else None
            kind, reason = remedies.plugin_problem(trt, n.op, attrs)
            if kind != "ok":
                n.mark("unsupported", kind, reason, n.detail)
        if n.status != "supported":
            n.remedy = remedies.remedy_for(n.op, n.kind)
