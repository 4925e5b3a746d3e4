"""``fuse-groupnorm``: fuse PyTorch's decomposed GroupNorm into GroupNormalization-21 or a plugin.

Summary:
    PyTorch exports ``nn.GroupNorm`` as a reshape to ``[N, G, -1]``, a per-group normalization and a
    reshape back, followed by the per-channel affine. Each such block becomes ``GroupNormalization``
    (opset 21, per-channel scale/bias; ``emit=onnx``) or the ``SurgeryGroupNorm`` plugin
    (``emit=plugin``), which also absorbs a directly following SiLU (``activation=1``).

Matches:
    ``s1 = [0|N, G, -1]`` constant; ``s2`` = ``Shape(x)`` or the constant static shape of x::

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
    scale-shape-mismatch, bias-not-constant, bias-shape-mismatch, ort-groupnorm-no-cpu-kernel,
    opset-raise-refused, non-convex.

Numerics:
    Statistics in fp32 (``stash_type=1``), like InstanceNormalization on the reshaped tensor; results
    agree to ~1e-6 relative in fp32.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from surgery.graph_utils import (
    NameGen, add_reduce, add_rsqrt_normalize, channel_vector, const_value, disconnect, is_const,
    is_last_axis, producer, reduce_axes, rsqrt_normalize_eps, scalar_value, tensor_rank,
)
from surgery.pass_base import PassContext, PassResult
from surgery.plugins import PluginSpec, make_plugin_node, register_plugin
from surgery.registry import register_pass
from surgery.rewrite import PatternRewritePass

GROUPNORM_OPSET = 21
GROUPNORM_PLUGIN = register_plugin(PluginSpec(
    op="SurgeryGroupNorm", version="1", namespace="onnx_surgery",
    fields={"num_groups": "int", "epsilon": "float", "activation": "int", "gamma": "tensor", "beta": "tensor"},
    inputs=("input",),
    notes="GroupNorm on NCHW-like input, per-channel gamma/beta [C]; activation 0 = none, 1 = SiLU.",
))
CORES = ("instnorm", "reduce-pow", "reduce-mul", "layernorm")
TAILS = ("g-b", "g-br", "gr-b", "gr-br", "")


def _pattern(core: str, tail: str, axes_input: bool) -> gs.GraphPattern:
    p = gs.GraphPattern()
    eps = p.variable() if core.startswith("reduce") else None  # first variable: see add_rsqrt_normalize
    x, s1 = p.variable(), p.variable()
    r = p.add("reshape_in", "Reshape", inputs=[x, s1])
    if core == "instnorm":
        n = p.add("core", "InstanceNormalization", inputs=[r, p.variable(), p.variable()])
    elif core == "layernorm":
        n = p.add("core", "LayerNormalization", inputs=[r, p.variable(), p.variable()])
    else:
        mean = add_reduce(p, "mean", "ReduceMean", r, axes_input)
        d = p.add("sub", "Sub", inputs=[r, mean])
        sq = p.add("square", "Pow", inputs=[d, p.variable()]) if core == "reduce-pow" else p.add("square", "Mul", inputs=[d, d])
        n = add_rsqrt_normalize(p, d, add_reduce(p, "var", "ReduceMean", sq, axes_input), "div", eps)
    t = p.add("reshape_out", "Reshape", inputs=[n, p.variable()])
    for part in tail.split("-") if tail else []:
        op, name = ("Mul", "gamma") if part[0] == "g" else ("Add", "beta")
        w = p.variable()
        t = p.add(name, op, inputs=[w, t] if part.endswith("r") else [t, w])
    p.set_output_tensors([t])
    return p


@dataclass
class _Site:
    x: gs.Tensor
    groups: int
    eps: float
    gamma: np.ndarray
    beta: np.ndarray
    silu: tuple[gs.Node, gs.Node] | None


@register_pass
class FuseGroupNormPass(PatternRewritePass):
    name = "fuse-groupnorm"
    summary = "Fuse PyTorch GroupNorm exports (+ optional SiLU for plugins) into GroupNormalization-21 or a plugin"
    anchor_ops = ("InstanceNormalization",)
    emits = ("onnx", "ort", "plugin")

    def required_opset(self, ctx: PassContext) -> int | None:
        return GROUPNORM_OPSET if self.emit(ctx) == "onnx" else None

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        self._emit = self.emit(ctx)
        self._axes_input = int(graph.opset) >= 18
        self._graph_outputs = {t.name for t in graph.outputs}
        result = super().run(graph, ctx)
        if self._emit == "ort" and result.stats.get("rejected:ort-groupnorm-no-cpu-kernel"):
            result.notes.append("ort: com.microsoft GroupNorm (channels_last layout) has no CPU kernel in onnxruntime; "
                                "use emit=onnx (GroupNormalization-21 runs on onnxruntime CPU)")
        return result

    def patterns(self, ctx: PassContext) -> dict[str, gs.GraphPattern]:
        return {f"{core}+{tail}" if tail else core: _pattern(core, tail, self._axes_input) for tail in TAILS for core in CORES}

    def check(self, m: gs.PatternMapping, variant: str, graph: gs.Graph, ctx: PassContext) -> str | None:
        _, reason = self._analyse(m, variant)
        if reason is None and self._emit == "ort":
            reason = "ort-groupnorm-no-cpu-kernel"
        return reason

    def rewrite(self, graph: gs.Graph, m: gs.PatternMapping, variant: str, ctx: PassContext, names: NameGen) -> list[gs.Node]:
        site, _ = self._analyse(m, variant)
        out, name = m.outputs[0], names()
        if self._emit == "plugin":
            if site.silu is not None:
                out = site.silu[1].outputs[0]
                disconnect(site.silu)  # absorbed: not part of the pattern, so detached here
            attrs = {"num_groups": site.groups, "epsilon": site.eps, "activation": int(site.silu is not None),
                     "gamma": site.gamma, "beta": site.beta}
            return [make_plugin_node(GROUPNORM_PLUGIN, [site.x], [out], attrs, name)]
        return [gs.Node("GroupNormalization", name=name, outputs=[out],
                        attrs={"num_groups": site.groups, "epsilon": site.eps, "stash_type": 1},
                        inputs=[site.x, gs.Constant(f"{name}/scale", site.gamma), gs.Constant(f"{name}/bias", site.beta)])]

    def _analyse(self, m: gs.PatternMapping, variant: str) -> tuple[_Site | None, str | None]:
        rin, rout = m.get("reshape_in"), m.get("reshape_out")
        x = rin.inputs[0]
        rank, s1 = tensor_rank(x), const_value(rin.inputs[1])
        if s1 is None or s1.size != 3 or int(s1.reshape(-1)[1]) <= 0 or int(s1.reshape(-1)[2]) != -1 or not rank or rank < 3:
            return None, "group-reshape-not-recognised"
        groups, channels = int(s1.reshape(-1)[1]), x.shape[1]
        if not isinstance(channels, (int, np.integer)) or channels <= 0:
            return None, "channels-unknown"
        if channels % groups:
            return None, "groups-not-dividing-channels"
        if not _is_shape_of(rout.inputs[1], x):
            return None, "reshape-back-not-input-shape"
        eps, reason = self._core_eps(m, variant, groups)
        if reason:
            return None, reason
        gamma_beta = []
        parts = variant.split("+")[1].split("-") if "+" in variant else []
        for role, default, part in zip(("gamma", "beta"), (1.0, 0.0), parts or ["", ""]):
            if not part:
                gamma_beta.append(np.full(channels, default, dtype=x.dtype or np.float32))
                continue
            t = m.get(role).inputs[0 if part.endswith("r") else 1]
            if not is_const(t):
                return None, f"{'scale' if role == 'gamma' else 'bias'}-not-constant"
            vec = channel_vector(const_value(t), channels, rank, channel_axis=1)
            if vec is None:
                return None, f"{'scale' if role == 'gamma' else 'bias'}-shape-mismatch"
            gamma_beta.append(vec)
        dtype = x.dtype or gamma_beta[0].dtype
        silu = self._silu_after(m.outputs[0]) if self._emit == "plugin" else None
        return _Site(x, groups, eps, gamma_beta[0].astype(dtype), gamma_beta[1].astype(dtype), silu), None

    def _core_eps(self, m: gs.PatternMapping, variant: str, groups: int) -> tuple[float | None, str | None]:
        core = variant.split("+")[0]
        if core in ("instnorm", "layernorm"):
            node = m.get("core")
            scale, bias = const_value(node.inputs[1]), const_value(node.inputs[2])
            identity = scale is not None and bias is not None and np.all(scale == 1) and np.all(bias == 0)
            if core == "instnorm" and not (identity and scale.size == groups):
                return None, "instancenorm-affine-not-identity"
            if core == "layernorm" and not (identity and node.attrs.get("axis", -1) in (-1, 2)):
                return None, "layernorm-affine-not-identity"
            return float(node.attrs.get("epsilon", 1e-5)), None
        for name in ("mean", "var"):
            if not is_last_axis(reduce_axes(m.get(name)), 3):
                return None, "reduce-axes-not-last"
        if core == "reduce-pow" and scalar_value(m.get("square").inputs[1]) != 2.0:
            return None, "pow-exponent-not-2"
        return rsqrt_normalize_eps(m)

    def _silu_after(self, y: gs.Tensor) -> tuple[gs.Node, gs.Node] | None:
        """The Sigmoid and Mul of ``y * sigmoid(y)`` when they are y's only consumers, else None."""
        if y.name in self._graph_outputs or len(y.outputs) != 2:
            return None
        sig = next((n for n in y.outputs if n.op == "Sigmoid"), None)
        mul = next((n for n in y.outputs if n.op == "Mul"), None)
        if sig is None or mul is None or len(sig.outputs[0].outputs) != 1 or sig.outputs[0].outputs[0] is not mul:
            return None
        if sig.outputs[0].name in self._graph_outputs or {id(t) for t in mul.inputs} != {id(y), id(sig.outputs[0])}:
            return None
        return sig, mul


def _is_shape_of(shape: gs.Tensor, x: gs.Tensor) -> bool:
    src = producer(shape)
    if src is not None and src.op == "Shape":
        return src.inputs[0] is x and src.attrs.get("start", 0) == 0 and "end" not in src.attrs
    v = const_value(shape)
    return v is not None and x.shape is not None and list(v.reshape(-1)) == list(x.shape)
