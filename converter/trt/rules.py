"""Capability rules: what we know about an op in TensorRT, one small function per check.

A rule is a function of one node's ``NodeFacts`` (op, domain, attributes, input shapes, dtypes and
small constant inputs where the model has them, the target, the verdict so far) that returns a
``Verdict`` (status, kind, reason, remedy) or None when it has nothing to say about the node.
``@capability_rule("NonZero")`` registers one for some ops; ``@capability_rule(ANY)`` for every node.

Two stages consult the same rules, in this file's order. A rule's answer replaces the verdict so far
(``node.found``), so when several answer, the last one wins:

* ``TABLE`` (``classify``): no TensorRT was asked. ``found`` starts as what the op tables of
  ``static_support`` say. The ``static`` backend answers from this stage, and so do the library
  backends for the nodes they cannot classify otherwise (a parser error that names no node).
* ``REPORT`` (``review``): every node of every check, after TensorRT's parser and build (or after the
  table, for the static backend); ``found`` is what they said and ``node.trt`` the TensorRT module,
  if any. A node left unsupported without a remedy gets the generic one: a registered pass that
  rewrites the op, a plugin whose notes name it, or "no known remedy".

``why=`` gives an op's own reason, put before every TensorRT message about the op (``translate``):
for some ops the parser says only "false". The words live in ``remedies`` (messages) and the op
tables in ``static_support``; both are data. A new check is one function here, for example::

    @capability_rule("TopK")
    def topk_k_limit(node: NodeFacts) -> Verdict | None:
        k = node.value(1)
        if k is None or int(k.max()) <= 3840:
            return None
        return Verdict("unsupported", "unsupported-op", f"TopK with K={int(k.max())}: TensorRT takes K up to 3840")
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import onnx
from onnx import external_data_helper, helper, numpy_helper

from converter.plugins.check import diagnose
from converter.trt import remedies
from converter.trt.static_support import ONNX_DOMAINS, ONNX_OPS, SUPPORTED, UNSUPPORTED
from surgery.plugins import PLUGIN_DOMAIN, plugin_specs
from surgery.registry import list_passes
from surgery.rewrite import NodeRewritePass

ANY = "*"  # a rule for every node
TABLE, REPORT = "table", "report"
PLUGIN_KINDS = ("plugin-name-collision", "plugin-not-loaded", "plugin-field-mismatch")
_SMALL = 64  # constant inputs up to this many elements are given to the rules


@dataclass(frozen=True)
class Verdict:
    """What a check says about one node: status (supported/unsupported/unknown), kind, reason, remedy."""

    status: str
    kind: str
    reason: str = ""
    remedy: str = ""


@dataclass(frozen=True)
class NodeFacts:
    """What a rule may look at. ``input_*`` hold None where the model does not say."""

    op: str
    domain: str = ""
    attrs: Mapping[str, Any] = field(default_factory=dict)
    target: str = "tensorrt-rtx"  # "tensorrt" (10.x/11.x) or "tensorrt-rtx"
    input_shapes: tuple[tuple[int | str | None, ...] | None, ...] = ()
    input_dtypes: tuple[str | None, ...] = ()  # TensorProto names: "FLOAT", "INT64", ...
    input_values: tuple[np.ndarray | None, ...] = ()  # small initializers and Constant outputs
    trt: ModuleType | None = None  # the TensorRT library in the REPORT stage of a library backend
    stage: str = TABLE
    found: Verdict | None = None  # the verdict so far

    @property
    def is_plugin(self) -> bool:
        return self.domain == PLUGIN_DOMAIN or "plugin_version" in self.attrs

    @property
    def unsupported(self) -> bool:
        return self.found is not None and self.found.status != "supported"

    def value(self, i: int) -> np.ndarray | None:
        return self.input_values[i] if i < len(self.input_values) else None

    def with_remedy(self, remedy: str) -> Verdict:
        return dataclasses.replace(self.found, remedy=remedy)


@dataclass(frozen=True)
class Rule:
    ops: frozenset[str]
    check: Callable[[NodeFacts], Verdict | None]
    why: str | None = None  # the op's own reason, a template with {op}


RULES: list[Rule] = []


def capability_rule(*ops: str, why: str | None = None) -> Callable[[Callable], Callable]:
    """Register the decorated function as the rule for ``ops`` (``ANY``: every node), after those before it."""
    if not ops:
        raise ValueError("capability_rule needs at least one op (or ANY)")

    def register(check: Callable[[NodeFacts], Verdict | None]) -> Callable[[NodeFacts], Verdict | None]:
        RULES.append(Rule(frozenset(ops), check, why))
        return check

    return register


def rules_for(op: str) -> list[Rule]:
    return [r for r in RULES if op in r.ops or ANY in r.ops]


def classify(node: NodeFacts) -> Verdict:
    """The TABLE stage: what TensorRT's parser would say, from the op tables and the rules."""
    return _consult(dataclasses.replace(node, stage=TABLE, found=_table_verdict(node)))


def review(node: NodeFacts, found: Verdict) -> Verdict:
    """The REPORT stage: the rules on what TensorRT (or the table) said; every unsupported node gets a remedy."""
    verdict = _consult(dataclasses.replace(node, stage=REPORT, found=found))
    if verdict.status == "supported":
        return dataclasses.replace(verdict, remedy="")
    return verdict if verdict.remedy else dataclasses.replace(verdict, remedy=_pass_or_plugin(node.op) or remedies.NO_REMEDY)


def _consult(node: NodeFacts) -> Verdict:
    for rule in rules_for(node.op):
        answer = rule.check(node)
        if answer is not None:
            node = dataclasses.replace(node, found=answer)
    return node.found


def _table_verdict(node: NodeFacts) -> Verdict:
    op, domain = node.op, node.domain
    if domain not in ONNX_DOMAINS and op not in SUPPORTED and op not in UNSUPPORTED:
        return Verdict("unsupported", "unsupported-op", f"custom op '{op}' (domain '{domain}'): TensorRT has no "
                                                        "importer and no plugin of that name is registered")
    if op in SUPPORTED:
        return Verdict("supported", "ok")
    if op in UNSUPPORTED:
        return Verdict("unsupported", "unsupported-op", f"{op}: {UNSUPPORTED[op]}")
    if op in ONNX_OPS:
        return Verdict("unknown", "unknown-op", f"{op} is newer than this table; ask a TensorRT library backend")
    return Verdict("unsupported", "unsupported-op",
                   f"'{op}' is not an ONNX op: TensorRT has no importer and no plugin of that name is registered")


def translate(desc: str, op: str) -> str:
    """One plain sentence for a TensorRT error message about ``op`` (the op's own reason first, if a rule gives one)."""
    words = _translate_message(desc, op)
    known = why(op)
    if known is None:
        return words or f"the parser rejected '{op or 'this node'}' without saying why (its message: {desc.strip()!r})"
    return f"{known}; {words}" if words else known


def why(op: str) -> str | None:
    """The reason a rule gives for ``op`` itself (what kind of op it is), else None."""
    return next((r.why.format(op=op) for r in RULES if op in r.ops and r.why), None)


def _translate_message(desc: str, op: str) -> str | None:
    """The translation of a parser message, its first line if no pattern matches, None if it says nothing."""
    if desc.strip().lower() in remedies.UNINFORMATIVE:
        return None
    for pattern, words in remedies.TRANSLATIONS:
        m = re.search(pattern, desc, flags=re.IGNORECASE)
        if m:
            return words.format(*(m.groups() or (op,)), op=op)
    return desc.strip().splitlines()[0][:300]


def node_facts(model: onnx.ModelProto, target: str, trt: ModuleType | None = None) -> list[NodeFacts]:
    """The facts of every node of ``model``'s main graph, in order (shapes and dtypes where the model states them)."""
    g = model.graph
    info: dict[str, tuple[tuple | None, str | None]] = {}
    for v in (*g.input, *g.value_info, *g.output):
        t = v.type.tensor_type
        if v.type.HasField("tensor_type"):
            shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                          for d in t.shape.dim) if t.HasField("shape") else None
            info[v.name] = (shape, onnx.TensorProto.DataType.Name(t.elem_type) if t.elem_type else None)
    values: dict[str, np.ndarray] = {}
    for init in g.initializer:
        info[init.name] = (tuple(init.dims), onnx.TensorProto.DataType.Name(init.data_type))
        if not external_data_helper.uses_external_data(init) and math.prod(init.dims) <= _SMALL:
            values[init.name] = numpy_helper.to_array(init)
    out = []
    for node in g.node:
        attrs = _attrs(node)
        if node.op_type == "Constant" and node.domain in ONNX_DOMAINS and isinstance(attrs.get("value"), onnx.TensorProto):
            tensor = attrs["value"]
            if math.prod(tensor.dims) <= _SMALL and not external_data_helper.uses_external_data(tensor):
                values[node.output[0]] = numpy_helper.to_array(tensor)
        known = [info.get(name, (None, None)) for name in node.input]
        out.append(NodeFacts(node.op_type, node.domain, attrs, target, tuple(s for s, _ in known),
                             tuple(d for _, d in known), tuple(values.get(name) for name in node.input), trt))
    return out


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else v for k, v in values.items()}


def _pass_or_plugin(op: str) -> str | None:
    """``pass NAME`` for a registered pass that rewrites the op, else ``plugin NAME vN`` for a plugin whose notes name it."""
    for cls in list_passes():
        ops = cls.rewrites_ops or (cls.ops if issubclass(cls, NodeRewritePass) else ())
        if op in ops:
            return f"pass {cls.name}"
    for spec in plugin_specs().values():
        if re.search(rf"\b{re.escape(op)}\b", spec.notes):
            return f"plugin {spec.op} v{spec.version}"
    return None


# ---- the rules, in the order they are consulted ----------------------------------------------------


@capability_rule("NonZero")
def nonzero_needs_a_plugin_on_rtx(node: NodeFacts) -> Verdict | None:
    """TensorRT-RTX imports NonZero only through a NonZero plugin; the table assumes none is registered."""
    if node.stage == TABLE and node.target == "tensorrt-rtx":
        return Verdict("unsupported", "unsupported-op",
                       "TensorRT-RTX has no built-in NonZero: it needs a NonZero plugin, and none is registered")
    return None


@capability_rule("ScatterElements", "ScatterND")
def scatter_reduction_on_rtx(node: NodeFacts) -> Verdict | None:
    """TensorRT-RTX's parser takes only plain scatters."""
    reduction = node.attrs.get("reduction", "none")
    if node.stage == TABLE and node.target == "tensorrt-rtx" and reduction != "none":
        return Verdict("unsupported", "unsupported-op",
                       f"TensorRT-RTX rejects {node.op} with reduction '{reduction}' (only plain scatters import)")
    return None


@capability_rule(ANY)
def foreign_domain_collision(node: NodeFacts) -> Verdict | None:
    """TensorRT's parser ignores the domain: com.microsoft:Attention would import as ONNX Attention."""
    if node.stage != REPORT or node.domain in ONNX_DOMAINS or node.domain == PLUGIN_DOMAIN or node.op not in ONNX_OPS:
        return None
    return Verdict("unsupported", "foreign-domain",
                   f"{node.domain}:{node.op} has the name of the ONNX op {node.op}; TensorRT ignores the domain and "
                   f"would import it as ONNX {node.op}, whose inputs and meaning differ")


@capability_rule(*remedies.DATA_DEPENDENT_OPS, why=remedies.DATA_DEPENDENT_REASON)
def data_dependent_shape(node: NodeFacts) -> Verdict | None:
    """Output shapes that depend on input values: a static rewrite when the input is constant, else onnxruntime."""
    if node.stage != REPORT or not node.unsupported:
        return None
    found = _pass_or_plugin(node.op)
    keep = remedies.KEEP_ON_ORT
    return node.with_remedy(f"{found} (when the input is a build-time constant), else {keep}" if found else keep)


@capability_rule(ANY)
def plugin_node(node: NodeFacts) -> Verdict | None:
    """Plugin nodes: not loaded, a field mismatch, or a name that collides with an ONNX op (``plugins.check``)."""
    if not node.is_plugin:
        return None
    if node.stage == TABLE:
        return Verdict("unsupported", "plugin-not-loaded", f"plugin '{node.op}' is not in the TensorRT plugin registry "
                                                           "(the static table cannot see plugin libraries)")
    if node.found.kind == "foreign-domain":
        return None
    kind, reason = diagnose(node.trt, node.op, dict(node.attrs))  # every plugin node, even one the parser took
    if kind != "ok":
        return Verdict("unsupported", kind, reason, _plugin_remedy(node.op, kind))
    return node.with_remedy(_plugin_remedy(node.op, node.found.kind)) if node.found.kind in PLUGIN_KINDS else None


def _plugin_remedy(op: str, kind: str) -> str:
    if kind == "plugin-name-collision":
        return "give the plugin a name that is no ONNX op (or write the ONNX op itself where TensorRT imports it)"
    spec = plugin_specs().get(op)
    what = f"plugin {spec.op} v{spec.version}" if spec is not None else f"plugin '{op}'"
    return f"load the library that implements {what} with --plugins LIB.so (check and convert take it), or {remedies.KEEP_ON_ORT}"


@capability_rule(*remedies.QUANTIZED_OPS, why=remedies.QUANTIZED_REASON)
def integer_quantized(node: NodeFacts) -> Verdict | None:
    """TensorRT takes quantization only as Q/DQ around float ops."""
    return node.with_remedy(remedies.QUANTIZED_REMEDY) if node.stage == REPORT and node.unsupported else None


@capability_rule("Attention")
def attention_without_fused_kernel(node: NodeFacts) -> Verdict | None:
    """An Attention that parses but fails to build has no fused kernel for its dtype/head size."""
    if node.stage != REPORT or node.found.kind != "build-failure":
        return None
    fp16 = ", or pass convert-precision (fp16)" if any(c.name == "convert-precision" for c in list_passes()) else ""
    return node.with_remedy("convert --decomposable-attention" + fp16)


@capability_rule(ANY)
def parser_crash(node: NodeFacts) -> Verdict | None:
    """A node TensorRT's parser crashes on (``check`` parses in a child process and locates it)."""
    if node.stage != REPORT or not node.unsupported or node.found.kind != "crash":
        return None
    return node.with_remedy(f"{remedies.KEEP_ON_ORT} (the crash is TensorRT's to fix: report it with this node)")
