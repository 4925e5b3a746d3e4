"""``fuse-layernorm``: fuse decomposed layer normalization into one LayerNormalization op or plugin.

Summary:
    Finds the mean/variance/rsqrt chains that exporters emit for LayerNorm over the last axis and
    replaces each with ``LayerNormalization`` (opset 17, ``axis=-1``; option ``emit=onnx`` or ``ort``)
    or the ``SurgeryLayerNorm`` plugin (``emit=plugin``). A trailing Mul by gamma and Add of beta are
    absorbed when they are per-channel constants; an fp16 Cast island is absorbed too.

Matches:
    PyTorch (TorchScript / hand-written), ReduceMean axes as attribute (<18) or input (>=18)::

        x -> ReduceMean -> Sub(x, mean) = d -> Pow(d, 2) | Mul(d, d) -> ReduceMean -> Add(eps) -> Sqrt = s
          -> Div(d, s) | Mul(d, Reciprocal(s)) | Mul(d, Div(1, s))   (either Mul operand order)
          [-> Cast(to=T)] [-> Mul(gamma)] [-> Add(beta)]              (either operand order)
        =>  LayerNormalization(x, gamma, beta, axis=-1)     (x = the Cast input when x = Cast(T -> fp32))

    tf2onnx Keras LayerNormalization (``moments`` + ``batchnorm``; the mean is a GlobalAveragePool
    on rank-3 inputs, else ReduceMean)::

        mean = GAP(x); var = GAP(Mul(x - mean, x - mean)); r = Reciprocal(Sqrt(var + eps)) [* gamma]
        y = x * r + (beta - mean * r)          =>  LayerNormalization(x, gamma, beta)

Requires:
    Shapes where known (run ``infer-shapes`` first): the hidden size is needed when there is no gamma.
    ``emit=onnx``/``ort`` raise the opset to 17 once per run, before the first rewrite.

Rejects:
    reduce-axes-not-last, reduce-keepdims-0, pow-exponent-not-2, eps-not-constant, eps-not-scalar,
    reciprocal-numerator-not-1, scale-not-constant, scale-shape-mismatch, bias-not-constant,
    bias-shape-mismatch, hidden-size-unknown, cast-island-unbalanced, opset-raise-refused, non-convex.
    A rejected tail (e.g. a gamma of the wrong shape) falls back to fusing the shorter chain.

Numerics:
    LayerNormalization with ``stash_type=1`` computes mean and variance in fp32 like the fp32 island
    it replaces; the plugin reference is the same formula. Results agree to ~1e-6 relative in fp32.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from surgery.graph_utils import (
    AFFINE_TAILS, RSQRT_FORM_OPS, RSQRT_FORMS, NameGen, add_affine_tail, add_reduce, add_rsqrt_normalize,
    channel_vector, const_value, is_const, is_last_axis, last_dim, norm_input_and_scale, reduce_axes,
    present_variants, rsqrt_normalize_eps, scalar_value, tensor_rank,
)
from surgery.pass_base import PassContext, PassResult
from surgery.plugins import PluginSpec, make_plugin_node, register_plugin
from surgery.registry import register_pass
from surgery.rewrite import PatternRewritePass

LAYERNORM_OPSET = 17
LAYERNORM_PLUGIN = register_plugin(PluginSpec(
    op="SurgeryLayerNorm", version="1", namespace="onnx_surgery",
    fields={"epsilon": "float", "gamma": "tensor", "beta": "tensor"}, inputs=("input",),
    notes="LayerNorm over the last axis: (x - mean) / sqrt(var + epsilon) * gamma + beta; statistics in fp32.",
))


@dataclass(frozen=True)
class _Variant:
    family: str  # "torch" or "tf"
    square: str  # torch: "pow" | "mul"
    form: str  # torch: an RSQRT_FORMS spelling; tf: the mean op
    cast: bool = False
    affine: str = ""  # torch: an AFFINE_TAILS entry; tf: "g" (scaled) or ""

    @property
    def key(self) -> str:
        tail = ("+cast" if self.cast else "") + (f"+{self.affine}" if self.affine else "")
        return f"{self.family}:{self.square}/{self.form}{tail}"

    @property
    def ops(self) -> set[str]:
        if self.family == "tf":
            return {self.form, "Sub", "Mul", "Add", "Sqrt", "Reciprocal"}
        ops = {"ReduceMean", "Sub", "Add", "Sqrt", "Pow" if self.square == "pow" else "Mul"} | RSQRT_FORM_OPS[self.form]
        ops |= {"Cast"} if self.cast else set()
        return ops | ({"Mul"} if "g" in self.affine else set())


def _variants() -> list[_Variant]:
    tf = [_Variant("tf", "mul", mean, affine=a) for a in ("g", "") for mean in ("GlobalAveragePool", "ReduceMean")]
    torch = [_Variant("torch", sq, form, cast, affine)
             for affine, cast, sq, form in itertools.product(AFFINE_TAILS, (True, False), ("pow", "mul"), RSQRT_FORMS)]
    return tf + torch  # longest chains first: the first variant to claim a node wins


def _torch_pattern(v: _Variant, axes_input: bool) -> gs.GraphPattern:
    p = gs.GraphPattern()
    eps, x = p.variable(), p.variable()  # eps first: see add_rsqrt_normalize
    mean = add_reduce(p, "mean", "ReduceMean", x, axes_input)
    d = p.add("sub", "Sub", inputs=[x, mean])
    sq = p.add("square", "Pow", inputs=[d, p.variable()]) if v.square == "pow" else p.add("square", "Mul", inputs=[d, d])
    var = add_reduce(p, "var", "ReduceMean", sq, axes_input)
    p.set_output_tensors([add_affine_tail(p, add_rsqrt_normalize(p, d, var, v.form, eps), v.cast, v.affine)])
    return p


def _tf_pattern(v: _Variant, axes_input: bool) -> gs.GraphPattern:
    p = gs.GraphPattern()
    eps, x = p.variable(), p.variable()  # eps first: see add_rsqrt_normalize
    reduce = (lambda name, t: p.add(name, v.form, inputs=[t])) if v.form == "GlobalAveragePool" \
        else (lambda name, t: add_reduce(p, name, "ReduceMean", t, axes_input))
    mean = reduce("mean", x)
    d = p.add("sub", "Sub", inputs=[x, mean])
    var = reduce("var", p.add("square", "Mul", inputs=[d, d]))
    if v.affine:
        scale = add_rsqrt_normalize(p, p.variable(), var, "recip-mulr", eps)  # Mul(Reciprocal(s), gamma)
    else:
        s = p.add("sqrt", "Sqrt", inputs=[p.add("eps_add", "Add", inputs=[var, eps])])
        scale = p.add("inv", "Reciprocal", inputs=[s])
    shifted = p.add("mean_mul", "Mul", inputs=[mean, scale])
    scaled = p.add("x_mul", "Mul", inputs=[x, scale])
    offset = p.add("beta_sub", "Sub", inputs=[p.variable(), shifted])
    p.set_output_tensors([p.add("out_add", "Add", inputs=[scaled, offset])])
    return p


@dataclass
class _Site:
    x: gs.Tensor
    eps: float
    gamma: np.ndarray
    beta: np.ndarray | None


@register_pass
class FuseLayerNormPass(PatternRewritePass):
    name = "fuse-layernorm"
    summary = "Fuse decomposed LayerNorm (PyTorch, tf2onnx, fp16 Cast islands) into LayerNormalization or a plugin"
    anchor_ops = ("ReduceMean", "GlobalAveragePool")
    emits = ("onnx", "ort", "plugin")

    def required_opset(self, ctx: PassContext) -> int | None:
        return None if self.emit(ctx) == "plugin" else LAYERNORM_OPSET

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        self._axes_input = int(graph.opset) >= 18
        self._variants = present_variants(graph, _variants())
        result = super().run(graph, ctx)
        if self.emit(ctx) == "ort" and result.changed:
            result.notes.append("ort: emitted standard LayerNormalization (onnxruntime has no com.microsoft LayerNormalization)")
        return result

    def patterns(self, ctx: PassContext) -> dict[str, gs.GraphPattern]:
        build = {"torch": _torch_pattern, "tf": _tf_pattern}
        return {key: build[v.family](v, self._axes_input) for key, v in self._variants.items()}

    def check(self, m: gs.PatternMapping, variant: str, graph: gs.Graph, ctx: PassContext) -> str | None:
        return self._analyse(m, self._variants[variant])[1]

    def rewrite(self, graph: gs.Graph, m: gs.PatternMapping, variant: str, ctx: PassContext, names: NameGen) -> list[gs.Node]:
        site, _ = self._analyse(m, self._variants[variant])
        out, name = m.outputs[0], names()
        if self.emit(ctx) == "plugin":
            beta = site.beta if site.beta is not None else np.zeros_like(site.gamma)
            return [make_plugin_node(LAYERNORM_PLUGIN, [site.x], [out], {"epsilon": site.eps, "gamma": site.gamma, "beta": beta}, name)]
        inputs = [site.x, gs.Constant(f"{name}/scale", site.gamma)]
        if site.beta is not None:
            inputs.append(gs.Constant(f"{name}/bias", site.beta))
        return [gs.Node("LayerNormalization", name=name, attrs={"axis": -1, "epsilon": site.eps, "stash_type": 1},
                        inputs=inputs, outputs=[out])]

    def _analyse(self, m: gs.PatternMapping, v: _Variant) -> tuple[_Site | None, str | None]:
        x = m.get("sub").inputs[0]
        rank, size = tensor_rank(x), last_dim(x)
        for name in ("mean", "var"):
            node = m.get(name)
            if node.op == "GlobalAveragePool":
                if rank != 3:  # GAP averages every axis after the 2nd; only on rank 3 is that the last one
                    return None, "reduce-axes-not-last"
                continue
            if not is_last_axis(reduce_axes(node), rank):
                return None, "reduce-axes-not-last"
            if node.attrs.get("keepdims", 1) == 0:
                return None, "reduce-keepdims-0"
        if v.square == "pow" and v.family == "torch" and scalar_value(m.get("square").inputs[1]) != 2.0:
            return None, "pow-exponent-not-2"
        eps, reason = rsqrt_normalize_eps(m)
        if reason:
            return None, reason
        gamma_t, beta_t = _affine_tensors(m, v)
        gamma = beta = None
        if gamma_t is not None:
            if not is_const(gamma_t):
                return None, "scale-not-constant"
            gamma = channel_vector(const_value(gamma_t), size, rank)
            if gamma is None:
                return None, "scale-shape-mismatch"
        if beta_t is not None:
            if not is_const(beta_t):
                return None, "bias-not-constant"
            beta = channel_vector(const_value(beta_t), size, rank)
            if beta is None or (gamma is not None and beta.size != gamma.size):
                return None, "bias-shape-mismatch"
        x_in, gamma, reason = norm_input_and_scale(x, m.get("cast") if v.cast else None, gamma, size)
        if reason:
            return None, reason
        return _Site(x_in, eps, gamma, None if beta is None else beta.astype(gamma.dtype)), None


def _affine_tensors(m: gs.PatternMapping, v: _Variant) -> tuple[gs.Tensor | None, gs.Tensor | None]:
    if v.family == "tf":
        return (m.get("norm").inputs[1] if v.affine else None), m.get("beta_sub").inputs[0]
    gamma = beta = None
    if "gamma" in m:
        gamma = m.get("gamma").inputs[0 if v.affine.startswith("gr") else 1]
    if "beta" in m:
        node = m.get("beta")
        beta = node.inputs[0] if v.affine.endswith("br") else node.inputs[1]
    return gamma, beta

