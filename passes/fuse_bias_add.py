"""``fuse-bias-add``: move a constant per-channel Add after a Conv, ConvTranspose or Gemm into its bias.

Summary:
    ``Add(layer(x), c)`` with ``c`` constant and broadcastable per output channel (``[C]`` on a Gemm,
    ``[C, 1, 1]``, ``[1, C, 1, 1]``, a scalar, ...) becomes the layer with bias ``bias + c`` (a layer
    without a bias gets ``c``; a Gemm's ``beta * C`` is folded in with ``beta = 1``). The weights are
    untouched, so they need not be constant.

Matches (either operand order)::

    Conv | ConvTranspose | Gemm (x, W[, B]) -> Add(c)      c an initializer

    The layer's output feeds only the Add and is no graph output (``--explain`` says which it was).

Rejects:
    addend-not-per-channel (``c`` would act on other axes than the output channels, or broadcast the
    output to a larger shape), weight-shape-unknown, unsupported-dtype (not float16/32/64),
    bias-not-constant, fold-overflows-dtype.
    Below opset 7 nothing is matched.

Numerics:
    The sum is taken in float64 and rounded once to the layer's dtype, where the original rounded
    twice: outputs agree to float rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import onnx_graphsurgeon as gs

from passes._channel_fold import (
    MIN_OPSET, Layer, cast_back, folded_bias, layer_patterns, per_channel, read_layer, rebuilt, unfolded_reason,
)
from surgery.graph_utils import NameGen, commuted_patterns
from surgery.registry import register_pass
from surgery.rewrite import Match, PatternRewritePass, Reject, State

_ADD = ("add", "Add", ["layer", "$c"])
_BUILT = {f"{key}:{order}": p for key, variables, nodes in layer_patterns([_ADD], [])
          for order, p in commuted_patterns(variables, nodes, ["add"])}


@dataclass(frozen=True)
class _Plan:
    layer: Layer
    bias: np.ndarray


@register_pass
class FuseBiasAddPass(PatternRewritePass[State, str]):
    name = "fuse-bias-add"
    summary = "Fold a constant per-channel Add after a Conv / ConvTranspose / Gemm into its bias"
    anchor_ops = ("Add",)
    until_stable = True  # Conv -> Add -> Add: the second Add follows a layer only once the first is folded
    runs_after = MappingProxyType({"matmul-add-to-gemm": "the Gemm it makes from MatMul+Add may take a further Add"})

    def patterns(self, state: State) -> dict[str, tuple[gs.GraphPattern, str]]:
        return {key: (p, key) for key, p in _BUILT.items()} if int(state.graph.opset) >= MIN_OPSET else {}

    def check(self, m: Match[str], state: State) -> _Plan | Reject:
        layer = read_layer(m.get("layer"))
        if isinstance(layer, Reject):
            return layer
        c = m.constants["c"]
        addend = per_channel(c.values, layer)
        if addend is None:
            return Reject("addend-not-per-channel", c)
        bias = cast_back(folded_bias(layer, None, addend), c.values.dtype, c)
        return bias if isinstance(bias, Reject) else _Plan(layer, bias)

    def rewrite(self, m: Match[str], plan: _Plan, state: State, names: NameGen) -> list[gs.Node]:
        return [rebuilt(plan.layer, m.outputs[0], names, None, plan.bias)]

    def unmatched_reason(self, node: gs.Node, state: State) -> str:
        return unfolded_reason(node, state.graph, "the Add", constant_operands=True)

    def site(self, nodes: list[gs.Node]) -> str:
        return next(n for n in nodes if n.op == "Add").name
