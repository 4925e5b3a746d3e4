"""Pre-flight check of plugin nodes for ``surgery check``.

For each plugin node (domain ``trt.plugins`` or a ``plugin_version`` attribute) it answers, in this
order: does the name collide with an ONNX op (TensorRT's parser ignores the domain, so it would
import the node as that op); is a creator registered under exactly this name, version and namespace
(if one exists under another version or namespace, say which); do the node's attributes match the
creator's field list (``field_names``; else the plugin catalog, else our own ``PluginSpec``) by name
and type, including weights written as INT64 tensors, which plugin fields do not take.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import onnx

from converter.plugins.catalog import catalog_spec
from converter.trt.static_support import ONNX_OPS
from surgery.plugins import get_plugin_spec

_META = ("plugin_version", "plugin_namespace")
# TensorRT PluginFieldType name -> attribute kinds it accepts
_ACCEPTS = {
    "CHAR": {"string"},
    "DIMS": {"ints"},
    **{t: {"int", "ints", "tensor"} for t in ("INT8", "INT16", "INT32", "INT64")},
    **{t: {"float", "floats", "tensor"} for t in ("FLOAT16", "FLOAT32", "FLOAT64", "BF16")},
}
_SPEC_ACCEPTS = {"int": {"int"}, "float": {"float"}, "ints": {"ints"}, "floats": {"floats"}, "string": {"string"},
                 "tensor": {"tensor"}}


def attr_kind(value: Any) -> str:
    """Our field kind of an attribute value as ``helper.get_attribute_value`` returns it."""
    if isinstance(value, (onnx.TensorProto, np.ndarray)):
        return "tensor"
    if isinstance(value, bool) or isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, (str, bytes)):
        return "string"
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, int) for v in value):
            return "ints"
        if all(isinstance(v, float) for v in value):
            return "floats"
        return "strings"
    return "other"


def _is_int64_tensor(value: Any) -> bool:
    if isinstance(value, onnx.TensorProto):
        return value.data_type == onnx.TensorProto.INT64
    return isinstance(value, np.ndarray) and value.dtype == np.int64


def _creators(registry: Any) -> list[Any]:
    for attr in ("all_creators_recursive", "all_creators", "plugin_creator_list"):
        found = getattr(registry, attr, None)
        if found is not None:
            return list(found)
    return []


def find_creator(trt: ModuleType, name: str, version: str, namespace: str) -> Any | None:
    """The creator registered as (name, version, namespace), feature-detecting the registry API."""
    registry = trt.get_plugin_registry()
    for method in ("get_creator", "get_plugin_creator"):
        lookup = getattr(registry, method, None)
        if lookup is not None:
            try:
                return lookup(name, version, namespace)
            except (TypeError, RuntimeError):
                continue
    return next((c for c in _creators(registry) if c.name == name and str(c.plugin_version) == version
                 and str(c.plugin_namespace) == namespace), None)


def _creator_fields(creator: Any) -> dict[str, str] | None:
    fields = getattr(creator, "field_names", None)
    try:
        listed = {f.name: getattr(f.type, "name", str(f.type)) for f in (fields or [])}
    except (TypeError, AttributeError):
        return None
    return listed or None


def _field_problems(attrs: dict[str, Any], schema: dict[str, str], accepts: dict[str, set[str]],
                    source: str, required: bool) -> list[str]:
    given = {k: v for k, v in attrs.items() if k not in _META}
    problems = [f"unknown field '{k}'" for k in sorted(set(given) - set(schema))]
    if required:  # TensorRT's creators and built-in plugins have defaults; our own plugins need every field
        problems += [f"field '{k}' not given" for k in schema if k not in given]
    for k, v in given.items():
        want = schema.get(k)
        if want is None:
            continue
        kind = attr_kind(v)
        if _is_int64_tensor(v) and want != "INT64":
            problems.append(f"field '{k}' is an INT64 tensor: plugin fields take INT32 weights (cast it)")
        elif want in accepts and kind not in accepts[want]:
            problems.append(f"field '{k}' is {kind.upper()} but {source} expects {want}"
                            + (" (write it as a TENSOR attribute)" if want == "tensor" else ""))
    return problems


def diagnose(trt: ModuleType | None, op: str, attrs: dict[str, Any]) -> tuple[str, str]:
    """(kind, reason) for one plugin node: plugin-name-collision, plugin-not-loaded, plugin-field-mismatch or ok.

    Args:
        trt: the TensorRT module whose registry to ask; None checks names and fields against the catalog only.
        op: node op type (= plugin name).
        attrs: node attributes (``helper.get_attribute_value`` values).
    """
    version = str(attrs.get("plugin_version", "1"))
    namespace = str(attrs.get("plugin_namespace", ""))
    if op in ONNX_OPS:
        return ("plugin-name-collision",
                f"plugin '{op}' has the name of the ONNX op {op}: TensorRT's parser ignores the domain and imports "
                f"the node as ONNX {op}, so the plugin is never called")
    creator = None
    if trt is not None:
        if not hasattr(trt, "get_plugin_registry"):
            return "plugin-not-loaded", f"plugin '{op}' cannot be looked up (no TensorRT plugin registry)"
        creator = find_creator(trt, op, version, namespace)
        if creator is None:
            others = [c for c in _creators(trt.get_plugin_registry()) if c.name == op]
            if not others:
                return ("plugin-not-loaded",
                        f"plugin '{op}' is not in the TensorRT plugin registry (load its library with --plugins)")
            have = ", ".join(f"v{c.plugin_version} namespace '{c.plugin_namespace}'" for c in others)
            return ("plugin-not-loaded", f"plugin '{op}' v{version} namespace '{namespace}' is not registered; "
                                         f"registered: {have} (set plugin_version/plugin_namespace to match)")
    fields = _creator_fields(creator) if creator is not None else None
    if fields is not None:
        problems = _field_problems(attrs, fields, _ACCEPTS, "the registered creator", required=False)
    else:
        spec = catalog_spec(op, version) or get_plugin_spec(op)
        if spec is None or spec.version != version:
            return "ok", ""
        source = f"the {op} v{version} catalog entry" if spec.builtin else f"onnx-surgery's {op} v{version}"
        problems = _field_problems(attrs, spec.fields, _SPEC_ACCEPTS, source, required=not spec.builtin)
    if problems:
        return "plugin-field-mismatch", f"plugin '{op}' v{version}: " + "; ".join(problems)
    return "ok", ""

