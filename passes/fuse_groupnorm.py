"""``fuse-groupnorm``: fuse PyTorch's decomposed GroupNorm into GroupNormalization-21 or a plugin.

Summary:
    PyTorch exports ``nn.GroupNorm`` as a reshape to ``[N, G, -1]``, a per-group normalization and a
    reshape back, followed by the per-channel affine. Each such block becomes ``GroupNormalization``
    (opset 21, per-channel scale/bias; ``emit=onnx``) or the ``SurgeryGroupNorm`` plugin
    (``emit=plugin``), which also absorbs a directly following SiLU (``activation=1``).

Matches:
    ``s1 = [0|N, G, -1]`` constant; ``s2`` = ``Shape(x)`` or the constant static shape of x (its first
    entry may be 0, copying the batch dim the group reshape kept)::

        (a) x -> Reshape(s1) -> InstanceNormalization(ones, zeros) -> Reshape(s2)
        (b) x -> Reshape(s1) -> ReduceMean/Sub/Pow|Mul/ReduceMean/Add(eps)/Sqrt/Div -> Reshape(s2)
        (c) x -> Reshape(s1) -> LayerNormalization(ones, zeros, axis=-1) -> Reshape(s2)   (after fuse-layernorm)
            [-> Mul(gamma[C,1,..]) -> Add(beta[C,1,..])]  (either operand order)
            [-> Sigmoid + Mul = SiLU]                     (plugin only; kept separate otherwise)
        =>  GroupNormalization(x, gamma[C], beta[C], num_groups=G)

Requires:
    The channel count ``x.shape[1]`` (run ``infer-shapes`` first). ``emit=onnx`` raises the opset to 21
    once per run, before the first rewrite (GroupNormalization-18 had per-group scale/bias; we never emit it).

Rejects:
    group-reshape-not-recognised, channels-unknown, groups-not-dividing-channels,
    reshape-back-not-input-shape, instancenorm-affine-not-identity, layernorm-affine-not-identity,
    reduce-axes-not-last, pow-exponent-not-2, eps-not-constant, eps-not-scalar, scale-not-constant,
    scale-shape-mismatch, bias-not-constant, bias-shape-mismatch, opset-raise-refused, non-convex.
    There is no ``emit=ort``: com.microsoft GroupNorm (channels_last layout) has no CPU kernel in
    onnxruntime, and GroupNormalization-21 (``emit=onnx``) runs there.

Numerics:
    Statistics in fp32 (``stash_type=1``), like InstanceNormalization on the reshaped tensor; results
    agree to ~1e-6 relative in fp32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import onnx_graphsurgeon as gs

from passes._norm_patterns import (
    Affine, RsqrtForm, add_affine_tail, add_reduce, add_rsqrt_normalize, affine_tensors, channel_vector, is_last_axis,
    reduce_axes, rsqrt_normalize_eps,
)
from surgery.graph_utils import NameGen, const_value, disconnect, is_const, producer, scalar_value, tensor_rank
from surgery.pass_base import PassContext
from surgery.plugins import make_plugin_node
from passes.plugins import GROUPNORM_PLUGIN
from surgery.registry import register_pass
from surgery.rewrite import Match, PatternRewritePass, Reject, State

GROUPNORM_OPSET = 21
Core = Literal["instnorm", "reduce-pow", "reduce-mul", "layernorm"]
CORES: tuple[Core, ...] = ("instnorm", "reduce-pow", "reduce-mul", "layernorm")
TAILS = (Affine("g", "b"), Affine("g", "br"), Affine("gr", "b"), Affine("gr", "br"), Affine())


class _Variant(NamedTuple):
    """The per-group normalization between the two Reshapes and the affine tail after them."""

    core: Core
    affine: Affine

    @property
    def key(self) -> str:
        return f"{self.core}+{self.affine.key}" if self.affine.key else self.core


def _pattern(v: _Variant, axes_input: bool) -> gs.GraphPattern:
    p = gs.GraphPattern()
    reduces = v.core in ("reduce-pow", "reduce-mul")
    eps = p.variable() if reduces else None  # first variable: see add_rsqrt_normalize
    x, s1 = p.variable(), p.variable()
    r = p.add("reshape_in", "Reshape", inputs=[x, s1])
    if v.core == "instnorm":
        n = p.add("core", "InstanceNormalization", inputs=[r, p.variable(), p.variable()])
    elif v.core == "layernorm":
        n = p.add("core", "LayerNormalization", inputs=[r, p.variable(), p.variable()])
    else:
        mean = add_reduce(p, "mean", "ReduceMean", r, axes_input)
        d = p.add("sub", "Sub", inputs=[r, mean])
        sq = p.add("square", "Pow", inputs=[d, p.variable()]) if v.core == "reduce-pow" else p.add("square", "Mul", inputs=[d, d])
        n = add_rsqrt_normalize(p, d, add_reduce(p, "var", "ReduceMean", sq, axes_input), RsqrtForm.DIV, eps)
    t = p.add("reshape_out", "Reshape", inputs=[n, p.variable()])
    p.set_output_tensors([add_affine_tail(p, t, False, v.affine)])
    return p


@dataclass
class GroupNormState(State):
    axes_input: bool  # opset >= 18: ReduceMean takes its axes as an input
    graph_outputs: set[str]  # names of the graph outputs: a SiLU writing one stays


class _Plan(NamedTuple):
    """What ``check`` found; ``silu`` is the Sigmoid and Mul the plugin absorbs (plugin emit only)."""

    x: gs.Tensor
    groups: int
    eps: float
    gamma: np.ndarray
    beta: np.ndarray
    silu: tuple[gs.Node, gs.Node] | None


@register_pass
class FuseGroupNormPass(PatternRewritePass[GroupNormState, _Variant]):
    """Variants are ``_Variant(core, affine)``; a variant's key names it in the report."""

    name = "fuse-groupnorm"
    summary = "Fuse PyTorch GroupNorm exports (+ optional SiLU for plugins) into GroupNormalization-21 or a plugin"
    anchor_ops = ("InstanceNormalization",)
    emits = ("onnx", "plugin")

    def prepare(self, graph: gs.Graph, ctx: PassContext) -> GroupNormState:
        return GroupNormState(graph, ctx, int(graph.opset) >= 18, {t.name for t in graph.outputs})

    def required_opset(self, state: GroupNormState) -> int | None:
        return GROUPNORM_OPSET if state.emit == "onnx" else None

    def patterns(self, state: GroupNormState) -> dict[str, tuple[gs.GraphPattern, _Variant]]:
        variants = [_Variant(core, tail) for tail in TAILS for core in CORES]
        return {v.key: (_pattern(v, state.axes_input), v) for v in variants}

    def check(self, m: Match[_Variant], state: GroupNormState) -> _Plan | Reject:
        rin, rout = m.get("reshape_in"), m.get("reshape_out")
        x = rin.inputs[0]
        rank, s1 = tensor_rank(x), const_value(rin.inputs[1])
        if s1 is None or s1.size != 3 or int(s1.reshape(-1)[1]) <= 0 or int(s1.reshape(-1)[2]) != -1 or not rank or rank < 3:
            return Reject("group-reshape-not-recognised", rin.inputs[1])
        groups, channels = int(s1.reshape(-1)[1]), x.shape[1]
        if not isinstance(channels, (int, np.integer)) or channels <= 0:
            return Reject("channels-unknown", x)
        if channels % groups:
            return Reject("groups-not-dividing-channels", rin.inputs[1])
        first_dim_kept = int(s1.reshape(-1)[0]) in (0, x.shape[0])
        if not _is_shape_of(rout.inputs[1], x, first_dim_kept):
            return Reject("reshape-back-not-input-shape", rout.inputs[1])
        eps = _core_eps(m, groups)
        if isinstance(eps, Reject):
            return eps
        gamma_beta = []
        for role, default, t in zip(("scale", "bias"), (1.0, 0.0), affine_tensors(m, m.variant.affine)):
            if t is None:
                gamma_beta.append(np.full(channels, default, dtype=x.dtype or np.float32))
                continue
            if not is_const(t):
                return Reject(f"{role}-not-constant", t)
            vec = channel_vector(const_value(t), channels, rank, channel_axis=1)
            if vec is None:
                return Reject(f"{role}-shape-mismatch", t)
            gamma_beta.append(vec)
        dtype = x.dtype or gamma_beta[0].dtype
        silu = _silu_after(m.outputs[0], state.graph_outputs) if state.emit == "plugin" else None
        return _Plan(x, groups, eps, gamma_beta[0].astype(dtype), gamma_beta[1].astype(dtype), silu)

    def rewrite(self, m: Match[_Variant], plan: _Plan, state: GroupNormState, names: NameGen) -> list[gs.Node]:
        out, name = m.outputs[0], names()
        if state.emit == "plugin":
            if plan.silu is not None:
                out = plan.silu[1].outputs[0]
                disconnect(plan.silu)  # absorbed: not part of the pattern, so detached here
            attrs = {"num_groups": plan.groups, "epsilon": plan.eps, "activation": int(plan.silu is not None),
                     "gamma": plan.gamma, "beta": plan.beta}
            return [make_plugin_node(GROUPNORM_PLUGIN, [plan.x], [out], attrs, name)]
        return [gs.Node("GroupNormalization", name=name, outputs=[out],
                        attrs={"num_groups": plan.groups, "epsilon": plan.eps, "stash_type": 1},
                        inputs=[plan.x, gs.Constant(f"{name}/scale", plan.gamma), gs.Constant(f"{name}/bias", plan.beta)])]


def _core_eps(m: Match[_Variant], groups: int) -> float | Reject:
    """Epsilon of the per-group normalization, or why it is not a plain one."""
    core = m.variant.core
    if core in ("instnorm", "layernorm"):
        node = m.get("core")
        scale, bias = const_value(node.inputs[1]), const_value(node.inputs[2])
        identity = scale is not None and bias is not None and np.all(scale == 1) and np.all(bias == 0)
        if core == "instnorm" and not (identity and scale.size == groups):
            return Reject("instancenorm-affine-not-identity")
        if core == "layernorm" and not (identity and node.attrs.get("axis", -1) in (-1, 2)):
            return Reject("layernorm-affine-not-identity")
        return float(node.attrs.get("epsilon", 1e-5))
    for name in ("mean", "var"):
        node = m.get(name)
        if not is_last_axis(reduce_axes(node), 3):
            return Reject("reduce-axes-not-last", node.inputs[1] if len(node.inputs) > 1 else None)
    if core == "reduce-pow" and scalar_value(m.get("square").inputs[1]) != 2.0:
        return Reject("pow-exponent-not-2", m.get("square").inputs[1])
    return rsqrt_normalize_eps(m)


def _silu_after(y: gs.Tensor, graph_outputs: set[str]) -> tuple[gs.Node, gs.Node] | None:
    """The Sigmoid and Mul of ``y * sigmoid(y)`` when they are y's only consumers, else None."""
    if y.name in graph_outputs or len(y.outputs) != 2:
        return None
    sig = next((n for n in y.outputs if n.op == "Sigmoid"), None)
    mul = next((n for n in y.outputs if n.op == "Mul"), None)
    if sig is None or mul is None or len(sig.outputs[0].outputs) != 1 or sig.outputs[0].outputs[0] is not mul:
        return None
    if sig.outputs[0].name in graph_outputs or {id(t) for t in mul.inputs} != {id(y), id(sig.outputs[0])}:
        return None
    return sig, mul


def _is_shape_of(shape: gs.Tensor, x: gs.Tensor, first_dim_kept: bool) -> bool:
    """True when ``shape`` is ``Shape(x)`` or the constant static shape of x; with ``first_dim_kept`` (the
    group reshape kept x's dim 0) its first entry may be 0, a copy of that dim (resolve-reshape-targets
    writes a symbolic batch that way)."""
    src = producer(shape)
    if src is not None and src.op == "Shape":
        return src.inputs[0] is x and src.attrs.get("start", 0) == 0 and "end" not in src.attrs
    v = const_value(shape)
    if v is None or x.shape is None or v.size != len(x.shape) or not v.size:
        return False
    v = [int(d) for d in v.reshape(-1)]
    first = v[0] == x.shape[0] or (v[0] == 0 and first_dim_kept)
    return first and v[1:] == list(x.shape[1:])
