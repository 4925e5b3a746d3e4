"""unflatten-gemm: turn Reshape -> Gemm -> Reshape around an N-D input back into MatMul (+ Add).

Summary: PyTorch exports ``Conv1D``/``addmm`` layers (GPT-2's c_attn, c_proj, c_fc) on a [B, S, K] input as a
flatten to [-1, K], a Gemm and a reshape back to [B, S, N] whose target is computed from ``Shape(x)`` at run
time. MatMul takes the N-D input directly, so ``x @ W + b`` needs neither reshape nor their shape arithmetic,
and the fusions that read ``MatMul -> Add(bias)`` (packed attention, BiasGelu, SkipLayerNormalization's bias)
see it.

Matches::

    x[L.., T..] -> Reshape([-1|M, K]) -> Gemm(W, [C], alpha=1, beta=1, transA=0) -> Reshape(t) -> y
        prod(T) = K (static trailing dims, usually just K; [H, D] after attention), at least two dims L;
        t = [L..., N], computed (Shape(x) reads, or the same dims proven by shape inference) or constant
    =>  y = MatMul(x, W) [+ C]            (W transposed once when transB=1; C as a 1-D [N] constant;
                                           x first Reshaped to [0.., -1] when T has several dims)

    The Gemm output feeds only the back Reshape and is no graph output.

Rejects:
    gemm-attributes (alpha or beta not 1, transA set), weight-not-constant (transB with a computed W),
    bias-not-vector (C not broadcastable as [N]), gemm-output-shared, input-rank (x not N-D or its last dim
    ending in dims that multiply to K), back-target (the back Reshape's target is not proven to be x's leading dims and N).

Numerics: the same products and sums; a MatMul kernel may order the accumulation differently from the
Gemm's (fp32 results agree to rounding).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from passes.resolve_reshape_targets import target_entries
from surgery.graph_utils import NameGen, const_value, disconnect, producer
from surgery.pass_base import Pass, PassContext, PassResult
from surgery.registry import register_pass

__all__ = ["UnflattenGemmPass"]


@register_pass
class UnflattenGemmPass(Pass):
    name = "unflatten-gemm"
    summary = "Replace Reshape(x, [-1, K]) -> Gemm -> Reshape(back to x's dims) by MatMul(x, W) + bias."

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        outputs = {t.name for t in graph.outputs}
        names = NameGen(graph, self.name)
        for gemm in [n for n in graph.nodes if n.op == "Gemm" and (n.domain or "") in ("", "ai.onnx")]:
            plan = _plan(gemm, outputs, names)
            if plan is None:
                continue
            if isinstance(plan, str):
                result.reject(plan, gemm.name)
                continue
            x, lead, weight, bias, back = plan
            y = back.outputs[0]
            disconnect([gemm, back])
            if lead < len(x.shape) - 1:  # [.., H, D] -> [.., H*D]: merge the trailing dims first
                merged = gs.Variable(names("_merged"), dtype=x.dtype, shape=[*x.shape[:lead], weight.shape[0]])
                target = gs.Constant(names("_shape"), np.array([0] * lead + [-1], np.int64))
                graph.nodes.append(gs.Node("Reshape", name=names(), inputs=[x, target], outputs=[merged]))
                x = merged
            product = y if bias is None else gs.Variable(names("_matmul"), dtype=y.dtype, shape=y.shape)
            graph.nodes.append(gs.Node("MatMul", name=names(), inputs=[x, weight], outputs=[product]))
            if bias is not None:
                graph.nodes.append(gs.Node("Add", name=names(), inputs=[product, bias], outputs=[y]))
            result.apply(gemm.name)
        if result.changed:
            graph.cleanup().toposort()
        return result


def _plan(gemm: gs.Node, outputs: set[str], names: NameGen):
    """(x, W, bias or None, back Reshape) for a matching Gemm, a reject reason, or None when it is no candidate."""
    flat = producer(gemm.inputs[0])
    if flat is None or flat.op != "Reshape" or not any(r.op == "Reshape" for r in gemm.outputs[0].outputs):
        return None
    x = flat.inputs[0]
    flat_target = const_value(flat.inputs[1])
    if flat_target is None or flat_target.size != 2 or int(flat_target.reshape(-1)[0]) == 0:
        return "input-rank"
    lead = _leading_dims(x, int(flat_target.reshape(-1)[1]))
    if lead is None:
        return "input-rank"
    a = gemm.attrs
    if float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0 or int(a.get("transA", 0)):
        return "gemm-attributes"
    weight, trans_b = gemm.inputs[1], bool(int(a.get("transB", 0)))
    if trans_b and not isinstance(weight, gs.Constant):
        return "weight-not-constant"
    w_shape = weight.shape
    n = w_shape[0 if trans_b else 1] if w_shape is not None and len(w_shape) == 2 else None
    bias = gemm.inputs[2] if len(gemm.inputs) > 2 and gemm.inputs[2].name else None
    bias_values = const_value(bias) if bias is not None else None
    if bias is not None and (bias_values is None or not isinstance(n, int) or bias_values.size != n
                             or (bias_values.ndim == 2 and bias_values.shape[0] != 1)):
        return "bias-not-vector"
    readers = gemm.outputs[0].outputs
    if not any(r.op == "Reshape" for r in readers):
        return None  # a 2-D Gemm on a flattened input (a classifier head): nothing to undo
    if len(readers) != 1 or gemm.outputs[0].name in outputs:
        return "gemm-output-shared"
    back = readers[0]
    if not _restores(back.inputs[1], x, lead, n):
        return "back-target"
    if trans_b:  # read and transposed only once the rewrite is sure
        weight = gs.Constant(names("_weight_t"), np.ascontiguousarray(weight.values.T))
    if bias is not None and bias_values.ndim != 1:
        bias = gs.Constant(names("_bias"), bias_values.reshape(-1))
    return x, lead, weight, bias, back


def _leading_dims(x: gs.Tensor, k: int) -> int | None:
    """p >= 2 such that x's dims from p on are static and multiply to k (the dims the flatten merged), else None."""
    if x.shape is None or len(x.shape) < 3:
        return None
    size = 1
    for p in range(len(x.shape) - 1, 1, -1):
        dim = x.shape[p]
        if not isinstance(dim, int) or dim <= 0:
            return None
        size *= dim
        if size == k:
            return p
    return None


def _restores(target: gs.Tensor, x: gs.Tensor, lead: int, n) -> bool:
    """True when ``target`` is proven to be [x's first ``lead`` dims..., n]."""
    entries = target_entries(target)
    if entries is None:
        values = const_value(target)
        entries = [int(v) for v in values.reshape(-1)] if values is not None else None
    if entries is None or len(entries) != lead + 1 or entries[-1] not in (n, -1) or not isinstance(n, int):
        return False
    for k, entry in enumerate(entries[:-1]):
        dim = x.shape[k]
        if isinstance(entry, int):
            if not (isinstance(dim, int) and entry == dim and entry > 0):
                return False
            continue
        src, j = entry
        if src is x and j == k:
            continue
        other = src.shape[j] if src.shape is not None and -len(src.shape) <= j < len(src.shape) else None
        if not (other == dim and (isinstance(dim, int) or (isinstance(dim, str) and dim))):
            return False
    return True
