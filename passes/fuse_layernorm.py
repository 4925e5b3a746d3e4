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
from typing import Literal, NamedTuple

import numpy as np
import onnx_graphsurgeon as gs

from passes._norm_patterns import (
    AFFINE_TAILS, Affine, RsqrtForm, add_affine_tail, add_reduce, add_rsqrt_normalize, affine_tensors, channel_vector,
    is_last_axis, norm_input_and_scale, present_variants, reduce_axes, rsqrt_normalize_eps,
)
from surgery.graph_utils import NameGen, const_value, is_const, last_dim, scalar_value, tensor_rank
from surgery.pass_base import PassContext
from surgery.plugins import make_plugin_node
from passes.plugins import LAYERNORM_PLUGIN
from surgery.registry import register_pass
from surgery.rewrite import Match, PatternRewritePass, Reject, State

LAYERNORM_OPSET = 17
ORT_NOTE = "ort: emitted standard LayerNormalization (onnxruntime has no com.microsoft LayerNormalization)"


@dataclass(frozen=True)
class _Torch:
    """The PyTorch chain: how d² and the rsqrt are spelled, an exit Cast, the affine tail."""

    square: Literal["pow", "mul"]
    form: RsqrtForm
    cast: bool
    affine: Affine

    @property
    def key(self) -> str:
        tail = ("+cast" if self.cast else "") + (f"+{self.affine.key}" if self.affine.key else "")
        return f"torch:{self.square}/{self.form.value}{tail}"

    @property
    def ops(self) -> set[str]:
        ops = {"ReduceMean", "Sub", "Add", "Sqrt", "Pow" if self.square == "pow" else "Mul"} | self.form.ops
        ops |= {"Cast"} if self.cast else set()
        return ops | ({"Mul"} if self.affine.gamma else set())


@dataclass(frozen=True)
class _Tf:
    """The tf2onnx Keras chain: the op computing the means, and whether gamma scales the reciprocal."""

    mean_op: Literal["GlobalAveragePool", "ReduceMean"]
    scaled: bool

    @property
    def key(self) -> str:
        return f"tf:mul/{self.mean_op}" + ("+g" if self.scaled else "")

    @property
    def ops(self) -> set[str]:
        return {self.mean_op, "Sub", "Mul", "Add", "Sqrt", "Reciprocal"}


_Variant = _Torch | _Tf


def _variants() -> list[_Variant]:
    tf = [_Tf(mean, scaled) for scaled in (True, False) for mean in ("GlobalAveragePool", "ReduceMean")]
    torch = [_Torch(sq, form, cast, affine)
             for affine, cast, sq, form in itertools.product(AFFINE_TAILS, (True, False), ("pow", "mul"), RsqrtForm)]
    return tf + torch  # longest chains first: the first variant to claim a node wins


def _torch_pattern(v: _Torch, axes_input: bool) -> gs.GraphPattern:
    p = gs.GraphPattern()
    eps, x = p.variable(), p.variable()  # eps first: see add_rsqrt_normalize
    mean = add_reduce(p, "mean", "ReduceMean", x, axes_input)
    d = p.add("sub", "Sub", inputs=[x, mean])
    sq = p.add("square", "Pow", inputs=[d, p.variable()]) if v.square == "pow" else p.add("square", "Mul", inputs=[d, d])
    var = add_reduce(p, "var", "ReduceMean", sq, axes_input)
    p.set_output_tensors([add_affine_tail(p, add_rsqrt_normalize(p, d, var, v.form, eps), v.cast, v.affine)])
    return p


def _tf_pattern(v: _Tf, axes_input: bool) -> gs.GraphPattern:
    p = gs.GraphPattern()
    eps, x = p.variable(), p.variable()  # eps first: see add_rsqrt_normalize

    def reduce(name: str, t: int) -> int:
        if v.mean_op == "GlobalAveragePool":
            return p.add(name, v.mean_op, inputs=[t])
        return add_reduce(p, name, "ReduceMean", t, axes_input)

    mean = reduce("mean", x)
    d = p.add("sub", "Sub", inputs=[x, mean])
    var = reduce("var", p.add("square", "Mul", inputs=[d, d]))
    if v.scaled:
        scale = add_rsqrt_normalize(p, p.variable(), var, RsqrtForm.RECIP_MULR, eps)  # Mul(Reciprocal(s), gamma)
    else:
        s = p.add("sqrt", "Sqrt", inputs=[p.add("eps_add", "Add", inputs=[var, eps])])
        scale = p.add("inv", "Reciprocal", inputs=[s])
    shifted = p.add("mean_mul", "Mul", inputs=[mean, scale])
    scaled = p.add("x_mul", "Mul", inputs=[x, scale])
    offset = p.add("beta_sub", "Sub", inputs=[p.variable(), shifted])
    p.set_output_tensors([p.add("out_add", "Add", inputs=[scaled, offset])])
    return p


@dataclass
class LayerNormState(State):
    axes_input: bool  # opset >= 18: ReduceMean takes its axes as an input
    variants: dict[str, _Variant]  # the variants whose ops the graph has, by key


class _Plan(NamedTuple):
    """What ``check`` found: the fused op's input, epsilon and per-channel gamma/beta (beta may be absent)."""

    x: gs.Tensor
    eps: float
    gamma: np.ndarray
    beta: np.ndarray | None


@register_pass
class FuseLayerNormPass(PatternRewritePass[LayerNormState, _Variant]):
    """Variants are ``_Torch`` or ``_Tf`` chains; a variant's key names it in the report."""

    name = "fuse-layernorm"
    summary = "Fuse decomposed LayerNorm (PyTorch, tf2onnx, fp16 Cast islands) into LayerNormalization or a plugin"
    anchor_ops = ("ReduceMean", "GlobalAveragePool")
    emits = ("onnx", "ort", "plugin")

    def prepare(self, graph: gs.Graph, ctx: PassContext) -> LayerNormState:
        return LayerNormState(graph, ctx, int(graph.opset) >= 18, present_variants(graph, _variants()))

    def required_opset(self, state: LayerNormState) -> int | None:
        return None if state.emit == "plugin" else LAYERNORM_OPSET

    def patterns(self, state: LayerNormState) -> dict[str, tuple[gs.GraphPattern, _Variant]]:
        return {key: (_tf_pattern(v, state.axes_input) if isinstance(v, _Tf) else _torch_pattern(v, state.axes_input), v)
                for key, v in state.variants.items()}

    def check(self, m: Match[_Variant], state: LayerNormState) -> _Plan | Reject:
        v = m.variant
        x = m.get("sub").inputs[0]
        rank, size = tensor_rank(x), last_dim(x)
        for name in ("mean", "var"):
            node = m.get(name)
            if node.op == "GlobalAveragePool":
                if rank != 3:  # GAP averages every axis after the 2nd; only on rank 3 is that the last one
                    return Reject("reduce-axes-not-last")
                continue
            if not is_last_axis(reduce_axes(node), rank):
                return Reject("reduce-axes-not-last", node.inputs[1] if len(node.inputs) > 1 else None)
            if node.attrs.get("keepdims", 1) == 0:
                return Reject("reduce-keepdims-0")
        if isinstance(v, _Torch) and v.square == "pow" and scalar_value(m.get("square").inputs[1]) != 2.0:
            return Reject("pow-exponent-not-2", m.get("square").inputs[1])
        eps = rsqrt_normalize_eps(m)
        if isinstance(eps, Reject):
            return eps
        gamma_t, beta_t = _affine_tensors(m, v)
        gamma = beta = None
        if gamma_t is not None:
            if not is_const(gamma_t):
                return Reject("scale-not-constant", gamma_t)
            gamma = channel_vector(const_value(gamma_t), size, rank)
            if gamma is None:
                return Reject("scale-shape-mismatch", gamma_t)
        if beta_t is not None:
            if not is_const(beta_t):
                return Reject("bias-not-constant", beta_t)
            beta = channel_vector(const_value(beta_t), size, rank)
            if beta is None or (gamma is not None and beta.size != gamma.size):
                return Reject("bias-shape-mismatch", beta_t)
        found = norm_input_and_scale(x, m.get("cast") if isinstance(v, _Torch) and v.cast else None, gamma, size)
        if isinstance(found, Reject):
            return found
        x_in, gamma = found
        return _Plan(x_in, eps, gamma, None if beta is None else beta.astype(gamma.dtype))

    def rewrite(self, m: Match[_Variant], plan: _Plan, state: LayerNormState, names: NameGen) -> list[gs.Node]:
        out, name = m.outputs[0], names()
        if state.emit == "plugin":
            beta = plan.beta if plan.beta is not None else np.zeros_like(plan.gamma)
            return [make_plugin_node(LAYERNORM_PLUGIN, [plan.x], [out], {"epsilon": plan.eps, "gamma": plan.gamma, "beta": beta}, name)]
        if state.emit == "ort" and ORT_NOTE not in state.notes:
            state.notes.append(ORT_NOTE)
        inputs = [plan.x, gs.Constant(f"{name}/scale", plan.gamma)]
        if plan.beta is not None:
            inputs.append(gs.Constant(f"{name}/bias", plan.beta))
        return [gs.Node("LayerNormalization", name=name, attrs={"axis": -1, "epsilon": plan.eps, "stash_type": 1},
                        inputs=inputs, outputs=[out])]


def _affine_tensors(m: Match[_Variant], v: _Variant) -> tuple[gs.Tensor | None, gs.Tensor | None]:
    if isinstance(v, _Tf):
        return (m.get("norm").inputs[1] if v.scaled else None), m.get("beta_sub").inputs[0]
    return affine_tensors(m, v.affine)
