"""``fuse-skip-layernorm``: fuse a residual Add (+ optional bias Add) into the LayerNormalization it feeds.

Summary:
    Post-LN transformers (BERT) compute ``LayerNorm(x + bias + skip)``. For ``emit=ort`` this becomes
    ``com.microsoft.SkipLayerNormalization``; for ``emit=plugin`` TensorRT's own
    ``CustomSkipLayerNormPluginDynamic`` v1 (5-D ``[B, S, E, 1, 1]`` I/O, so the pass adds an Unsqueeze
    before and a Squeeze after). ``emit=onnx`` does nothing: there is no standard ONNX op. Run it after
    ``fuse-layernorm``.

Matches:
    ::

        [h -> Add(h, bias[E]) =] x -> Add(x, skip) -> LayerNormalization(scale, [bias], axis=-1)
        =>  SkipLayerNormalization(x, skip, gamma, beta, bias)        (emit=ort)
        =>  Squeeze(CustomSkipLayerNormPluginDynamic(Unsqueeze(x), Unsqueeze(skip)))   (emit=plugin)

    Either operand order of both Adds. The residual sum must feed only the LayerNorm (pre-LN models,
    whose sum is reused by the next residual, are reported as ``residual-sum-used-elsewhere``).

Requires:
    Shapes of both Add operands (run ``infer-shapes`` first).

Rejects:
    layernorm-axis-not-last, layernorm-params-not-constant, residual-shapes-differ, bias-not-constant,
    bias-shape-mismatch, rank-not-3 (plugin), dtype-not-supported-by-plugin,
    eps-not-supported-by-plugin (the TensorRT plugin has no epsilon field: its kernels add at most
    FLT_EPSILON = 1.19e-7, so only LayerNorms with epsilon <= FLT_EPSILON keep their meaning), non-convex.

Numerics:
    The same LayerNorm on the same sum; fp32 results agree to ~1e-6 relative. With the plugin, the
    model's epsilon (<= FLT_EPSILON) is replaced by the kernel's: a relative change of about
    FLT_EPSILON / (2 * variance), negligible unless a row is nearly constant.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from surgery.graph_utils import NameGen, channel_vector, const_value, is_const, producer, tensor_rank
from surgery.pass_base import PassContext, PassResult
from surgery.plugins import PluginSpec, make_plugin_node, register_plugin
from surgery.registry import register_pass
from surgery.rewrite import PatternRewritePass

TRT_SKIP_LN_EPSILON = float(np.finfo(np.float32).eps)
SKIP_LN_PLUGIN = register_plugin(PluginSpec(
    op="CustomSkipLayerNormPluginDynamic", version="1", namespace="",
    fields={"type_id": "int", "ld": "int", "beta": "tensor", "gamma": "tensor", "bias": "tensor"},
    inputs=("input", "skip"), builtin=True,
    notes="TensorRT BERT plugin: LayerNorm(input + skip + bias) over dim 2 of [S, B, E, 1, 1]; "
          "type_id 0 fp32 / 1 fp16; no epsilon field (kernel-fixed, at most FLT_EPSILON).",
))
_TYPE_IDS = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}
# (bias add present, bias const first, biased operand first in the residual Add, LN has a bias input)
_VARIANTS = {
    f"{'bias' + ('r' if bias_first else '') + ('-' if biased_first else '-r') if with_bias else 'plain'}"
    f"{'+lnb' if ln_bias else ''}": (with_bias, bias_first, biased_first, ln_bias)
    for ln_bias in (True, False) for with_bias in (True, False)
    for bias_first in ((False, True) if with_bias else (False,)) for biased_first in ((True, False) if with_bias else (True,))
}


def _pattern(with_bias: bool, bias_first: bool, biased_first: bool, ln_bias: bool) -> gs.GraphPattern:
    p = gs.GraphPattern()
    x, skip = p.variable(), p.variable()
    if with_bias:
        b = p.variable()
        x = p.add("bias_add", "Add", inputs=[b, x] if bias_first else [x, b])
    s = p.add("residual", "Add", inputs=[x, skip] if biased_first else [skip, x])
    params = [p.variable(), p.variable()] if ln_bias else [p.variable()]
    p.set_output_tensors([p.add("ln", "LayerNormalization", inputs=[s, *params])])
    return p


@register_pass
class FuseSkipLayerNormPass(PatternRewritePass):
    name = "fuse-skip-layernorm"
    summary = "Fuse residual Add (+bias) + LayerNormalization into SkipLayerNormalization (ort) or the TRT plugin"
    anchor_ops = ("LayerNormalization",)
    emits = ("onnx", "ort", "plugin")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        self._emit = self.emit(ctx)
        if self._emit == "onnx":
            return PassResult(notes=["emit=onnx: no standard ONNX op for skip + LayerNorm; nothing to do"])
        result = super().run(graph, ctx)
        if self._emit == "plugin":
            result.notes.append(f"CustomSkipLayerNormPluginDynamic has no epsilon field (kernel adds at most FLT_EPSILON = "
                                f"{TRT_SKIP_LN_EPSILON:.3g}); LayerNorms with a larger epsilon are rejected")
        return result

    def patterns(self, ctx: PassContext) -> dict[str, gs.GraphPattern]:
        return {key: _pattern(*flags) for key, flags in _VARIANTS.items()}

    def check(self, m: gs.PatternMapping, variant: str, graph: gs.Graph, ctx: PassContext) -> str | None:
        return self._analyse(m, variant)[1]

    def rewrite(self, graph: gs.Graph, m: gs.PatternMapping, variant: str, ctx: PassContext, names: NameGen) -> list[gs.Node]:
        (x, skip, eps, gamma, beta, bias), _ = self._analyse(m, variant)
        out, name = m.outputs[0], names()
        if self._emit == "ort":
            consts = [gs.Constant(f"{name}/{k}", v) for k, v in (("gamma", gamma), ("beta", beta), ("bias", bias)) if v is not None]
            return [gs.Node("SkipLayerNormalization", name=name, domain="com.microsoft", attrs={"epsilon": eps},
                            inputs=[x, skip, *consts], outputs=[out])]
        axes = [3, 4]

        def reshape(op: str, t: gs.Tensor, result: gs.Variable) -> gs.Node:
            if int(graph.opset) >= 13:
                return gs.Node(op, name=names(f"/{op.lower()}"), inputs=[t, gs.Constant(names("/axes"), np.array(axes, np.int64))], outputs=[result])
            return gs.Node(op, name=names(f"/{op.lower()}"), attrs={"axes": axes}, inputs=[t], outputs=[result])

        x5, skip5, out5 = (gs.Variable(names(suffix), dtype=x.dtype) for suffix in ("/input5d", "/skip5d", "/output5d"))
        attrs = {"type_id": _TYPE_IDS[np.dtype(x.dtype)], "ld": int(gamma.size), "beta": beta if beta is not None else np.zeros_like(gamma),
                 "gamma": gamma, "bias": bias if bias is not None else np.zeros_like(gamma)}
        plugin = make_plugin_node(SKIP_LN_PLUGIN, [x5, skip5], [out5], attrs, name)
        return [reshape("Unsqueeze", x, x5), reshape("Unsqueeze", skip, skip5), plugin, reshape("Squeeze", out5, out)]

    def _analyse(self, m: gs.PatternMapping, variant: str):
        with_bias, bias_first, biased_first, ln_bias = _VARIANTS[variant]
        residual, ln = m.get("residual"), m.get("ln")
        x, skip = residual.inputs if biased_first else residual.inputs[::-1]
        rank = tensor_rank(skip)
        if ln.attrs.get("axis", -1) not in (-1, (rank or 0) - 1):
            return None, "layernorm-axis-not-last"
        if not all(is_const(t) for t in ln.inputs[1:]):
            return None, "layernorm-params-not-constant"
        gamma = const_value(ln.inputs[1]).reshape(-1)
        beta = const_value(ln.inputs[2]).reshape(-1) if ln_bias else None
        bias = None
        if with_bias:
            node = m.get("bias_add")
            x, bias_t = (node.inputs[1], node.inputs[0]) if bias_first else tuple(node.inputs)
            if not is_const(bias_t):
                return None, "bias-not-constant"
            bias = channel_vector(const_value(bias_t), gamma.size, rank)
            if bias is None:
                return None, "bias-shape-mismatch"
        if x.shape is None or skip.shape is None or list(x.shape) != list(skip.shape):
            return None, "residual-shapes-differ"
        eps = float(ln.attrs.get("epsilon", 1e-5))
        if self._emit == "plugin":
            if rank != 3:
                return None, "rank-not-3"
            if x.dtype is None or np.dtype(x.dtype) not in _TYPE_IDS:
                return None, "dtype-not-supported-by-plugin"
            if eps > TRT_SKIP_LN_EPSILON:
                return None, "eps-not-supported-by-plugin"
        return (x, skip, eps, gamma, beta, bias), None

    def unmatched_reason(self, node: gs.Node, graph: gs.Graph) -> str:
        src = producer(node.inputs[0])
        if src is None or src.op != "Add":
            return "input-not-a-residual-add"
        if len(node.inputs[0].outputs) > 1 or node.inputs[0] in graph.outputs:
            return "residual-sum-used-elsewhere"
        return "no-pattern-match"
