"""``fuse-rmsnorm``: fuse decomposed RMS normalization (Llama/T5 style) into one op or plugin.

Summary:
    Finds ``x * rsqrt(mean(x^2) + eps) [* weight]`` chains and replaces each with
    ``RMSNormalization`` (opset 23, ``axis=-1``; ``emit=onnx`` or ``ort``) or the ``SurgeryRMSNorm``
    plugin (``emit=plugin``). The transformers ``LlamaRMSNorm`` fp32 upcast (Cast to fp32 at entry,
    Cast back before the weight Mul) is absorbed.

Matches:
    ReduceMean axes as attribute (<18) or input (>=18)::

        x -> Pow(x, 2) | Mul(x, x) -> ReduceMean -> Add(eps) -> Sqrt = s
          -> Div(x, s) | Mul(x, Reciprocal(s)) | Mul(x, Div(1, s))   (either Mul operand order)
          [-> Cast(to=T)] [-> Mul(weight)]                            (either operand order)
        =>  RMSNormalization(x, weight, axis=-1, stash_type=1)   (x = the Cast input when x = Cast(T -> fp32))

Requires:
    Shapes where known (run ``infer-shapes`` first): the hidden size is needed when there is no weight.
    ``emit=onnx``/``ort`` raise the opset to 23 once per run, before the first rewrite.

Rejects:
    reduce-axes-not-last, reduce-keepdims-0, pow-exponent-not-2, eps-not-constant, eps-not-scalar,
    reciprocal-numerator-not-1, scale-not-constant, scale-shape-mismatch, hidden-size-unknown,
    cast-island-unbalanced, input-is-mean-centred (x = a - mean(a): that is a LayerNorm, left to
    ``fuse-layernorm`` whatever the pass order), opset-raise-refused, non-convex. A rejected weight Mul falls back to
    fusing the chain without it.

Numerics:
    ``stash_type=1`` computes the mean of squares in fp32, as the upcast island did. In an fp16 island
    the weight is applied before the final rounding to fp16 instead of after it: differences stay
    within one fp16 ulp. fp32 results agree to ~1e-6 relative.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import onnx_graphsurgeon as gs

from passes._norm_patterns import (
    Affine, RsqrtForm, add_affine_tail, add_reduce, add_rsqrt_normalize, affine_tensors, channel_vector, is_last_axis,
    norm_input_and_scale, present_variants, reduce_axes, rsqrt_normalize_eps,
)
from surgery.graph_utils import NameGen, const_value, is_const, last_dim, producer, scalar_value, tensor_rank
from surgery.pass_base import PassContext
from surgery.plugins import make_plugin_node
from passes.plugins import RMSNORM_PLUGIN
from surgery.registry import register_pass
from surgery.rewrite import Match, PatternRewritePass, Reject, State

RMSNORM_OPSET = 23
ORT_NOTE = ("ort: emitted RMSNormalization-23 (onnxruntime registers SimplifiedLayerNormalization "
            "in the default ONNX domain, which the ONNX checker rejects)")


@dataclass(frozen=True)
class _Variant:
    """How x² and the rsqrt are spelled, an exit Cast, and the weight Mul (a gamma-only ``Affine``)."""

    square: Literal["pow", "mul"]
    form: RsqrtForm
    cast: bool
    affine: Affine

    @property
    def key(self) -> str:
        tail = ("+cast" if self.cast else "") + (f"+{self.affine.key}" if self.affine.key else "")
        return f"{self.square}/{self.form.value}{tail}"

    @property
    def ops(self) -> set[str]:
        ops = {"ReduceMean", "Add", "Sqrt", "Pow" if self.square == "pow" else "Mul"} | self.form.ops
        return ops | ({"Cast"} if self.cast else set()) | ({"Mul"} if self.affine.gamma else set())


_WEIGHT_TAILS = (Affine("g"), Affine("gr"), Affine())


def _variants() -> list[_Variant]:
    return [_Variant(sq, form, cast, affine)  # longest chains first: the first variant to claim a node wins
            for affine, cast, sq, form in itertools.product(_WEIGHT_TAILS, (True, False), ("pow", "mul"), RsqrtForm)]


def _pattern(v: _Variant, axes_input: bool) -> gs.GraphPattern:
    p = gs.GraphPattern()
    eps, x = p.variable(), p.variable()  # eps first: see add_rsqrt_normalize
    sq = p.add("square", "Pow", inputs=[x, p.variable()]) if v.square == "pow" else p.add("square", "Mul", inputs=[x, x])
    var = add_reduce(p, "var", "ReduceMean", sq, axes_input)
    p.set_output_tensors([add_affine_tail(p, add_rsqrt_normalize(p, x, var, v.form, eps), v.cast, v.affine)])
    return p


@dataclass
class RMSNormState(State):
    axes_input: bool  # opset >= 18: ReduceMean takes its axes as an input
    variants: dict[str, _Variant]  # the variants whose ops the graph has, by key


class _Plan(NamedTuple):
    """What ``check`` found: the fused op's input, epsilon and per-channel weight."""

    x: gs.Tensor
    eps: float
    gamma: np.ndarray


@register_pass
class FuseRMSNormPass(PatternRewritePass[RMSNormState, _Variant]):
    """Variants are ``_Variant`` chains; a variant's key names it in the report."""

    name = "fuse-rmsnorm"
    summary = "Fuse decomposed RMSNorm (incl. the Llama fp32 upcast) into RMSNormalization or a plugin"
    anchor_ops = ("ReduceMean",)
    emits = ("onnx", "ort", "plugin")

    def prepare(self, graph: gs.Graph, ctx: PassContext) -> RMSNormState:
        return RMSNormState(graph, ctx, int(graph.opset) >= 18, present_variants(graph, _variants()))

    def required_opset(self, state: RMSNormState) -> int | None:
        return None if state.emit == "plugin" else RMSNORM_OPSET

    def patterns(self, state: RMSNormState) -> dict[str, tuple[gs.GraphPattern, _Variant]]:
        return {key: (_pattern(v, state.axes_input), v) for key, v in state.variants.items()}

    def check(self, m: Match[_Variant], state: RMSNormState) -> _Plan | Reject:
        v = m.variant
        square = m.get("square")
        x = square.inputs[0]
        rank, size = tensor_rank(x), last_dim(x)
        if _mean_centred(x):
            return Reject("input-is-mean-centred", x)
        var = m.get("var")
        if not is_last_axis(reduce_axes(var), rank):
            return Reject("reduce-axes-not-last", var.inputs[1] if len(var.inputs) > 1 else None)
        if var.attrs.get("keepdims", 1) == 0:
            return Reject("reduce-keepdims-0")
        if v.square == "pow" and scalar_value(square.inputs[1]) != 2.0:
            return Reject("pow-exponent-not-2", square.inputs[1])
        eps = rsqrt_normalize_eps(m)
        if isinstance(eps, Reject):
            return eps
        gamma = None
        gamma_t, _ = affine_tensors(m, v.affine)
        if gamma_t is not None:
            if not is_const(gamma_t):
                return Reject("scale-not-constant", gamma_t)
            gamma = channel_vector(const_value(gamma_t), size, rank)
            if gamma is None:
                return Reject("scale-shape-mismatch", gamma_t)
        found = norm_input_and_scale(x, m.get("cast") if v.cast else None, gamma, size)
        if isinstance(found, Reject):
            return found
        return _Plan(found[0], eps, found[1])

    def rewrite(self, m: Match[_Variant], plan: _Plan, state: RMSNormState, names: NameGen) -> list[gs.Node]:
        out, name = m.outputs[0], names()
        if state.emit == "plugin":
            return [make_plugin_node(RMSNORM_PLUGIN, [plan.x], [out], {"epsilon": plan.eps, "gamma": plan.gamma}, name)]
        if state.emit == "ort" and ORT_NOTE not in state.notes:
            state.notes.append(ORT_NOTE)
        return [gs.Node("RMSNormalization", name=name, attrs={"axis": -1, "epsilon": plan.eps, "stash_type": 1},
                        inputs=[plan.x, gs.Constant(f"{name}/scale", plan.gamma)], outputs=[out])]


def _mean_centred(x: gs.Tensor) -> bool:
    """True for ``x = a - mean(a)``: the chain is then a LayerNorm."""
    sub = producer(x)
    if sub is None or sub.op != "Sub":
        return False
    mean = producer(sub.inputs[1])
    return mean is not None and mean.op in ("ReduceMean", "GlobalAveragePool") and mean.inputs[0] is sub.inputs[0]
