"""``map-plugins``: replace nodes by TensorRT plugin nodes as a user's plugin map says.

Summary:
    ``ctx.options["plugin_map"]`` holds the parsed map (``surgery optimize --plugin-map FILE.toml``;
    see README "Plugin maps"): a list of rules under ``map``. A rule selects nodes by op type
    (``op``, optional ``domain``) or by a fusion pass's name (``pattern``: the nodes that pass emitted,
    named ``<pass>/<n>``, optionally narrowed by ``op``) and names the plugin (``plugin``,
    ``version``, ``namespace``). Plugin fields come from node attributes (``attrs``: attribute ->
    field, with optional ``values`` translation tables), from constant inputs (``const_inputs``:
    input index -> field, written as a TENSOR attribute) and from literals (``fields``). ``inputs``
    lists, in order, the node inputs that stay plugin inputs (default: every input not used as a field).

Matches:
    ::

        Op(x, w=const, ..., attr=a)  =>  Plugin(x, ..., field_a=a, field_w=TENSOR(w), plugin_version, plugin_namespace)

    The node's output tensors are reused, so consumers and graph outputs keep their names.

Requires:
    A plugin map in the options.

Rejects:
    field-input-missing (a ``const_inputs`` index the node does not have), field-input-not-constant,
    input-missing (an ``inputs`` index the node does not have), attr-value-not-mapped (a ``values``
    table has no entry for the attribute's value), field-type-mismatch (a value cannot take the
    field's declared type), tensor-out-of-int32-range (int64 weights that do not fit int32).

Numerics:
    Exactly the plugin's: nothing is checked here beyond field types.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from surgery.errors import UserInputError
from surgery.graph_utils import NameGen, const_value, disconnect
from surgery.pass_base import Pass, PassContext, PassResult
from surgery.plugins import FIELD_TYPES, PLUGIN_DOMAIN, PluginSpec, get_plugin_spec, make_plugin_node
from surgery.registry import list_passes, register_pass

__all__ = ["MapPluginsPass", "MapRule", "parse_plugin_map"]

_RULE_KEYS = {"op", "domain", "pattern", "plugin", "version", "namespace", "inputs", "attrs", "const_inputs",
              "fields", "values", "types"}
_INT32 = np.iinfo(np.int32)


@dataclass(frozen=True)
class MapRule:
    plugin: str
    version: str
    namespace: str = ""
    op: str | None = None
    domain: str | None = None
    pattern: str | None = None
    inputs: tuple[int, ...] | None = None
    attrs: dict[str, str] = field(default_factory=dict)          # node attribute -> plugin field
    const_inputs: dict[int, str] = field(default_factory=dict)   # node input index -> plugin field (TENSOR)
    fields: dict[str, Any] = field(default_factory=dict)         # plugin field -> literal value
    values: dict[str, dict[str, Any]] = field(default_factory=dict)  # plugin field -> {attribute value: field value}
    types: dict[str, str] = field(default_factory=dict)          # plugin field -> FIELD_TYPES entry

    def selects(self, node: gs.Node) -> bool:
        if self.pattern is not None:
            return re.fullmatch(rf"{re.escape(self.pattern)}/\d+", node.name or "") is not None and \
                (self.op is None or node.op == self.op)
        return node.op == self.op and (self.domain is None or node.domain == self.domain)


def _fail(where: str, message: str) -> UserInputError:
    return UserInputError(f"{where}: {message}")


def _str_map(where: str, key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _fail(where, f"'{key}' must be a table of name = \"field\" strings")
    return dict(value)


def _rule(raw: Any, where: str) -> MapRule:
    if not isinstance(raw, dict):
        raise _fail(where, "each [[map]] entry must be a table")
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise _fail(where, f"unknown key '{unknown[0]}' (allowed: {', '.join(sorted(_RULE_KEYS))})")
    for key in ("plugin", "version"):
        if key not in raw:
            raise _fail(where, f"missing required key '{key}'")
    if ("op" in raw) + ("pattern" in raw) == 0:
        raise _fail(where, "needs 'op' (an op type) or 'pattern' (a fusion pass name)")
    if "pattern" in raw and raw["pattern"] not in {cls.name for cls in list_passes()}:
        raise _fail(where, f"pattern '{raw['pattern']}' is not a registered pass (see `surgery list-passes`)")
    if not isinstance(raw["version"], (str, int)) or isinstance(raw["version"], bool):
        raise _fail(where, "'version' must be a string such as \"2\"")
    const_inputs: dict[int, str] = {}
    for k, v in _str_map(where, "const_inputs", raw.get("const_inputs", {})).items():
        if not str(k).isdigit():
            raise _fail(where, f"const_inputs key '{k}' must be an input index (\"1\" = \"gamma\")")
        const_inputs[int(k)] = v
    inputs = raw.get("inputs")
    if inputs is not None and not (isinstance(inputs, list) and all(isinstance(i, int) and i >= 0 for i in inputs)):
        raise _fail(where, "'inputs' must be a list of input indices, e.g. [0, 2]")
    types = _str_map(where, "types", raw.get("types", {}))
    bad = [t for t in types.values() if t not in FIELD_TYPES]
    if bad:
        raise _fail(where, f"unknown field type '{bad[0]}' (known: {', '.join(FIELD_TYPES)})")
    values = raw.get("values", {})
    if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
        raise _fail(where, "'values' must hold one table per field, e.g. values.mode = { avg = 1, max = 0 }")
    fields = raw.get("fields", {})
    if not isinstance(fields, dict):
        raise _fail(where, "'fields' must be a table of field = value")
    for key in ("plugin", "op", "domain", "pattern", "namespace"):
        if key in raw and not isinstance(raw[key], str):
            raise _fail(where, f"'{key}' must be a string")
    return MapRule(plugin=raw["plugin"], version=str(raw["version"]), namespace=raw.get("namespace", ""),
                   op=raw.get("op"), domain=raw.get("domain"), pattern=raw.get("pattern"),
                   inputs=tuple(inputs) if inputs is not None else None,
                   attrs=_str_map(where, "attrs", raw.get("attrs", {})), const_inputs=const_inputs,
                   fields=dict(fields), values={k: dict(v) for k, v in values.items()}, types=types)


def parse_plugin_map(data: Any, source: str = "plugin map") -> list[MapRule]:
    """Validate a parsed plugin map (``{"map": [rule, ...]}``); raises ``UserInputError`` with one line."""
    if not isinstance(data, dict):
        raise UserInputError(f"{source}: expected a table with [[map]] entries")
    unknown = sorted(set(data) - {"map"})
    if unknown:
        raise UserInputError(f"{source}: unknown top-level key '{unknown[0]}' (allowed: map)")
    rules = data.get("map")
    if not isinstance(rules, list) or not rules:
        raise UserInputError(f"{source}: missing required key 'map' (one or more [[map]] tables)")
    return [_rule(raw, f"{source}: map[{i}]") for i, raw in enumerate(rules)]


def _kind_of(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return "tensor"
    if isinstance(value, (bool, int, np.integer)):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, np.integer)) for v in value):
        return "ints"
    return "floats"


def _weights(value: np.ndarray) -> np.ndarray | str:
    """Weights as TensorRT plugin fields take them: int64 -> int32 (never INT64 tensors), float64 -> float32."""
    if value.dtype == np.int64:
        if value.size and (value.min() < _INT32.min or value.max() > _INT32.max):
            return "tensor-out-of-int32-range"
        return value.astype(np.int32)
    if value.dtype == np.float64:
        return value.astype(np.float32)
    return value


def _coerce(value: Any, kind: str) -> Any:
    """``value`` as a field of type ``kind``, or None when it cannot be."""
    try:
        if kind == "tensor":
            return _weights(np.asarray(value))
        if isinstance(value, np.ndarray):
            value = value.item() if kind in ("int", "float") and value.size == 1 else value.tolist()
        if kind == "int" and not isinstance(value, (str, float, list)):
            return int(value)
        if kind == "float" and isinstance(value, (int, float, np.number)):
            return float(value)
        if kind == "string" and isinstance(value, str):
            return value
        if kind in ("ints", "floats") and isinstance(value, (list, tuple)):
            cast = int if kind == "ints" else float
            if kind == "ints" and any(isinstance(v, float) for v in value):
                return None
            return [cast(v) for v in value]
    except (TypeError, ValueError):
        return None
    return None


def _attr_value(value: Any) -> Any:
    if isinstance(value, gs.Constant):
        return value.values
    return value.decode() if isinstance(value, bytes) else value


@register_pass
class MapPluginsPass(Pass):
    name = "map-plugins"
    summary = "Replace nodes (by op type or fusion pattern) with TensorRT plugin nodes from a --plugin-map file"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        raw = ctx.options.plugin_map
        if raw is None:
            raise UserInputError("map-plugins needs a plugin map (surgery optimize --plugin-map FILE.toml)")
        rules = raw if isinstance(raw, list) else parse_plugin_map(raw)
        result = PassResult()
        accepted: list[tuple[gs.Node, MapRule, list[gs.Tensor], dict[str, Any]]] = []
        for node in list(graph.nodes):
            rule = next((r for r in rules if r.selects(node)), None)
            if rule is None or self._already(node, rule):
                continue
            result.stats["matched"] += 1
            built = self._build(node, rule)
            if isinstance(built, str):
                result.reject(built, node.name)
                continue
            accepted.append((node, rule, *built))
        names = NameGen(graph, self.name)
        for node, rule, inputs, attrs in accepted:
            spec = self._spec(rule, attrs)
            new = make_plugin_node(spec, inputs, list(node.outputs), attrs, name=names())
            site = node.name
            disconnect([node])
            graph.nodes.append(new)
            result.apply(site, f"mapped:{rule.plugin}")
        if accepted:
            graph.cleanup().toposort()
        return result

    @staticmethod
    def _already(node: gs.Node, rule: MapRule) -> bool:
        """A node that already is the rule's plugin (keeps the pass idempotent when op == plugin)."""
        return node.op == rule.plugin and node.domain == PLUGIN_DOMAIN and \
            str(node.attrs.get("plugin_version", "")) == rule.version

    @staticmethod
    def _field_type(rule: MapRule, name: str, value: Any) -> str:
        if name in rule.types:
            return rule.types[name]
        spec = get_plugin_spec(rule.plugin)
        if spec is not None and spec.version == rule.version and name in spec.fields:
            return spec.fields[name]
        return _kind_of(value)

    def _spec(self, rule: MapRule, attrs: dict[str, Any]) -> PluginSpec:
        return PluginSpec(op=rule.plugin, version=rule.version, namespace=rule.namespace,
                          fields={k: self._field_type(rule, k, v) for k, v in attrs.items()}, builtin=False)

    def _build(self, node: gs.Node, rule: MapRule) -> tuple[list[gs.Tensor], dict[str, Any]] | str:
        present = [i for i, t in enumerate(node.inputs) if t.name]
        raw: dict[str, Any] = {}
        for index, name in rule.const_inputs.items():
            if index not in present:
                return "field-input-missing"
            value = const_value(node.inputs[index])
            if value is None:
                return "field-input-not-constant"
            raw[name] = np.asarray(value)
        for attr, name in rule.attrs.items():
            if attr not in node.attrs:
                continue  # the plugin's default applies
            value = _attr_value(node.attrs[attr])
            if name in rule.values:
                table = rule.values[name]
                if str(value) not in table:
                    return "attr-value-not-mapped"
                value = table[str(value)]
            raw[name] = value
        raw.update(rule.fields)
        attrs: dict[str, Any] = {}
        for name, value in raw.items():
            kind = self._field_type(rule, name, value)
            coerced = _coerce(value, kind)
            if coerced is None:
                return "field-type-mismatch"
            if isinstance(coerced, str) and kind == "tensor":
                return coerced  # a rejection reason from _weights
            attrs[name] = coerced
        order = rule.inputs if rule.inputs is not None else [i for i in present if i not in rule.const_inputs]
        if any(i not in present for i in order):
            return "input-missing"
        return [node.inputs[i] for i in order], attrs
