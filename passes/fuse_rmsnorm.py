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

import numpy as np
import onnx_graphsurgeon as gs

from surgery.graph_utils import (
    RSQRT_FORM_OPS, RSQRT_FORMS, NameGen, add_affine_tail, add_reduce, add_rsqrt_normalize,
    channel_vector, const_value, is_const, is_last_axis, last_dim, norm_input_and_scale, producer, reduce_axes,
    present_variants, rsqrt_normalize_eps, scalar_value, tensor_rank,
)
from surgery.pass_base import PassContext, PassResult
from surgery.plugins import PluginSpec, make_plugin_node, register_plugin
from surgery.registry import register_pass
from surgery.rewrite import PatternRewritePass

RMSNORM_OPSET = 23
RMSNORM_PLUGIN = register_plugin(PluginSpec(
    op="SurgeryRMSNorm", version="1", namespace="onnx_surgery",
    fields={"epsilon": "float", "gamma": "tensor"}, inputs=("input",),
    notes="RMSNorm over the last axis: x / sqrt(mean(x^2) + epsilon) * gamma; statistics in fp32.",
))


@dataclass(frozen=True)
class _Variant:
    square: str  # "pow" | "mul"
    form: str  # an RSQRT_FORMS spelling
    cast: bool
    affine: str  # "g" (x * w), "gr" (w * x) or ""

    @property
    def key(self) -> str:
        return f"{self.square}/{self.form}" + ("+cast" if self.cast else "") + (f"+{self.affine}" if self.affine else "")

    @property
    def ops(self) -> set[str]:
        ops = {"ReduceMean", "Add", "Sqrt", "Pow" if self.square == "pow" else "Mul"} | RSQRT_FORM_OPS[self.form]
        return ops | ({"Cast"} if self.cast else set()) | ({"Mul"} if self.affine else set())


def _variants() -> list[_Variant]:
    return [_Variant(sq, form, cast, affine)  # longest chains first: the first variant to claim a node wins
            for affine, cast, sq, form in itertools.product(("g", "gr", ""), (True, False), ("pow", "mul"), RSQRT_FORMS)]


def _pattern(v: _Variant, axes_input: bool) -> gs.GraphPattern:
    p = gs.GraphPattern()
    eps, x = p.variable(), p.variable()  # eps first: see add_rsqrt_normalize
    sq = p.add("square", "Pow", inputs=[x, p.variable()]) if v.square == "pow" else p.add("square", "Mul", inputs=[x, x])
    var = add_reduce(p, "var", "ReduceMean", sq, axes_input)
    p.set_output_tensors([add_affine_tail(p, add_rsqrt_normalize(p, x, var, v.form, eps), v.cast, v.affine)])
    return p


@dataclass
class _Site:
    x: gs.Tensor
    eps: float
    gamma: np.ndarray


@register_pass
class FuseRMSNormPass(PatternRewritePass):
    name = "fuse-rmsnorm"
    summary = "Fuse decomposed RMSNorm (incl. the Llama fp32 upcast) into RMSNormalization or a plugin"
    anchor_ops = ("ReduceMean",)
    emits = ("onnx", "ort", "plugin")

    def required_opset(self, ctx: PassContext) -> int | None:
        return None if self.emit(ctx) == "plugin" else RMSNORM_OPSET

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        self._axes_input = int(graph.opset) >= 18
        self._variants = present_variants(graph, _variants())
        result = super().run(graph, ctx)
        if self.emit(ctx) == "ort" and result.changed:
            result.notes.append("ort: emitted RMSNormalization-23 (onnxruntime registers SimplifiedLayerNormalization "
                                "in the default ONNX domain, which the ONNX checker rejects)")
        return result

    def patterns(self, ctx: PassContext) -> dict[str, gs.GraphPattern]:
        return {key: _pattern(v, self._axes_input) for key, v in self._variants.items()}

    def check(self, m: gs.PatternMapping, variant: str, graph: gs.Graph, ctx: PassContext) -> str | None:
        return self._analyse(m, self._variants[variant])[1]

    def rewrite(self, graph: gs.Graph, m: gs.PatternMapping, variant: str, ctx: PassContext, names: NameGen) -> list[gs.Node]:
        site, _ = self._analyse(m, self._variants[variant])
        out, name = m.outputs[0], names()
        if self.emit(ctx) == "plugin":
            return [make_plugin_node(RMSNORM_PLUGIN, [site.x], [out], {"epsilon": site.eps, "gamma": site.gamma}, name)]
        return [gs.Node("RMSNormalization", name=name, attrs={"axis": -1, "epsilon": site.eps, "stash_type": 1},
                        inputs=[site.x, gs.Constant(f"{name}/scale", site.gamma)], outputs=[out])]

    def _analyse(self, m: gs.PatternMapping, v: _Variant) -> tuple[_Site | None, str | None]:
        square = m.get("square")
        x = square.inputs[0]
        rank, size = tensor_rank(x), last_dim(x)
        if _mean_centred(x):
            return None, "input-is-mean-centred"
        var = m.get("var")
        if not is_last_axis(reduce_axes(var), rank):
            return None, "reduce-axes-not-last"
        if var.attrs.get("keepdims", 1) == 0:
            return None, "reduce-keepdims-0"
        if v.square == "pow" and scalar_value(square.inputs[1]) != 2.0:
            return None, "pow-exponent-not-2"
        eps, reason = rsqrt_normalize_eps(m)
        if reason:
            return None, reason
        gamma = None
        if v.affine:
            gamma_t = m.get("gamma").inputs[0 if v.affine == "gr" else 1]
            if not is_const(gamma_t):
                return None, "scale-not-constant"
            gamma = channel_vector(const_value(gamma_t), size, rank)
            if gamma is None:
                return None, "scale-shape-mismatch"
        x_in, gamma, reason = norm_input_and_scale(x, m.get("cast") if v.cast else None, gamma, size)
        if reason:
            return None, reason
        return _Site(x_in, eps, gamma), None


def _mean_centred(x: gs.Tensor) -> bool:
    sub = producer(x)
    if sub is None or sub.op != "Sub":
        return False
    mean = producer(sub.inputs[1])
    return mean is not None and mean.op in ("ReduceMean", "GlobalAveragePool") and mean.inputs[0] is sub.inputs[0]
