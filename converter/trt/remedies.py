"""Plain words for nodes TensorRT cannot take: data only (op lists, reasons, remedies, message translations).

* ``TRANSLATIONS`` turns a cryptic parser/builder message into one sentence (``rules.translate``; the
  original is kept as the node's ``detail``); ``UNINFORMATIVE`` are the messages that say nothing.
* ``QUANTIZED_OPS`` and ``DATA_DEPENDENT_OPS`` get their reason and remedy from what they are, since the
  parser says only "false" about them: integer-arithmetic quantized ops (TensorRT takes quantization
  only as Q/DQ) and ops whose output shape depends on the input values (Unique, NonZero, Compress).

The logic that uses them is a rule each in ``converter.trt.rules``.
"""
from __future__ import annotations

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
UNINFORMATIVE = ("", "false", "assertion failed: false")

TRANSLATIONS: list[tuple[str, str]] = [
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
    (r"graph_jit\S*: CHECK\(status == CUDA_SUCCESS\)",
     "TensorRT-RTX's JIT called the CUDA driver for this build and none is usable here (seen with refittable and "
     "weight-stripped engines, which it cannot build without a driver)"),
    (r"Unable to load library: (libnvinfer_lean\S*?):", "the builder could not load the lean runtime {0} that a "
     "version-compatible engine embeds; install it or add --exclude-lean-runtime"),
]
