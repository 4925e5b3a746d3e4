"""A built-in table of ONNX operator support in TensorRT 10.x/11.x, for use when no TensorRT is installed.

Data only. Summarised in our own words from the onnx-tensorrt operator matrix and checked against
the TensorRT-RTX 1.7 parser (``OnnxParser.supports_operator``) on every ONNX op. The rules in
``converter.trt.rules`` read these tables (``classify``, the TABLE stage) and add what depends on more
than the op's name (attributes, the target, plugins), so that the ``static`` backend answers per node
with the same statuses and kinds as the library backends. It cannot see build-time failures,
data-type limits or plugin libraries, so its answers are "what the parser would say".
"""
from __future__ import annotations

import onnx

ONNX_DOMAINS = ("", "ai.onnx")
# every operator of the default ONNX domain this onnx package knows, deprecated ones included
ONNX_OPS = frozenset(s.name for s in onnx.defs.get_all_schemas_with_history() if s.domain == "")

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
