"""Plain-words reasons and remedies for nodes TensorRT cannot take.

* ``translate`` turns a cryptic parser/builder message into one sentence (the original is kept as
  ``detail``).
* ``foreign_collision`` flags ops from another domain whose name is also an ONNX op: the TensorRT
  parser ignores the domain, so e.g. ``com.microsoft:Attention`` would be imported as ONNX Attention
  with different inputs and meaning.
* ``plugin_problem`` tells "plugin not loaded" from "plugin field mismatch" (and a plugin named like an
  ONNX op) using the plugin registry and the plugin catalog (``converter.plugins.check``).
* ``remedy_for`` names a registered pass that rewrites the op, a described plugin, or says there is
  no known remedy.
* Two kinds of op get their reason and remedy from what they are, since the parser says only "false"
  about them: integer-arithmetic quantized ops (TensorRT takes quantization only as Q/DQ) and ops whose
  output shape depends on the input values (Unique, NonZero, Compress).
"""
from __future__ import annotations

import re
from types import ModuleType
from typing import Any

from converter.plugins.check import diagnose
from converter.trt.static_support import ONNX_DOMAINS, onnx_op_exists
from surgery.plugins import PLUGIN_DOMAIN, plugin_specs
from surgery.registry import list_passes
from surgery.rewrite import NodeRewritePass

NO_REMEDY = "no known remedy"
KEEP_ON_ORT = "keep it on onnxruntime: `surgery partition MODEL -o DIR` then `surgery run-partitioned DIR`"

# integer-arithmetic quantized ops (ONNX and com.microsoft): TensorRT has no importer for any of them
QUANTIZED_OPS = frozenset((
    "ConvInteger MatMulInteger DynamicQuantizeLinear QLinearConv QLinearMatMul "  # ONNX
    "DynamicQuantizeLSTM DynamicQuantizeMatMul MatMulIntegerToFloat QAttention QGemm QLinearAdd QLinearMul "
    "QLinearAveragePool QLinearGlobalAveragePool QLinearConcat QLinearLeakyRelu QLinearSigmoid QLinearSoftmax "
    "QLinearWhere QOrderedMatMul").split())
# ops whose output shape depends on the values of their inputs
DATA_DEPENDENT_OPS = frozenset(("Unique", "NonZero", "Compress"))

QUANTIZED_REASON = ("'{op}' is an integer-arithmetic quantized op: TensorRT takes quantization only in the explicit "
                    "Q/DQ form (QuantizeLinear/DequantizeLinear around float Conv/MatMul/Gemm)")
QUANTIZED_REMEDY = ("re-quantize the float model in QDQ format (onnxruntime.quantization quantize_static or "
                    "quantize_dynamic with quant_format=QuantFormat.QDQ, or NVIDIA ModelOpt), or " + KEEP_ON_ORT)
DATA_DEPENDENT_REASON = ("the output shape of '{op}' depends on its input values (a data-dependent shape), "
                         "which TensorRT cannot express here")
_UNINFORMATIVE = ("", "false", "assertion failed: false")

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
    (r"data[- ]dependent|\bDDS\b", "this node's output shape depends on its input values (a data-dependent shape), "
                                     "which TensorRT cannot handle here"),
    (r"dynamic.*not supported|Dynamic.*unsupported", "TensorRT cannot handle a dynamic shape at this node"),
    (r"cudaError|CUDA driver version is insufficient", "no usable GPU/CUDA driver for this TensorRT build"),
]

def translate(desc: str, op: str) -> str:
    """One plain sentence for a TensorRT error message about ``op`` (what the op is, when that says more)."""
    words = _translate_message(desc, op)
    known = op_reason(op)
    if known is None:
        return words or f"the parser rejected '{op or 'this node'}' without saying why (its message: {desc.strip()!r})"
    return f"{known}; {words}" if words else known


def op_reason(op: str) -> str | None:
    """Why TensorRT cannot take ``op`` from what kind of op it is (quantized, data-dependent), else None."""
    if op in QUANTIZED_OPS:
        return QUANTIZED_REASON.format(op=op)
    if op in DATA_DEPENDENT_OPS:
        return DATA_DEPENDENT_REASON.format(op=op)
    return None


def _translate_message(desc: str, op: str) -> str | None:
    """The translation of a parser message, its first line if no pattern matches, None if it says nothing."""
    if desc.strip().lower() in _UNINFORMATIVE:
        return None
    for pattern, words in _TRANSLATIONS:
        m = re.search(pattern, desc, flags=re.IGNORECASE)
        if m:
            return words.format(*(m.groups() or (op,)), op=op)
    return desc.strip().splitlines()[0][:300]


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
    (see ``converter.plugins.check.diagnose``)."""
    return diagnose(trt, op, attrs)


def remedy_for(op: str, kind: str) -> str:
    """The registered pass or described plugin that fixes this node, else ``NO_REMEDY``."""
    registered = {cls.name: cls for cls in list_passes()}
    if kind == "build-failure" and op == "Attention":
        fp16 = ", or pass convert-precision (fp16)" if "convert-precision" in registered else ""
        return "convert --decomposable-attention" + fp16
    if op in QUANTIZED_OPS:
        return QUANTIZED_REMEDY
    if kind in ("plugin-name-collision", "plugin-not-loaded", "plugin-field-mismatch"):
        return _plugin_remedy(op, kind)
    found = _pass_for(op, registered) or _described_plugin(op)
    if op in DATA_DEPENDENT_OPS:
        return f"{found} (when the input is a build-time constant), else {KEEP_ON_ORT}" if found else KEEP_ON_ORT
    return found or NO_REMEDY


def _pass_for(op: str, registered: dict[str, Any]) -> str | None:
    """``pass NAME`` for a registered pass that declares it rewrites the op, else None."""
    for name, cls in registered.items():
        ops = cls.rewrites_ops or (cls.ops if issubclass(cls, NodeRewritePass) else ())
        if op in ops:
            return f"pass {name}"
    return None


def _plugin_remedy(op: str, kind: str) -> str:
    """What to do about a plugin node that collides with an ONNX op, is not registered, or mismatches its creator."""
    if kind == "plugin-name-collision":
        return "give the plugin a name that is no ONNX op (or write the ONNX op itself where TensorRT imports it)"
    spec = plugin_specs().get(op)
    what = f"plugin {spec.op} v{spec.version}" if spec is not None else f"plugin '{op}'"
    return f"load the library that implements {what} with --plugins LIB.so (check and convert take it), or {KEEP_ON_ORT}"


def _described_plugin(op: str) -> str | None:
    """``plugin NAME vN`` for a plugin whose notes name the op, else None."""
    for spec in plugin_specs().values():
        if re.search(rf"\b{re.escape(op)}\b", spec.notes):
            return f"plugin {spec.op} v{spec.version}"
    return None
