"""``fuse-attention``: fuse the scaled-dot-product attention core into one op.

Summary:
    Matches the SDPA core from the head-split tensors Q, K, V ([B,H,S,D]) to its output [B,H,Sq,Dv];
    the Q/K/V projections, head split/merge Reshape/Transposes and any rotary embedding around Q and K
    stay as they are (rotary outputs simply become the Q/K inputs). ``ctx.options.emit``:

    - ``onnx``: ``Attention`` (opset 23) following TensorRT's rules: 4-D Q/K/V, the scale as the
      ``scale`` attribute (always set: the default would be 1/√D), no KV-cache inputs or outputs, the
      mask as ``attn_mask`` (additive float or boolean), ``is_causal=1`` where the mask is a constant
      causal mask. Grouped-query attention passes the un-repeated K/V (q_num_heads != kv_num_heads is
      native in opset 23), dropping the Unsqueeze/Expand/Reshape repeat.
    - ``ort``: ``com.microsoft.MultiHeadAttention`` with Q, K, V as [B,S,H*D]: the projections the head
      split Reshape/Transpose came from where the shapes prove it (onnxruntime's flash / memory-efficient
      CUDA kernels take that layout; K/V as [B,H,S,D] fall to slower paths), else Q via Transpose+Reshape
      and K/V as [B,H,S,D]; mask as ``attention_bias``, output Reshape+Transpose back to [B,H,S,Dv].
    - ``plugin``: ``SurgeryAttention`` (onnx_surgery, version 1) on Q/K/V [B,H,S,D] (K/V may have fewer
      heads), fields num_heads, scale, causal, mask_kind (0 none, 1 additive float, 2 boolean keep-mask).

Matches (variants in passes/_attention_match.py)::

    Q ─[Mul|Div c]─┐
    K ─Transpose─[Mul c]─ MatMul ─[Mul|Div c]─[Add mask | Where(cond,·,-big)]─ Softmax(-1) ─[Cast]*─ MatMul ─> out
    V ──────────────────────────────────────────────────────────────────────────────────────┘
      -> Attention(Q, K', V, [mask], scale=c, [is_causal])      K' = K, K^T of [B,S,H,D], or un-repeated KV

Requires:
    onnx emit: the opset raised to 23 (once per run, before the first rewrite). Runs after
    canonicalize-attention-layout when both are in a pipeline (``runs_after``).

Rejects:
    no-dedicated-kernel (onnx emit for TensorRT, ``ctx.options.attention_kernels == "tensorrt"`` as the
    trt preset sets it: fp32 attention has no dedicated TensorRT kernel, and a plain build of an fp32
    ``Attention`` fails, so the MatMul-Softmax-MatMul form is kept; with ``--precision fp16/bf16`` it
    fuses), scale-not-scalar, fill-not-large-negative (Where mask), cast-changes-dtype, cast-dtype-unknown (run
    infer-shapes first), softmax-axis (opset < 13 Softmax without an explicit last axis), gqa-bad-repeat
    (Unsqueeze axis is not 2), not-4d (a Q/K/V input of known rank != 4), num-heads-unknown (ort/plugin
    need a static head count), gqa-no-ort-op (MultiHeadAttention needs equal head counts; the non-GQA
    variant then fuses with the repeat kept), opset-raise-refused (detail in notes).
    Not matched, and said so by --explain: the tf2onnx lowering of Keras MultiHeadAttention's einsums
    (5-D Reshape/Transpose chains, Softmax on axis 2: run canonicalize-attention-layout first, as the
    trt preset does), KV-cache Concats. Rotary embedding is fuse-rotary's; either form of Q/K is fine.

Numerics:
    A mask that provably keeps every position (an additive mask that is 0 everywhere, a Where condition that
    is True everywhere: constants broadcast by Expand, as transformers builds a ViT's bidirectional mask) is
    dropped, so that the fused op may take its mask-free kernels.
    Attention computes softmax(Q·K^T·scale + mask)·V in one kernel; with fp32 the result agrees with
    the decomposed graph to about 1e-6 relative. A Where mask becomes a boolean mask: masked scores are
    excluded exactly rather than pushed to -3.4e38 (identical after Softmax unless a row is fully masked).
    A mask whose row dim is 1 (a [B,1,1,Sk] padding mask) is Expanded to [..,Sq,Sk]: onnxruntime's
    Attention and MultiHeadAttention do not broadcast that dim.

TensorRT-RTX 1.7 (checked on CPU, see tests/passes/test_attention_fusions_on_samples.py): the ONNX
    parser imports Attention-23 as IAttentionInput/IAttentionOutput layers. An fp32 build with head
    size 16 fails ("Attention operation was not supported by a dedicated kernel ... may be marked as
    decomposable") unless ``IAttention.decomposable`` is set after parsing (cast the layer to
    ``IAttentionInputLayer`` and set ``layer.attention.decomposable = True``); then BERT, GPT-2 and
    Llama-GQA samples build. The ONNX op has no decomposable flag, so the converter must set it.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from passes import _attention_match as am
from surgery.graph_utils import NameGen, const_value, producer, scalar_value
from surgery.pass_base import PassContext
from surgery.plugins import make_plugin_node
from passes.plugins import ATTENTION_PLUGIN
from surgery.registry import register_pass
from surgery.rewrite import Match, PatternRewritePass, Reject, State

MS_DOMAIN = "com.microsoft"
ATTENTION_OPSET = 23


@dataclass
class AttentionState(State):
    ops: frozenset[str]  # op types of the graph: only variants it can supply are built and matched
    keep_fp32: bool  # onnx emit for TensorRT without a precision change: fp32 attention stays decomposed


class AttentionPlan(NamedTuple):
    """What ``check`` read off a match: the fused op's operands and attributes."""

    q: gs.Tensor
    k: gs.Tensor
    v: gs.Tensor
    scale: float
    mask: gs.Tensor | None  # None when there is none, or when it is the constant causal mask
    mask_kind: int  # 0 none, 1 additive float, 2 boolean keep-mask
    causal: int
    invert_mask: bool  # where-inv: the condition marks the masked positions
    expand_rows: bool  # the mask's row dim is not yet Sq (onnxruntime does not broadcast it)
    heads: int | None  # ort/plugin: the static head count of Q


@register_pass
class FuseAttentionPass(PatternRewritePass[AttentionState, am.Variant]):
    """Variants are ``am.Variant``; the pattern key (``<qk>/<scale>/<mask>/<casts>:<order>``) is the outcome."""

    name = "fuse-attention"
    summary = "Fuse the Q·K^T/softmax/·V attention core into Attention-23, com.microsoft MHA, or SurgeryAttention"
    anchor_ops = ("Softmax",)
    emits = ("onnx", "ort", "plugin")
    runs_after = MappingProxyType({
        "canonicalize-attention-layout": "it turns tf2onnx's 5-D Keras attention into the 4-D form matched here",
    })

    def prepare(self, graph: gs.Graph, ctx: PassContext) -> AttentionState:
        o = ctx.options
        keep_fp32 = o.emit == "onnx" and o.attention_kernels == "tensorrt" and not o.precision
        return AttentionState(graph, ctx, frozenset(n.op for n in graph.nodes), keep_fp32)

    def required_opset(self, state: AttentionState) -> int | None:
        return ATTENTION_OPSET if state.emit == "onnx" else None

    def patterns(self, state: AttentionState) -> dict[str, tuple[gs.GraphPattern, am.Variant]]:
        return am.build_variants(state.ops) if "Softmax" in state.ops else {}

    def check(self, m: Match[am.Variant], state: AttentionState) -> AttentionPlan | Reject:
        var, emit = m.variant, state.emit
        scale = am.scale_of(m, var.scale)
        if scale is None:
            return Reject("scale-not-scalar", am.scale_constant(m))
        if var.mask.startswith("where") and not am.is_large_negative(m.constants["fill"]):
            return Reject("fill-not-large-negative", m.constants["fill"])
        for i in range(var.casts):
            cast = m.get(f"cast{i}")
            dtype = next((t.dtype for t in (cast.inputs[0], m.get("sm").inputs[0], m.inputs[0]) if t.dtype is not None), None)
            if dtype is None:
                return Reject("cast-dtype-unknown", cast.inputs[0])
            if onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)) != cast.attrs["to"]:
                return Reject("cast-changes-dtype", cast.outputs[0])
        if "axis" not in m.get("sm").attrs and int(state.graph.opset) < 13:
            return Reject("softmax-axis")
        if var.qk == "gqa":
            bad = next((m.constants[a] for a in ("kaxes", "vaxes") if _axes(m.constants[a]) != [2]), None)
            if bad is not None:
                return Reject("gqa-bad-repeat", bad)
        q, k, v = (var.input(m, n) for n in ("q", "k", "v"))
        for t in (q, k, v):
            if t.shape is not None and len(t.shape) != 4:
                return Reject("not-4d", t)
        heads = am.static_heads(q) if emit in ("ort", "plugin") else None
        if emit in ("ort", "plugin") and heads is None:
            return Reject("num-heads-unknown", q)
        if emit == "ort" and var.qk == "gqa":
            return Reject("gqa-no-ort-op")
        if state.keep_fp32 and (q.dtype is None or np.dtype(q.dtype) == np.float32):
            return Reject("no-dedicated-kernel")
        mask, mask_kind, causal = None, 0, 0
        if var.mask == "add":
            mask, mask_kind = var.input(m, "mask"), 1
            if am.causal_constant(mask):
                mask, mask_kind, causal = None, 0, 1
        elif var.mask.startswith("where"):
            mask, mask_kind = var.input(m, "mask"), 2
        if mask is not None and am.mask_keeps_everything(mask, mask_kind, var.mask == "where-inv"):
            mask, mask_kind = None, 0  # e.g. transformers' all-True bidirectional mask of a ViT: no mask at all
        expand = mask is not None and not _mask_rows_known(mask, q)  # e.g. a [B,1,1,Sk] padding mask
        return AttentionPlan(q, k, v, float(scale), mask, mask_kind, causal, var.mask == "where-inv", expand, heads)

    def rewrite(self, m: Match[am.Variant], plan: AttentionPlan, state: AttentionState, names: NameGen) -> list[gs.Node]:
        q, k, v, mask_t = plan.q, plan.k, plan.v, plan.mask
        out, new = m.outputs[0], []
        packed, qkv = None, None
        outputs = {t.name for t in state.graph.outputs}
        if state.emit == "ort":  # K and V as the [B,S,H*D] projections they were split from, where they are
            k3 = _bsnh_source(k, plan.heads, "bshd" if m.variant.qk == "kbshd" else "bhsd")
            v3 = _bsnh_source(v, plan.heads, "bhsd")
            packed = (k3, v3) if k3 is not None and v3 is not None else None
            q3 = _bsnh_source(q, plan.heads, "bhsd")
            qkv = _packed_projection(q3, k3, v3, outputs, names) if packed and q3 is not None else None
        if m.variant.qk == "kbshd" and packed is None:  # K arrives as [B,S,H,D]: the fused op wants [B,H,S,D]
            k4 = gs.Variable(names("_k"), dtype=k.dtype)
            new.append(gs.Node("Transpose", name=names(), attrs={"perm": [0, 2, 1, 3]}, inputs=[k], outputs=[k4]))
            k = k4
        if plan.invert_mask:
            keep = gs.Variable(names("_keep"), dtype=np.bool_, shape=mask_t.shape)
            new.append(gs.Node("Not", name=names(), inputs=[mask_t], outputs=[keep]))
            mask_t = keep
        if plan.expand_rows:  # lengths from dim 1 of a [B,S,H*D] source, else dim 2 of the [B,H,S,D] tensor
            q3 = _bsnh_source(q, plan.heads, "bhsd") if state.emit == "ort" else None
            if qkv is not None:  # the packed x, so that no unpacked projection gains a reader
                q_len = k_len = (qkv[0].x, 1)
            else:
                q_len = (_length_source(q3, outputs), 1) if q3 is not None else (q, 2)
                k_len = (_length_source(packed[0], outputs), 1) if packed else (k, 2)
            mask_t = _expand_rows(mask_t, q_len, k_len, names, new)
        emit = state.emit
        if emit == "onnx":
            attrs = {"scale": plan.scale, **({"is_causal": 1} if plan.causal else {})}
            ins = [q, k, v] + ([mask_t] if mask_t is not None else [])
            return new + [gs.Node("Attention", name=names(), attrs=attrs, inputs=ins, outputs=[out])]
        if emit == "plugin":
            attrs = {"num_heads": plan.heads, "scale": plan.scale, "causal": plan.causal, "mask_kind": plan.mask_kind}
            ins = [q, k, v] + ([mask_t] if mask_t is not None else [])
            return new + [make_plugin_node(ATTENTION_PLUGIN, ins, [out], attrs, name=names())]
        if packed is not None:
            k, v = packed
        return new + _ort_attention(q, k, v, mask_t, plan.mask_kind, plan.causal, plan.scale, plan.heads, out, names,
                                    outputs, packed is not None, qkv)

    def unmatched_reason(self, node: gs.Node, state: AttentionState) -> str:
        nxt = [c.op for c in node.outputs[0].outputs]
        prev = node.inputs[0].inputs[0].op if node.inputs[0].inputs else "input"
        if int(node.attrs.get("axis", -1)) not in (-1, 3):
            return (f"softmax-axis-{node.attrs.get('axis')} (transposed scores; canonicalize-attention-layout rewrites "
                    "the Keras/tf2onnx einsum form, see its --explain)")
        if "MatMul" not in nxt and "Cast" not in nxt:
            return f"softmax-output-not-matmul (feeds {nxt})"
        return f"no-attention-pattern (Softmax input from {prev}; Q/K/scale/mask structure not recognised)"

    def site(self, nodes: list[gs.Node]) -> str:
        return next((n.name for n in nodes if n.op == "Softmax"), nodes[0].name)


def _mask_rows_known(mask: gs.Tensor, q: gs.Tensor) -> bool:
    """True when the mask already has Sq rows (ORT's Attention/MHA do not broadcast that dim).

    The original Add/Where broadcast the mask against [B,H,Sq,Sk], so its row dim is 1 or Sq: any
    known value other than 1 (a symbolic name included) is Sq.
    """
    return bool(mask.shape and len(mask.shape) >= 2 and mask.shape[-2] not in (1, None)
                and not (isinstance(mask.shape[-2], str) and mask.shape[-2] == ""))


def _expand_rows(mask: gs.Tensor, q_len: tuple[gs.Tensor, int], k_len: tuple[gs.Tensor, int], names: NameGen,
                 new: list[gs.Node]) -> gs.Tensor:
    """Expand(mask, [1, 1, Sq, Sk]): a [B,1,1,Sk] padding mask becomes [B,1,Sq,Sk]."""
    def shape_slice(t: gs.Tensor, dim: int) -> gs.Tensor:
        out = gs.Variable(names("_dim"), dtype=np.int64)
        new.append(gs.Node("Shape", name=names(), attrs={"start": dim, "end": dim + 1}, inputs=[t], outputs=[out]))
        return out

    ones = gs.Constant(names("_ones"), np.ones(2, np.int64))
    target = gs.Variable(names("_shape"), dtype=np.int64)
    new.append(gs.Node("Concat", name=names(), attrs={"axis": 0}, inputs=[ones, shape_slice(*q_len), shape_slice(*k_len)],
                       outputs=[target]))
    full = gs.Variable(names("_mask"), dtype=mask.dtype)
    new.append(gs.Node("Expand", name=names(), inputs=[mask, target], outputs=[full]))
    return full


def _axes(t: gs.Tensor) -> list[int] | None:
    v = scalar_value(t)
    return None if v is None else [int(v)]


def _bsnh_source(t: gs.Tensor, heads: int, layout: str) -> gs.Tensor | None:
    """The [B,S,H*D] tensor that ``t`` ([B,H,S,D], or [B,S,H,D] for layout "bshd") is the head split of.

    That is x in ``Transpose(0,2,1,3)(Reshape(x, [B,S,H,D]))``, accepted only when the shapes prove the split
    keeps B and S (the same dims, static or symbolic) and splits x's last dim into ``heads`` x D.
    """
    split_out = t
    if layout == "bhsd":
        node = t.inputs[0] if len(t.inputs) == 1 else None
        if node is None or node.op != "Transpose" or list(node.attrs.get("perm", [])) != [0, 2, 1, 3]:
            return None
        split_out = node.inputs[0]
    split = split_out.inputs[0] if len(split_out.inputs) == 1 else None
    if split is None or split.op != "Reshape":
        return None
    x = split.inputs[0]
    if not (x.shape and split_out.shape and len(x.shape) == 3 and len(split_out.shape) == 4):
        return None
    hidden, d = x.shape[2], split_out.shape[3]
    if not (isinstance(hidden, int) and isinstance(d, int) and hidden == heads * d):
        return None
    same = all(a == b and a not in (None, "") for a, b in zip(split_out.shape[:2], x.shape[:2]))
    return x if same else None


class _Projection(NamedTuple):
    """``out = x @ weight [+ bias]``: a head split's source read back to its projection."""

    x: gs.Tensor
    weight: gs.Constant  # [in, out]; its values are read only when three are packed into one
    bias: np.ndarray | None  # [out]
    unbiased: gs.Tensor  # x @ weight, the bias Add's other operand (``out`` itself without a bias)


def _projection(t: gs.Tensor, graph_outputs: set[str]) -> _Projection | None:
    """``t`` as MatMul(x, W) [+ b] with W a constant [in, out] and b a constant [out], every tensor on the way
    read only by the next node (so nothing else needs the unpacked projection)."""
    if len(t.outputs) != 1 or t.name in graph_outputs:
        return None
    node, bias = producer(t), None
    unbiased = t
    if node is not None and node.op == "Add":
        consts = [const_value(i) for i in node.inputs]
        if len(node.inputs) != 2 or sum(c is not None for c in consts) != 1:
            return None
        which = 0 if consts[0] is not None else 1
        bias, t = consts[which], node.inputs[1 - which]
        unbiased = t
        if len(t.outputs) != 1 or t.name in graph_outputs:
            return None
        node = producer(t)
    if node is None or node.op != "MatMul":
        return None
    weight, x = node.inputs[1], node.inputs[0]
    if not isinstance(weight, gs.Constant) or len(weight.shape) != 2 or x.shape is None or len(x.shape) != 3:
        return None
    if bias is not None and bias.reshape(-1).shape != (weight.shape[1],):
        return None
    return _Projection(x, weight, None if bias is None else bias.reshape(-1), unbiased)


def _length_source(t3: gs.Tensor, graph_outputs: set[str]) -> gs.Tensor:
    """A tensor with the dims 0 and 1 of the [B,S,H*D] ``t3``: the input of its projection where it is one (a
    Shape read of ``t3`` itself would keep the bias Add that MultiHeadAttention can take in), else ``t3``."""
    proj = _projection(t3, graph_outputs)
    return proj.x if proj is not None else t3


def _packed_projection(q3: gs.Tensor, k3: gs.Tensor, v3: gs.Tensor, graph_outputs: set[str],
                       names: NameGen) -> tuple[_Projection, list[int]] | None:
    """One projection of x to [Q | K | V] and the three widths: three projections of the same x, or one
    projection split three ways along the last axis (GPT-2's c_attn), else None."""
    parts = [_projection(t, graph_outputs) for t in (q3, k3, v3)]
    if all(parts) and all(p.x is parts[0].x and p.weight.dtype == parts[0].weight.dtype for p in parts):
        widths = [p.weight.shape[1] for p in parts]
        if any(p.bias is not None for p in parts):
            biases = [p.bias if p.bias is not None else np.zeros(w, p.weight.dtype) for p, w in zip(parts, widths)]
            bias = np.concatenate(biases).astype(parts[0].weight.dtype)
        else:
            bias = None
        packed = np.concatenate([p.weight.values for p in parts], axis=1)
        return _Projection(parts[0].x, gs.Constant(names("_qkv_weight"), packed), bias, q3), widths
    split = producer(q3)
    if split is None or split.op != "Split" or list(split.outputs) != [q3, k3, v3]:
        return None
    rank = len(split.inputs[0].shape) if split.inputs[0].shape is not None else None
    if rank is None or int(split.attrs.get("axis", 0)) not in (-1, rank - 1):
        return None
    whole = _projection(split.inputs[0], graph_outputs)
    if whole is None:
        return None
    sizes = split.attrs.get("split")
    if sizes is None and len(split.inputs) > 1 and split.inputs[1].name:
        sizes = const_value(split.inputs[1])
    if sizes is None:
        if whole.weight.shape[1] % 3:
            return None
        sizes = [whole.weight.shape[1] // 3] * 3
    sizes = [int(v) for v in np.reshape(sizes, -1)]
    return (whole, sizes) if sum(sizes) == whole.weight.shape[1] and len(sizes) == 3 else None


def _ort_attention(q, k, v, mask_t, mask_kind, causal, scale, heads, out, names, graph_outputs,
                   packed: bool, found: tuple[_Projection, list[int]] | None) -> list[gs.Node]:
    """com.microsoft.Attention on the projections' input where Q, K and V are projections of one x (the packed
    [in, 3*hidden] GEMM onnxruntime's fastest kernels start from), else com.microsoft.MultiHeadAttention on Q as
    [B,S,H*D] (K/V [B,S,H*D] where the head split can be undone, else [B,H,S,D]), the projection biases folded
    into its ``bias`` input when all three have one. Returns [B,S,H*Dv] reshaped and transposed back to
    [B,H,S,Dv]."""
    nodes = []

    def node(op, ins, attrs=None, dtype=None, domain=None, shape=None):
        t = gs.Variable(names("_t"), dtype=dtype if dtype is not None else q.dtype, shape=shape)
        nodes.append(gs.Node(op, name=names(), attrs=attrs or {}, inputs=ins, outputs=[t], domain=domain))
        return t

    bias_in = None
    if mask_kind == 1:
        bias_in = mask_t
    elif mask_kind == 2:
        zero, low = (gs.Constant(names("_c"), np.array(x, np.float32)) for x in (0.0, np.finfo(np.float32).min))
        bias_in = node("Where", [mask_t, zero, low])
    attrs = {"num_heads": heads, "scale": scale, **({"unidirectional": 1} if causal else {})}
    q3 = _bsnh_source(q, heads, "bhsd")
    if found is not None:
        proj, widths = found
        b_s = proj.x.shape[:2]
        if len(set(widths)) > 1:
            attrs["qkv_hidden_sizes"] = widths
        bias = proj.bias if proj.bias is not None else np.zeros(proj.weight.shape[1], proj.weight.dtype)
        ins = [proj.x, proj.weight, gs.Constant(names("_qkv_bias"), bias)]
        ins += [gs.Variable.empty(), gs.Variable.empty(), bias_in] if bias_in is not None else []
        y3 = node("Attention", ins, attrs, domain=MS_DOMAIN, shape=[*b_s, widths[2]])
    else:
        if q3 is None:
            q3 = node("Reshape", [node("Transpose", [q], {"perm": [0, 2, 1, 3]}),
                                  gs.Constant(names("_s"), np.array([0, 0, -1], np.int64))])
        parts = [_projection(t, graph_outputs) for t in (q3, k, v)] if packed else [None]
        ins = [q3, k, v]
        if all(p is not None and p.bias is not None for p in parts):  # bias Adds folded into MHA's bias input
            ins = [p.unbiased for p in parts]
            ins.append(gs.Constant(names("_qkv_bias"), np.concatenate([p.bias for p in parts]).astype(parts[0].bias.dtype)))
        elif bias_in is not None:
            ins.append(gs.Variable.empty())
        if bias_in is not None:
            ins += [gs.Variable.empty(), bias_in]
        shape = [*q3.shape[:2], None] if q3.shape is not None and len(q3.shape) == 3 else None
        y3 = node("MultiHeadAttention", ins, attrs, domain=MS_DOMAIN, shape=shape)
    y4 = node("Reshape", [y3, gs.Constant(names("_s"), np.array([0, 0, heads, -1], np.int64))],
              shape=[*y3.shape[:2], heads, None] if y3.shape is not None else None)
    nodes.append(gs.Node("Transpose", name=names(), attrs={"perm": [0, 2, 1, 3]}, inputs=[y4], outputs=[out]))
    return nodes
