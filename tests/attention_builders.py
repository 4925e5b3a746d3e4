"""Tiny GELU and attention models for fusion tests (hidden 8, seq 4, 2 heads of 4)."""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.builders import const, make_model, tensor

HIDDEN, SEQ, HEADS = 8, 4, 2
HEAD = HIDDEN // HEADS
B = 2


def gelu_model(form: str = "erf-div", outer: str = "x-first", const_first: bool = False, bias: bool = False,
               consts: dict[str, float] | None = None, extra_output: str = "", opset: int = 17):
    """y = GELU(x [+ bias]) in one of the decomposed forms; ``consts`` overrides the formula constants.

    Args:
        form: ``erf-div``, ``erf-mul``, ``tanh-pow``, ``tanh-mul`` or ``quick``.
        outer: ``x-first`` ((x*(1+f))*0.5), ``half-first`` ((0.5x)*(1+f)) or ``half-inner`` (x*((1+f)*0.5)).
        const_first: put constants first in commutative ops (tf2onnx order).
        extra_output: name of an internal tensor to also expose as a graph output.
    """
    c = {"k": math.sqrt(2) if form == "erf-div" else 1 / math.sqrt(2), "one": 1.0, "half": 0.5, "three": 3.0,
         "kappa": 0.044715, "beta": math.sqrt(2 / math.pi), "alpha": 1.702, **(consts or {})}
    nodes, n = [], [0]

    def op(kind, a, b=None, commutative=True):
        n[0] += 1
        out = f"t{n[0]}"
        ins = [a] if b is None else ([b, a] if const_first and commutative and b.startswith("c_") else [a, b])
        nodes.append(helper.make_node(kind, ins, [out], name=f"{kind.lower()}{n[0]}"))
        return out

    x = "x"
    if bias:
        x = op("Add", "x", "c_bias")
    if form == "quick":
        out = op("Mul", x, op("Sigmoid", op("Mul", x, "c_alpha")))
    else:
        if form.startswith("erf"):
            f = op("Erf", op("Div" if form == "erf-div" else "Mul", x, "c_k", commutative=False))
        else:
            cube = op("Pow", x, "c_three", commutative=False) if form == "tanh-pow" else op("Mul", op("Mul", x, x), x)
            f = op("Tanh", op("Mul", op("Add", x, op("Mul", cube, "c_kappa")), "c_beta"))
        one = op("Add", f, "c_one")
        if outer == "x-first":
            out = op("Mul", op("Mul", x, one), "c_half")
        elif outer == "half-first":
            out = op("Mul", op("Mul", x, "c_half"), one)
        else:
            out = op("Mul", x, op("Mul", one, "c_half"))
    nodes.append(helper.make_node("Identity", [out], ["y"], name="out"))
    used = {i for node in nodes for i in node.input if i.startswith("c_")}
    inits = [const(name, np.array(c[name[2:]], np.float32)) for name in sorted(used - {"c_bias"})]
    if bias:
        inits.append(const("c_bias", np.linspace(-0.5, 0.5, HIDDEN).astype(np.float32)))
    outputs = [tensor("y", [B, SEQ, HIDDEN])] + ([tensor(extra_output, [B, SEQ, HIDDEN])] if extra_output else [])
    return make_model(nodes, [tensor("x", [B, SEQ, HIDDEN])], outputs, inits, opset=opset)


def attention_model(scale: str = "mul", mask: str = "add", k_layout: str = "bshd", casts: int = 0, gqa: bool = False,
                    cross: bool = False, scale_value: float | None = None, fill: float = -1e9, mask_const: str = "",
                    opset: int = 17, extra_output: str = "", bias: bool = False, fused_qkv: bool = False):
    """Projections -> head split -> SDPA core -> head merge, the way TorchScript exports BERT/GPT-2.

    Args:
        scale: ``none``, ``mul``/``div`` (scores), ``qmul``/``qdiv`` (Q before the MatMul), ``both`` (√ on Q and K^T).
        mask: ``none``, ``add`` (additive [B,1,1,S] input), ``where`` (bool [B,1,S,S] input, Where(m, s, fill)),
            ``where-inv`` (Where(m, fill, s)), ``causal`` (a constant causal additive mask).
        k_layout: ``bshd`` (K^T by Transpose 0,2,3,1 of the head split) or ``bhsd`` (Transpose 0,1,3,2 of K).
        gqa: K/V have one head, repeated to two by Unsqueeze/Expand/Reshape.
        cross: K/V come from a second input ``ctx`` of length 6.
        bias: the Q/K/V projections add constant biases (MatMul -> Add).
        fused_qkv: one [E, 3E] projection split three ways (GPT-2's c_attn) instead of three MatMuls.
    """
    rng = np.random.default_rng(7)
    kv_heads = 1 if gqa else HEADS
    skv = 6 if cross else SEQ
    d = HEAD
    sval = scale_value if scale_value is not None else 1 / math.sqrt(d)
    inits = [const("wq", rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32) * 0.5),
             const("wk", rng.standard_normal((HIDDEN, kv_heads * d)).astype(np.float32) * 0.5),
             const("wv", rng.standard_normal((HIDDEN, kv_heads * d)).astype(np.float32) * 0.5),
             const("split_q", np.array([0, 0, HEADS, d], np.int64)), const("split_kv", np.array([0, 0, kv_heads, d], np.int64)),
             const("merge", np.array([0, 0, HIDDEN], np.int64))]
    src = "ctx" if cross else "x"
    if fused_qkv:
        w = np.concatenate([onnx.numpy_helper.to_array(i) for i in inits[:3]], axis=1)
        inits[:3] = [const("wqkv", w)]
        nodes = [helper.make_node("MatMul", ["x", "wqkv"], ["qkv0"], name="proj_qkv")]
        qkv = "qkv0"
        if bias:
            inits.append(const("bqkv", rng.standard_normal(w.shape[1]).astype(np.float32)))
            nodes.append(helper.make_node("Add", [qkv, "bqkv"], ["qkv"], name="bias_qkv"))
            qkv = "qkv"
        inits.append(const("split3", np.array([HIDDEN, kv_heads * d, kv_heads * d], np.int64)))
        nodes.append(helper.make_node("Split", [qkv, "split3"], ["q2", "k2", "v2"], name="split_qkv", axis=2))
    else:
        nodes = [helper.make_node("MatMul", ["x", "wq"], ["q2" if not bias else "q1"], name="proj_q"),
                 helper.make_node("MatMul", [src, "wk"], ["k2" if not bias else "k1"], name="proj_k"),
                 helper.make_node("MatMul", [src, "wv"], ["v2" if not bias else "v1"], name="proj_v")]
        if bias:
            for t, width in (("q", HIDDEN), ("k", kv_heads * d), ("v", kv_heads * d)):
                inits.append(const(f"b{t}", rng.standard_normal(width).astype(np.float32)))
                nodes.append(helper.make_node("Add", [f"b{t}", f"{t}1"], [f"{t}2"], name=f"bias_{t}"))
    nodes += [helper.make_node("Reshape", ["q2", "split_q"], ["q3"], name="split_q"),
             helper.make_node("Reshape", ["k2", "split_kv"], ["k3"], name="split_k"),
             helper.make_node("Reshape", ["v2", "split_kv"], ["v3"], name="split_v"),
             helper.make_node("Transpose", ["q3"], ["q"], name="q_heads", perm=[0, 2, 1, 3]),
             helper.make_node("Transpose", ["v3"], ["v"], name="v_heads", perm=[0, 2, 1, 3])]
    if k_layout == "bshd" and not gqa:
        nodes.append(helper.make_node("Transpose", ["k3"], ["kt"], name="k_t", perm=[0, 2, 3, 1]))
    else:
        nodes.append(helper.make_node("Transpose", ["k3"], ["k"], name="k_heads", perm=[0, 2, 1, 3]))
        if gqa:
            inits += [const("ax2", np.array([2], np.int64)), const("rep5", np.array([B, 1, HEADS, skv, d], np.int64)),
                      const("rep4", np.array([B, HEADS, skv, d], np.int64))]
            for t in ("k", "v"):
                nodes += [helper.make_node("Unsqueeze", [t, "ax2"], [f"{t}u"], name=f"{t}_unsq"),
                          helper.make_node("Expand", [f"{t}u", "rep5"], [f"{t}e"], name=f"{t}_expand"),
                          helper.make_node("Reshape", [f"{t}e", "rep4"], [f"{t}r"], name=f"{t}_rep")]
            nodes.append(helper.make_node("Transpose", ["kr"], ["kt"], name="k_t", perm=[0, 1, 3, 2]))
        else:
            nodes.append(helper.make_node("Transpose", ["k"], ["kt"], name="k_t", perm=[0, 1, 3, 2]))
    qin, ktin = "q", "kt"
    if scale in ("qmul", "qdiv", "both"):
        c = math.sqrt(sval) if scale == "both" else (sval if scale == "qmul" else 1 / sval)
        inits.append(const("c_qs", np.array(c, np.float32)))
        nodes.append(helper.make_node("Div" if scale == "qdiv" else "Mul", ["q", "c_qs"], ["qs"], name="q_scale"))
        qin = "qs"
    if scale == "both":
        inits.append(const("c_ks", np.array(math.sqrt(sval), np.float32)))
        nodes.append(helper.make_node("Mul", ["kt", "c_ks"], ["kts"], name="k_scale"))
        ktin = "kts"
    nodes.append(helper.make_node("MatMul", [qin, ktin], ["qk"], name="qk"))
    s = "qk"
    if scale in ("mul", "div"):
        inits.append(const("c_scale", np.array(sval if scale == "mul" else 1 / sval, np.float32)))
        nodes.append(helper.make_node("Mul" if scale == "mul" else "Div", ["qk", "c_scale"], ["scaled"], name="scale"))
        s = "scaled"
    inputs = [tensor("x", [B, SEQ, HIDDEN])] + ([tensor("ctx", [B, skv, HIDDEN])] if cross else [])
    if mask == "add":
        inputs.append(tensor("mask", [B, 1, 1, skv]))
        nodes.append(helper.make_node("Add", [s, "mask"], ["masked"], name="mask_add"))
        s = "masked"
    elif mask == "causal":
        causal = np.triu(np.full((SEQ, SEQ), -1e9, np.float32), 1)[None, None]
        inits.append(const("causal", causal))
        nodes.append(helper.make_node("Add", [s, "causal"], ["masked"], name="mask_add"))
        s = "masked"
    elif mask.startswith("where"):
        inputs.append(tensor("mask", [B, 1, SEQ, skv], TensorProto.BOOL))
        inits.append(const("c_fill", np.array(fill, np.float32)))
        ins = ["mask", s, "c_fill"] if mask == "where" else ["mask", "c_fill", s]
        nodes.append(helper.make_node("Where", ins, ["masked"], name="mask_where"))
        s = "masked"
    nodes.append(helper.make_node("Softmax", [s], ["probs"], name="softmax", axis=-1))
    p = "probs"
    for i in range(casts):
        nodes.append(helper.make_node("Cast", [p], [f"pc{i}"], name=f"cast{i}", to=TensorProto.FLOAT))
        p = f"pc{i}"
    nodes += [helper.make_node("MatMul", [p, "vr" if gqa else "v"], ["ctx4"], name="pv"),
              helper.make_node("Transpose", ["ctx4"], ["ctx3"], name="merge_t", perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ctx3", "merge"], ["y"], name="merge")]
    outputs = [tensor("y", [B, SEQ, HIDDEN])] + ([tensor(extra_output, [B, HEADS, SEQ, skv])] if extra_output else [])
    # shapes and dtypes on every tensor, as the infer-shapes pass leaves a real export
    return onnx.shape_inference.infer_shapes(make_model(nodes, inputs, outputs, inits, opset=opset))


def attention_feeds(model, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded feeds; boolean masks keep at least the first key of each row so no row is fully masked."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if vi.type.tensor_type.elem_type == TensorProto.BOOL:
            m = rng.integers(0, 2, size=shape).astype(bool)
            m[..., 0], m[..., -1] = True, False  # each row keeps a key under Where and under Where-inverted
            feeds[vi.name] = m
        elif vi.name == "mask":
            feeds[vi.name] = np.where(rng.integers(0, 2, size=shape) > 0, 0.0, -1e9).astype(np.float32)
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds
