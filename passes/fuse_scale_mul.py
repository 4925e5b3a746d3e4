"""``fuse-scale-mul``: fold a constant per-channel Mul after a Conv, ConvTranspose or Gemm into its weights.

Summary:
    ``Mul(layer(x), k)`` with ``k`` constant and broadcastable per output channel becomes the layer
    with output channel ``o``'s weights and bias multiplied by ``k[o]``. Caffe2-era exports write an
    affine BatchNormalization as BatchNormalization -> Mul(scale) -> Add(bias); once fold-batchnorm
    has taken the BatchNormalization, this pass and fuse-bias-add take the rest.

Matches (either operand order)::

    Conv | ConvTranspose | Gemm (x, W[, B]) -> Mul(k)      k an initializer

    The layer's output feeds only the Mul and is no graph output (``--explain`` says which it was).

Rejects:
    scale-not-per-channel (``k`` would act on other axes than the output channels, or broadcast the
    output to a larger shape), weight-not-constant, weight-shape-unknown, unsupported-dtype (not
    float16/32/64), bias-not-constant, fold-overflows-dtype.
    Below opset 7 nothing is matched.

Numerics:
    Scaled in float64 and rounded once to the weights' dtype: outputs agree to float rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import onnx_graphsurgeon as gs

from passes._channel_fold import (
    MIN_OPSET, Layer, cast_back, layer_patterns, per_channel, read_layer, rebuilt, scale_weight, unfolded_reason,
)
from surgery.graph_utils import NameGen, commuted_patterns, const_value
from surgery.registry import register_pass
from surgery.rewrite import Match, PatternRewritePass, Reject, State

_MUL = ("mul", "Mul", ["layer", "$k"])
_BUILT = {f"{key}:{order}": p for key, variables, nodes in layer_patterns([_MUL], [])
          for order, p in commuted_patterns(variables, nodes, ["mul"])}


@dataclass(frozen=True)
class _Plan:
    layer: Layer
    weight: np.ndarray
    bias: np.ndarray | None


@register_pass
class FuseScaleMulPass(PatternRewritePass[State, str]):
    name = "fuse-scale-mul"
    summary = "Fold a constant per-channel Mul after a Conv / ConvTranspose / Gemm into its weights and bias"
    anchor_ops = ("Mul",)
    until_stable = True  # Conv -> Mul -> Mul: the second Mul follows a layer only once the first is folded
    runs_after = MappingProxyType({"matmul-add-to-gemm": "the Gemm it makes from MatMul+Add may be scaled after"})

    def patterns(self, state: State) -> dict[str, tuple[gs.GraphPattern, str]]:
        return {key: (p, key) for key, p in _BUILT.items()} if int(state.graph.opset) >= MIN_OPSET else {}

    def check(self, m: Match[str], state: State) -> _Plan | Reject:
        layer = read_layer(m.get("layer"))
        if isinstance(layer, Reject):
            return layer
        weight = const_value(layer.weight)
        if weight is None:
            return Reject("weight-not-constant", layer.weight)
        k_tensor = m.constants["k"]
        k = per_channel(k_tensor.values, layer)
        if k is None:
            return Reject("scale-not-per-channel", k_tensor)
        new_weight = cast_back(scale_weight(layer, weight.astype(np.float64), k), weight.dtype, k_tensor)
        if isinstance(new_weight, Reject):
            return new_weight
        if layer.bias is None:
            return _Plan(layer, new_weight, None)
        new_bias = cast_back(k * layer.bias.astype(np.float64), weight.dtype, k_tensor)
        return new_bias if isinstance(new_bias, Reject) else _Plan(layer, new_weight, new_bias)

    def rewrite(self, m: Match[str], plan: _Plan, state: State, names: NameGen) -> list[gs.Node]:
        return [rebuilt(plan.layer, m.outputs[0], names, plan.weight, plan.bias)]

    def unmatched_reason(self, node: gs.Node, state: State) -> str:
        return unfolded_reason(node, state.graph, "the Mul", constant_operands=True)

    def site(self, nodes: list[gs.Node]) -> str:
        return next(n for n in nodes if n.op == "Mul").name
