"""``fuse-skip-layernorm``: fuse a residual Add (+ optional bias Add) into the LayerNormalization it feeds.

Summary:
    Transformers compute ``LayerNorm(x + bias + skip)``: post-LN blocks (BERT) use only the normalized
    value, pre-LN blocks (ViT, GPT-2) also carry the residual sum on to the next residual
    Add. For ``emit=ort`` both become ``com.microsoft.SkipLayerNormalization``, whose optional fourth
    output (``input_skip_bias_sum``) then writes the sum tensor itself, so its other readers (and a graph
    output of that name) are unchanged. For ``emit=plugin`` post-LN becomes TensorRT's own
    ``CustomSkipLayerNormPluginDynamic`` v1 (5-D ``[B, S, E, 1, 1]`` I/O, so the pass adds an Unsqueeze
    before and a Squeeze after); the plugin has no sum output, so pre-LN stays. There is no standard
    ONNX op, so ``emit=onnx`` is refused. It runs after ``fuse-layernorm``, whose LayerNormalization
    nodes it consumes.

Matches:
    ::

        [h -> Add(h, bias[E]) =] x -> Add(x, skip) = s -> LayerNormalization(s, scale, [bias], axis=-1) = y
        =>  SkipLayerNormalization(x, skip, gamma, beta, bias) -> [y]                   (emit=ort, post-LN)
        =>  SkipLayerNormalization(x, skip, gamma, beta, bias) -> [y, "", "", s]        (emit=ort, pre-LN:
                                                        s also read elsewhere or a graph output)
        =>  Squeeze(CustomSkipLayerNormPluginDynamic(Unsqueeze(x), Unsqueeze(skip)))   (emit=plugin, post-LN)

    Either operand order of both Adds. The bias Add is folded only when its bias is constant and its
    output feeds nothing but the residual Add; otherwise ``h + bias`` is the fused node's input.

Requires:
    Shapes of both Add operands (run ``infer-shapes`` first).

Rejects:
    residual-sum-used-elsewhere (plugin: the sum is read by more than the LayerNorm or is a graph
    output), layernorm-axis-not-last, layernorm-params-not-constant, residual-shapes-differ (the
    two operands' inferred shapes must be equal, symbolic dims by name),
    bias-shape-mismatch, rank-not-3 (plugin), dtype-not-supported-by-plugin,
    eps-not-supported-by-plugin (the TensorRT plugin has no epsilon field: its kernels add at most
    FLT_EPSILON = 1.19e-7, so only LayerNorms with epsilon <= FLT_EPSILON keep their meaning), non-convex.

Numerics:
    The same LayerNorm on the same sum; fp32 results agree to ~1e-6 relative. The sum output is the
    same elementwise sum (the order of the three summands may differ: ~1 ulp). With the plugin, the
    model's epsilon (<= FLT_EPSILON) is replaced by the kernel's: a relative change of about
    FLT_EPSILON / (2 * variance), negligible unless a row is nearly constant.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import NamedTuple

import numpy as np
import onnx_graphsurgeon as gs

from passes._norm_patterns import channel_vector
from surgery.graph_utils import NameGen, const_value, is_const, producer, tensor_rank
from surgery.pass_base import PassContext
from surgery.plugins import make_plugin_node
from passes.plugins import SKIP_LN_PLUGIN, TRT_SKIP_LN_EPSILON
from surgery.registry import register_pass
from surgery.rewrite import Match, PatternRewritePass, Reject, State

_TYPE_IDS = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}


class _Variant(NamedTuple):
    """Which Adds there are and how their operands are ordered."""

    with_bias: bool  # a bias Add feeds the residual Add
    bias_first: bool  # the bias constant is the bias Add's first operand
    biased_first: bool  # the (biased) input is the residual Add's first operand, skip the second
    ln_bias: bool  # the LayerNormalization has a bias input

    @property
    def key(self) -> str:
        adds = ("bias" + ("r" if self.bias_first else "") + ("-" if self.biased_first else "-r")) if self.with_bias else "plain"
        return adds + ("+lnb" if self.ln_bias else "")


_VARIANTS = tuple(
    _Variant(with_bias, bias_first, biased_first, ln_bias)
    for ln_bias in (True, False) for with_bias in (True, False)
    for bias_first in ((False, True) if with_bias else (False,)) for biased_first in ((True, False) if with_bias else (True,))
)


def _pattern(v: _Variant) -> gs.GraphPattern:
    """The LayerNorm's parameters are the first pattern inputs, so gs enters at the LayerNorm and reaches
    the Adds through its input; the residual sum is a pattern output as well, so gs accepts it having
    consumers outside the match (pre-LN) and ``check`` decides what they mean. gs 0.6 does not walk on
    from an output tensor: entered at an Add, the LayerNorm would be left unmapped (``matching.complete``)."""
    p = gs.GraphPattern()
    params = [p.variable(), p.variable()] if v.ln_bias else [p.variable()]
    x, skip = p.variable(), p.variable()
    if v.with_bias:
        b = p.variable()
        # the bias operand must be a constant: without it both operand orders would match every bias Add
        x = p.add("bias_add", "Add", inputs=[b, x] if v.bias_first else [x, b],
                  check_func=lambda n, j=0 if v.bias_first else 1: is_const(n.inputs[j]))
    s = p.add("residual", "Add", inputs=[x, skip] if v.biased_first else [skip, x])
    p.set_output_tensors([p.add("ln", "LayerNormalization", inputs=[s, *params]), s])
    return p


class _Plan(NamedTuple):
    """What ``check`` found: the two summands, the LayerNorm's epsilon and its per-channel vectors, and
    the residual sum when something besides the LayerNorm reads it (pre-LN; ``emit=ort`` only)."""

    x: gs.Tensor
    skip: gs.Tensor
    eps: float
    gamma: np.ndarray
    beta: np.ndarray | None
    bias: np.ndarray | None
    sum: gs.Tensor | None


@register_pass
class FuseSkipLayerNormPass(PatternRewritePass[State, _Variant]):
    """Variants are ``_Variant`` Add layouts; a variant's key names it in the report."""

    name = "fuse-skip-layernorm"
    summary = "Fuse residual Add (+bias) + LayerNormalization into SkipLayerNormalization (ort) or the TRT plugin"
    anchor_ops = ("LayerNormalization",)
    emits = ("ort", "plugin")
    runs_after = MappingProxyType({
        "fuse-layernorm": "it matches LayerNormalization nodes, which fuse-layernorm makes from decomposed LayerNorms",
    })

    def prepare(self, graph: gs.Graph, ctx: PassContext) -> State:
        state = State(graph, ctx)
        if state.emit == "plugin":
            state.notes.append(f"CustomSkipLayerNormPluginDynamic has no epsilon field (kernel adds at most FLT_EPSILON = "
                               f"{TRT_SKIP_LN_EPSILON:.3g}); LayerNorms with a larger epsilon are rejected")
        return state

    def patterns(self, state: State) -> dict[str, tuple[gs.GraphPattern, _Variant]]:
        return {v.key: (_pattern(v), v) for v in _VARIANTS}

    def check(self, m: Match[_Variant], state: State) -> _Plan | Reject:
        v = m.variant
        residual, ln = m.get("residual"), m.get("ln")
        x, skip = residual.inputs if v.biased_first else residual.inputs[::-1]
        total = residual.outputs[0]
        reused = total in state.graph.outputs or any(c is not ln for c in total.outputs)
        if reused and state.emit == "plugin":
            return Reject("residual-sum-used-elsewhere", total)  # the plugin has no output for the sum
        rank = tensor_rank(skip)
        if ln.attrs.get("axis", -1) not in (-1, (rank or 0) - 1):
            return Reject("layernorm-axis-not-last")
        params = next((t for t in ln.inputs[1:] if not is_const(t)), None)
        if params is not None:
            return Reject("layernorm-params-not-constant", params)
        gamma = const_value(ln.inputs[1]).reshape(-1)
        beta = const_value(ln.inputs[2]).reshape(-1) if v.ln_bias else None
        bias = None
        if v.with_bias:
            node = m.get("bias_add")
            x, bias_t = (node.inputs[1], node.inputs[0]) if v.bias_first else tuple(node.inputs)
            bias = channel_vector(const_value(bias_t), gamma.size, rank)
            if bias is None:
                return Reject("bias-shape-mismatch", bias_t)
        if x.shape is None or skip.shape is None or list(x.shape) != list(skip.shape):
            return Reject("residual-shapes-differ", skip)
        eps = float(ln.attrs.get("epsilon", 1e-5))
        if state.emit == "plugin":
            if rank != 3:
                return Reject("rank-not-3", skip)
            if x.dtype is None or np.dtype(x.dtype) not in _TYPE_IDS:
                return Reject("dtype-not-supported-by-plugin", x)
            if eps > TRT_SKIP_LN_EPSILON:
                return Reject("eps-not-supported-by-plugin")
        return _Plan(x, skip, eps, gamma, beta, bias, total if reused else None)

    def rewrite(self, m: Match[_Variant], plan: _Plan, state: State, names: NameGen) -> list[gs.Node]:
        out, name = m.outputs[0], names()
        if state.emit == "ort":
            consts = [gs.Constant(f"{name}/{k}", v) for k, v in (("gamma", plan.gamma), ("beta", plan.beta), ("bias", plan.bias))
                      if v is not None]
            # outputs: normalized, mean, inv_std_var, input_skip_bias_sum (the residual sum, kept as the same tensor)
            outs = [out] if plan.sum is None else [out, gs.Variable.empty(), gs.Variable.empty(), plan.sum]
            return [gs.Node("SkipLayerNormalization", name=name, domain="com.microsoft", attrs={"epsilon": plan.eps},
                            inputs=[plan.x, plan.skip, *consts], outputs=outs)]
        axes = [3, 4]

        def reshape(op: str, t: gs.Tensor, result: gs.Variable) -> gs.Node:
            if int(state.graph.opset) >= 13:
                return gs.Node(op, name=names(f"/{op.lower()}"), inputs=[t, gs.Constant(names("/axes"), np.array(axes, np.int64))],
                               outputs=[result])
            return gs.Node(op, name=names(f"/{op.lower()}"), attrs={"axes": axes}, inputs=[t], outputs=[result])

        x, gamma = plan.x, plan.gamma
        x5, skip5, out5 = (gs.Variable(names(suffix), dtype=x.dtype) for suffix in ("/input5d", "/skip5d", "/output5d"))
        attrs = {"type_id": _TYPE_IDS[np.dtype(x.dtype)], "ld": int(gamma.size),
                 "beta": plan.beta if plan.beta is not None else np.zeros_like(gamma),
                 "gamma": gamma, "bias": plan.bias if plan.bias is not None else np.zeros_like(gamma)}
        plugin = make_plugin_node(SKIP_LN_PLUGIN, [x5, skip5], [out5], attrs, name)
        return [reshape("Unsqueeze", x, x5), reshape("Unsqueeze", plan.skip, skip5), plugin, reshape("Squeeze", out5, out)]

    def site(self, nodes: list[gs.Node]) -> str:
        """The LayerNorm (the anchor), so ``--explain`` never lists a judged site again as unmatched."""
        return next(n.name for n in nodes if n.op == "LayerNormalization")

    def unmatched_reason(self, node: gs.Node, state: State) -> str:
        src = producer(node.inputs[0])
        if src is None or src.op != "Add":
            return "input-not-a-residual-add"
        if state.emit == "plugin" and (len(node.inputs[0].outputs) > 1 or node.inputs[0] in state.graph.outputs):
            return "residual-sum-used-elsewhere"
        return "no-pattern-match"
