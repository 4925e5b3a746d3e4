"""A built-in table of ONNX operator support in TensorRT 10.x/11.x, for use when no TensorRT is installed.

Summarised in our own words from the onnx-tensorrt operator matrix and checked against the
TensorRT-RTX 1.7 parser (``OnnxParser.supports_operator``) on every ONNX op. The ``static`` backend
answers per node with the same statuses and kinds as the library backends; it cannot see build-time
failures, data-type limits or plugin libraries, so its answers are "what the parser would say".
"""
from __future__ import annotations

from typing import Any

import onnx

from surgery.plugins import PLUGIN_DOMAIN

ONNX_DOMAINS = ("", "ai.onnx")

# op -> key restriction (empty when none worth stating). Everything here has a TensorRT importer.
SUPPORTED: dict[str, str] = {op: "" for op in (
    "Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh BatchNormalization BlackmanWindow Cast CastLike "
    "Ceil Celu Clip Concat Constant ConstantOfShape Cos Cosh DepthToSpace Div Dropout Elu Equal Erf Exp Expand "
    "EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool "
    "Greater GreaterOrEqual GridSample GroupNormalization HammingWindow HannWindow HardSigmoid HardSwish Hardmax "
    "Identity IsInf IsNaN LRN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax LpNormalization LpPool "
    "MatMul Max Mean MeanVarianceNormalization Min Mish Mod Mul Neg Not OneHot Or PRelu Pad Pow RandomNormal "
    "RandomNormalLike Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin "
    "ReduceProd ReduceSum ReduceSumSquare Relu Reshape Round Selu Shape Shrink Sigmoid Sign Sin Sinh Size "
    "Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Swish Tan Tanh ThresholdedRelu Tile "
    "Transpose Trilu Unsqueeze Upsample Where Xor"
).split()}
SUPPORTED.update({
    "Attention": "opset-23 importer; the build needs a dedicated fused kernel for the dtype/head size "
                 "(fp32 or small heads fail unless attention is marked decomposable)",
    "AveragePool": "2D or 3D pooling only",
    "Conv": "1D-3D; 1D is emulated with 2D",
    "ConvTranspose": "1D-3D deconvolution",
    "CumSum": "axis must be a build-time constant",
    "DequantizeLinear": "zero point must be zero (symmetric quantization)",
    "Einsum": "no ellipsis, no diagonal terms",
    "GRU": "bidirectional: both directions use the same activations",
    "If": "both branches must produce broadcast-compatible shapes",
    "InstanceNormalization": "input rank 3 to 5",
    "LSTM": "bidirectional: both directions use the same activations",
    "Loop": "no scan outputs of dynamic length beyond the trip count",
    "MaxPool": "2D or 3D pooling; the Indices output is not supported",
    "NonMaxSuppression": "output padded to a fixed size; thresholds must be constants",
    "NonZero": "native in TensorRT 10.x; TensorRT-RTX needs a NonZero plugin",
    "QuantizeLinear": "zero point must be zero (symmetric quantization)",
    "RMSNormalization": "opset-23 importer (TensorRT 10.14+/RTX)",
    "RNN": "bidirectional: both directions use the same activations",
    "RandomUniform": "seed is ignored",
    "RandomUniformLike": "seed is ignored",
    "Range": "float start/limit/delta must be constants",
    "Resize": "modes nearest/linear/cubic; antialias unsupported",
    "ReverseSequence": "static input shapes only",
    "RoiAlign": "implemented through the ROIAlign plugin",
    "RotaryEmbedding": "opset-23 importer (TensorRT 10.14+/RTX)",
    "STFT": "onesided real input only",
    "Scan": "forward scan only",
    "Scatter": "",
    "ScatterElements": "reduction none/add/mul/max/min",
    "ScatterND": "reduction none/add/mul",
    "Slice": "steps must be non-zero",
    "TensorScatter": "",
    "TopK": "K must be a build-time constant up to 3840",
})

# op -> why TensorRT has no importer for it (our words)
UNSUPPORTED: dict[str, str] = {
    **{op: "string/sequence/optional types do not exist in TensorRT" for op in (
        "ConcatFromSequence SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength "
        "SequenceMap SplitToSequence Optional OptionalGetElement OptionalHasElement RegexFullMatch StringConcat "
        "StringNormalizer StringSplit TfIdfVectorizer ImageDecoder").split()},
    **{op: "integer-arithmetic quantized op; use Q/DQ (QuantizeLinear/DequantizeLinear) instead" for op in (
        "ConvInteger MatMulInteger QLinearConv QLinearMatMul DynamicQuantizeLinear").split()},
    **{op: "bitwise ops on integers are not implemented" for op in (
        "BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor BitCast").split()},
    **{op: "training-only loss op" for op in ("NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss")},
    **{op: "output size depends on data in a way TensorRT cannot express" for op in ("Compress", "Unique")},
    **{op: "no TensorRT importer" for op in (
        "AffineGrid Bernoulli CenterCropPad Col2Im CumProd DFT DeformConv Det MaxRoiPool MaxUnpool MelWeightMatrix "
        "Multinomial SwiGLU").split()},
}

# ops the RTX parser knows but whose TensorRT-RTX import needs something absent by default
RTX_EXCEPTIONS: dict[str, tuple[str, str]] = {
    "NonZero": ("unsupported-op", "TensorRT-RTX has no built-in NonZero: it needs a NonZero plugin, and none is registered"),
}


def onnx_op_exists(op: str) -> bool:
    """True when ``op`` names an operator of the default ONNX domain."""
    try:
        onnx.defs.get_schema(op, domain="")
        return True
    except onnx.defs.SchemaError:
        return False


def classify(op: str, domain: str, attrs: dict[str, Any], target: str = "tensorrt-rtx") -> tuple[str, str, str]:
    """Classify one node as the TensorRT ONNX parser would.

    Args:
        op: node op type.
        domain: node domain.
        attrs: node attributes (names, and the values of a few that restrict support).
        target: "tensorrt" (10.x/11.x) or "tensorrt-rtx".

    Returns:
        (status, kind, reason): status is supported/unsupported/unknown; kind is ok, unsupported-op,
        plugin-not-loaded or unknown-op; reason is a plain-words sentence (empty when supported).
    """
    if domain == PLUGIN_DOMAIN or "plugin_version" in attrs:
        return ("unsupported", "plugin-not-loaded",
                f"plugin '{op}' is not in the TensorRT plugin registry (the static table cannot see plugin libraries)")
    if domain not in ONNX_DOMAINS and not (op in SUPPORTED or op in UNSUPPORTED):
        return ("unsupported", "unsupported-op",
                f"custom op '{op}' (domain '{domain}'): TensorRT has no importer and no plugin of that name is registered")
    if target == "tensorrt-rtx" and op in RTX_EXCEPTIONS:
        kind, reason = RTX_EXCEPTIONS[op]
        return "unsupported", kind, reason
    if target == "tensorrt-rtx" and op in ("ScatterElements", "ScatterND") and attrs.get("reduction", "none") != "none":
        return ("unsupported", "unsupported-op",
                f"TensorRT-RTX rejects {op} with reduction '{attrs['reduction']}' (only plain scatters import)")
    if op in SUPPORTED:
        return "supported", "ok", ""
    if op in UNSUPPORTED:
        return "unsupported", "unsupported-op", f"{op}: {UNSUPPORTED[op]}"
    if onnx_op_exists(op):
        return "unknown", "unknown-op", f"{op} is newer than this table; ask a TensorRT library backend"
    return ("unsupported", "unsupported-op",
            f"'{op}' is not an ONNX op: TensorRT has no importer and no plugin of that name is registered")


def restriction(op: str) -> str:
    """The key restriction TensorRT places on ``op`` (empty when none is recorded)."""
    return SUPPORTED.get(op, "")
