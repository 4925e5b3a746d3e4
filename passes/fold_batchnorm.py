"""``fold-batchnorm``: fold an inference BatchNormalization into the Conv, ConvTranspose or Gemm before it.

Summary:
    ``BN(y) = scale * (y - mean) / sqrt(var + eps) + bias`` is ``k * y + s`` per channel, with
    ``k = scale / sqrt(var + eps)`` and ``s = bias - k * mean``. The layer's weights are scaled by ``k``
    per output channel and its bias becomes ``k * bias + s`` (a layer without a bias gets one); the
    BatchNormalization goes. Layouts and groups: ``passes/_channel_fold.py``.

Matches::

    Conv | ConvTranspose | Gemm (x, W[, B]) -> BatchNormalization(scale, bias, mean, var)

    The layer's output feeds only the BatchNormalization and is no graph output, and the
    BatchNormalization has one output: the inference form (``training_mode=1`` needs three). The
    pattern requires all of that; ``--explain`` says which one failed.

Rejects:
    bn-not-spatial (``spatial=0``, opset 7-8), bn-params-not-constant, bn-params-shape (not ``[C]``
    for the layer's C output channels), weight-not-constant, weight-shape-unknown, unsupported-dtype
    (the weights are not float16/32/64), bias-not-constant, fold-overflows-dtype (the folded values
    do not fit the weights' dtype, e.g. fp16 with a tiny variance).
    Below opset 7 nothing is matched (onnxruntime runs BatchNormalization from opset 7 on).

Numerics:
    Folded in float64 and cast back to the weights' dtype once: fp32 outputs agree to float rounding
    (~1e-6 relative), fp16 ones to fp16 rounding of the folded weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import onnx_graphsurgeon as gs

from passes._channel_fold import (
    MIN_OPSET, Layer, cast_back, folded_bias, layer_patterns, read_layer, rebuilt, scale_weight, unfolded_reason,
)
from surgery.graph_utils import NameGen, commuted_patterns, const_value
from surgery.registry import register_pass
from surgery.rewrite import Match, PatternRewritePass, Reject, State

_BN = ("bn", "BatchNormalization", ["layer", "scale", "bias", "mean", "var"])
_BUILT = {key: commuted_patterns(variables, nodes, ["bn"])[0][1]  # nothing to commute: one order
          for key, variables, nodes in layer_patterns([_BN], ["scale", "bias", "mean", "var"])}


@dataclass(frozen=True)
class _Plan:
    layer: Layer
    weight: np.ndarray
    bias: np.ndarray


@register_pass
class FoldBatchNormPass(PatternRewritePass[State, str]):
    name = "fold-batchnorm"
    summary = "Fold an inference BatchNormalization into the preceding Conv / ConvTranspose / Gemm"
    anchor_ops = ("BatchNormalization",)
    until_stable = True  # Conv -> BN -> BN: the second BN follows a layer only once the first is folded
    rewrites_ops = ("BatchNormalization",)
    runs_after = MappingProxyType({"matmul-add-to-gemm": "the Gemm it makes from MatMul+Add may feed a BatchNormalization"})

    def patterns(self, state: State) -> dict[str, tuple[gs.GraphPattern, str]]:
        return {key: (p, key) for key, p in _BUILT.items()} if int(state.graph.opset) >= MIN_OPSET else {}

    def check(self, m: Match[str], state: State) -> _Plan | Reject:
        bn, node = m.get("bn"), m.get("layer")
        if not int(bn.attrs.get("spatial", 1)):
            return Reject("bn-not-spatial", bn.outputs[0])
        layer = read_layer(node)
        if isinstance(layer, Reject):
            return layer
        weight = const_value(layer.weight)
        if weight is None:
            return Reject("weight-not-constant", layer.weight)
        params = []
        for t in bn.inputs[1:5]:
            values = const_value(t)
            if values is None:
                return Reject("bn-params-not-constant", t)
            if values.shape != (layer.channels,):
                return Reject("bn-params-shape", t)
            params.append(values.astype(np.float64))
        scale, shift, mean, var = params
        k = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        new_weight = cast_back(scale_weight(layer, weight.astype(np.float64), k), weight.dtype, layer.weight)
        new_bias = cast_back(folded_bias(layer, k, shift - k * mean), weight.dtype, bn.inputs[1])
        if isinstance(new_weight, Reject):
            return new_weight
        if isinstance(new_bias, Reject):
            return new_bias
        return _Plan(layer, new_weight, new_bias)

    def rewrite(self, m: Match[str], plan: _Plan, state: State, names: NameGen) -> list[gs.Node]:
        return [rebuilt(plan.layer, m.outputs[0], names, plan.weight, plan.bias)]

    def unmatched_reason(self, node: gs.Node, state: State) -> str:
        return unfolded_reason(node, state.graph, "the BatchNormalization")

    def site(self, nodes: list[gs.Node]) -> str:
        return next(n for n in nodes if n.op == "BatchNormalization").name

