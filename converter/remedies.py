"""Plain-words reasons and remedies for nodes TensorRT cannot take.

* ``translate`` turns a cryptic parser/builder message into one sentence (the original is kept as
  ``detail``).
* ``foreign_collision`` flags ops from another domain whose name is also an ONNX op: the TensorRT
  parser ignores the domain, so e.g. ``com.microsoft:Attention`` would be imported as ONNX Attention
  with different inputs and meaning.
* ``plugin_problem`` tells "plugin not loaded" from "plugin field mismatch" (and a plugin named like an
  ONNX op) using the plugin registry and the plugin catalog (``plugin_check``).
* ``remedy_for`` names a registered pass that rewrites the op, a described plugin, or says there is
  no known remedy.
"""
from __future__ import annotations

import re
from types import ModuleType
from typing import Any

from converter.plugin_check import diagnose
from converter.static_support import ONNX_DOMAINS, onnx_op_exists
from surgery.plugins import PLUGIN_DOMAIN, plugin_specs
from surgery.registry import list_passes

NO_REMEDY = "no known remedy"

_TRANSLATIONS: list[tuple[str, str]] = [
    (r"(\w+) plugin creator version \S+ was not found", "TensorRT-RTX has no built-in {0}: it needs a {0} plugin, and none is registered"),
    (r"Plugin not found, are the plugin name, version, and namespace correct",
     "TensorRT has no importer for '{op}' and no plugin of that name/version/namespace is registered"),
    (r"Could not create the plugin",
     "the registered creator of '{op}' refused to create it: a field value it rejects, or no usable GPU "
     "(TensorRT instantiates plugins on the device even while parsing)"),
    (r"Node input was not registered", "an input of this node is missing (not a graph input, initializer or earlier output)"),
    (r"Attention operation was not supported by a dedicated kernel",
     "no fused attention kernel exists for this dtype/head size; mark attention decomposable "
     "(convert --decomposable-attention) or run it in fp16/bf16"),
    (r"Unsupported reduction type|ScatterND with reduction is not supported",
     "TensorRT has no scatter reductions (add/mul/max/min); pass rewrite-static-scatter rewrites them when the indices are constant and distinct"),
    (r"UNSUPPORTED_DATATYPE|datatype.*not supported|Unsupported.*type", "TensorRT does not support a data type used by this node"),
    (r"must be an initializer|must be a constant|must be constant", "TensorRT needs one of this node's inputs to be a build-time constant"),
    (r"dynamic.*not supported|Dynamic.*unsupported", "TensorRT cannot handle a dynamic shape at this node"),
    (r"cudaError|CUDA driver version is insufficient", "no usable GPU/CUDA driver for this TensorRT build"),
]

# op -> pass names that rewrite it (only passes present in the registry are offered)
OP_PASSES: dict[str, tuple[str, ...]] = {
    "NonZero": ("rewrite-static-nonzero", "replace-unsupported-ops"),
    "Unique": ("replace-unsupported-ops",),
    "Compress": ("rewrite-static-nonzero", "replace-unsupported-ops"),
    "com.microsoft:Attention": ("replace-contrib-ops", "replace-unsupported-ops"),
    "com.microsoft:LayerNormalization": ("replace-contrib-ops", "replace-unsupported-ops"),
    "com.microsoft:SkipLayerNormalization": ("replace-contrib-ops", "replace-unsupported-ops"),
    "com.microsoft:Gelu": ("replace-contrib-ops", "replace-unsupported-ops"),
}


def translate(desc: str, op: str) -> str:
    """One plain sentence for a TensorRT error message (the message itself if nothing matches)."""
    for pattern, words in _TRANSLATIONS:
        m = re.search(pattern, desc, flags=re.IGNORECASE)
        if m:
            return words.format(*(m.groups() or (op,)), op=op)
    first = desc.strip().splitlines()[0] if desc.strip() else "rejected without a message"
    return first[:300]


def foreign_collision(op: str, domain: str) -> str | None:
    """A reason when a non-ONNX-domain op shares its name with an ONNX op, else None."""
    if domain in ONNX_DOMAINS or domain == PLUGIN_DOMAIN or not onnx_op_exists(op):
        return None
    return (f"{domain}:{op} has the name of the ONNX op {op}; TensorRT ignores the domain and would import it "
            f"as ONNX {op}, whose inputs and meaning differ")


def is_plugin_node(domain: str, attrs: dict[str, Any]) -> bool:
    return domain == PLUGIN_DOMAIN or "plugin_version" in attrs


def plugin_problem(trt: ModuleType | None, op: str, attrs: dict[str, Any]) -> tuple[str, str]:
    """(kind, reason) for a plugin node: plugin-name-collision, plugin-not-loaded, plugin-field-mismatch, or ok
    (see ``converter.plugin_check.diagnose``)."""
    return diagnose(trt, op, attrs)


def remedy_for(op: str, domain: str, kind: str) -> str:
    """The registered pass or described plugin that fixes this node, else ``NO_REMEDY``."""
    registered = {cls.name: cls for cls in list_passes()}
    if kind == "build-failure" and op == "Attention":
        fp16 = ", or pass convert-precision (fp16)" if "convert-precision" in registered else ""
        return "convert --decomposable-attention" + fp16
    key = op if domain in ONNX_DOMAINS else f"{domain}:{op}"
    for name in OP_PASSES.get(key, ()):
        if name in registered:
            return f"pass {name}"
    for name, cls in registered.items():
        if op in (getattr(cls, "rewrites_ops", ()) or getattr(cls, "ops", ())):  # ops: a NodeRewritePass's
            return f"pass {name}"
    if kind == "plugin-name-collision":
        return "give the plugin a name that is no ONNX op (or write the ONNX op itself where TensorRT imports it)"
    if kind in ("plugin-not-loaded", "plugin-field-mismatch"):
        spec = plugin_specs().get(op)
        if spec is not None:
            return f"load the library of plugin {spec.op} v{spec.version} with --plugins"
        return "load the library that implements this plugin with --plugins"
    for spec in plugin_specs().values():
        if re.search(rf"\b{re.escape(op)}\b", spec.notes):
            return f"plugin {spec.op} v{spec.version}"
    return NO_REMEDY
