"""``fuse-swish``: fuse ``x * Sigmoid(alpha * x)`` (SiLU when alpha is 1) into one op.

Summary:
    ``emit="onnx"``: ``Swish(x, alpha)`` (opset 24; TensorRT-RTX 1.7 parses and builds it);
    ``emit="ort"``: ``com.microsoft.QuickGelu(x, alpha)``, which computes the same formula. There is no
    TensorRT plugin for it, so ``plugin`` is not offered.

Matches (both operand orders of each Mul)::

    silu:   Mul(x, Sigmoid(x))                -> Swish(x, alpha=1)
    scaled: Mul(x, Sigmoid(Mul(x, alpha)))    -> Swish(x, alpha)      alpha a scalar constant

Requires:
    onnx emit raises the opset to 24 once, before the first rewrite (refused: opset-raise-refused).
    Runs after fuse-groupnorm (its plugin absorbs a SiLU that follows a GroupNorm) and after fuse-gelu
    (alpha = 1.702 is QuickGelu there).

Rejects:
    alpha-not-scalar (the scale is a constant with more than one value).

Numerics:
    The fused op evaluates the same formula; outputs match to float rounding.
"""
from __future__ import annotations

from types import MappingProxyType

import onnx_graphsurgeon as gs

from surgery.graph_utils import NameGen, commuted_patterns, scalar_value
from surgery.registry import register_pass
from surgery.rewrite import Match, PatternRewritePass, Reject, State

_FORMS = {
    "silu": [("sig", "Sigmoid", ["x"]), ("out", "Mul", ["x", "sig"])],
    "scaled": [("sx", "Mul", ["x", "$alpha"]), ("sig", "Sigmoid", ["sx"]), ("out", "Mul", ["x", "sig"])],
}
_BUILT = {form: commuted_patterns(["x"], nodes, ["out"]) for form, nodes in _FORMS.items()}


@register_pass
class FuseSwishPass(PatternRewritePass[State, str]):
    name = "fuse-swish"
    summary = "Fuse x*Sigmoid(alpha*x) (SiLU) into Swish-24 (onnx) or com.microsoft QuickGelu (ort)"
    anchor_ops = ("Sigmoid",)
    emits = ("onnx", "ort")
    runs_after = MappingProxyType({
        "fuse-groupnorm": "its plugin absorbs the SiLU after a GroupNorm",
        "fuse-gelu": "x*Sigmoid(1.702x) is quick GELU, fused there",
    })

    def patterns(self, state: State) -> dict[str, tuple[gs.GraphPattern, str]]:
        return {f"{form}:{order}": (p, form) for form, built in _BUILT.items() for order, p in built}

    def required_opset(self, state: State) -> int | None:
        return 24 if state.emit == "onnx" else None

    def check(self, m: Match[str], state: State) -> float | Reject:
        if m.variant == "silu":
            return 1.0
        alpha = scalar_value(m.constants["alpha"])
        return Reject("alpha-not-scalar", m.constants["alpha"]) if alpha is None else alpha

    def rewrite(self, m: Match[str], alpha: float, state: State, names: NameGen) -> list[gs.Node]:
        x, out = m.inputs[0], m.outputs[0]
        if state.emit == "onnx":
            return [gs.Node("Swish", name=names(), attrs={"alpha": alpha}, inputs=[x], outputs=[out])]
        return [gs.Node("QuickGelu", name=names(), attrs={"alpha": alpha}, inputs=[x], outputs=[out],
                        domain="com.microsoft")]

    def unmatched_reason(self, node: gs.Node, state: State) -> str:
        return "no-swish-pattern (the Sigmoid's output is not multiplied by its own input)"

    def site(self, nodes: list[gs.Node]) -> str:
        return next(n for n in nodes if n.op == "Sigmoid").name
