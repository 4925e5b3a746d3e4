"""Tiny decomposed-normalization models for the norm fusion tests (hidden=8, seq=4, batch=2)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.builders import const, make_model, tensor

H, S, B = 8, 4, 2
_rng = np.random.default_rng(7)
GAMMA = _rng.uniform(0.5, 1.5, H).astype(np.float32)
BETA = _rng.uniform(-0.5, 0.5, H).astype(np.float32)


class _Nodes:
    """Collects nodes and initializers; ``op`` returns the output name."""

    def __init__(self, opset: int) -> None:
        self.opset, self.nodes, self.inits, self.n = opset, [], [], 0

    def c(self, value, dtype=np.float32) -> str:
        name = f"c{len(self.inits)}"
        self.inits.append(const(name, np.asarray(value, dtype=dtype)))
        return name

    def op(self, op: str, *inputs: str, out: str | None = None, **attrs) -> str:
        self.n += 1
        out = out or f"t{self.n}"
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=f"{op.lower()}_{self.n}", **attrs))
        return out

    def mean(self, x: str, axes=(-1,), keepdims: int = 1) -> str:
        if self.opset >= 18:
            return self.op("ReduceMean", x, self.c(list(axes), np.int64), keepdims=keepdims)
        return self.op("ReduceMean", x, axes=list(axes), keepdims=keepdims)

    def rsqrt_norm(self, num: str, var: str, form: str, eps, one: float = 1.0) -> str:
        s = self.op("Sqrt", self.op("Add", var, self.c(eps)))
        if form == "div":
            return self.op("Div", num, s)
        kind, order = form.split("-")
        inv = self.op("Reciprocal", s) if kind == "recip" else self.op("Div", self.c(one), s)
        return self.op("Mul", *((num, inv) if order == "mul" else (inv, num)))

    def affine(self, t: str, affine: str, gamma=GAMMA, beta=BETA, out: str = "y") -> str:
        parts = affine.split("-") if affine else []
        for i, part in enumerate(parts):
            w = self.c(gamma if part[0] == "g" else beta, np.asarray(gamma).dtype)
            op = "Mul" if part[0] == "g" else "Add"
            t = self.op(op, *((w, t) if part.endswith("r") else (t, w)), out=out if i == len(parts) - 1 else None)
        if not parts:
            t = self.op("Identity", t, out=out)
        return t


def layernorm_model(square: str = "pow", form: str = "div", affine: str = "g-b", *, opset: int = 17, eps=1e-5,
                    axes=(-1,), keepdims: int = 1, exponent: float = 2.0, gamma=GAMMA, one: float = 1.0,
                    fp16_island: bool = False, extra_output: bool = False) -> onnx.ModelProto:
    """y = LayerNorm(x) spelled out as exporters do; ``fp16_island`` wraps the core in Cast fp32 ... Cast fp16."""
    b = _Nodes(opset)
    dtype = TensorProto.FLOAT16 if fp16_island else TensorProto.FLOAT
    x = b.op("Cast", "x", to=TensorProto.FLOAT) if fp16_island else "x"
    d = b.op("Sub", x, b.mean(x, axes, keepdims))
    sq = b.op("Pow", d, b.c(exponent)) if square == "pow" else b.op("Mul", d, d)
    t = b.rsqrt_norm(d, b.mean(sq, axes, keepdims), form, eps, one)
    if fp16_island:
        t = b.op("Cast", t, to=TensorProto.FLOAT16)
    wdt = np.float16 if fp16_island else np.float32
    b.affine(t, affine, np.asarray(gamma).astype(wdt), BETA.astype(wdt))
    outputs = [tensor("y", [B, S, H], dtype)] + ([tensor(d, [B, S, H])] if extra_output else [])
    return make_model(b.nodes, [tensor("x", [B, S, H], dtype)], outputs, b.inits, opset=opset)


def tf_layernorm_model(mean_op: str = "GlobalAveragePool", scaled: bool = True, eps=1e-3) -> onnx.ModelProto:
    """tf2onnx's Keras LayerNormalization: x*r + (beta - mean*r), r = rsqrt(var + eps) [* gamma]."""
    b = _Nodes(17)
    red = (lambda t: b.op("GlobalAveragePool", t)) if mean_op == "GlobalAveragePool" else (lambda t: b.mean(t, (2,)))
    mean = red("x")
    d = b.op("Sub", "x", mean)
    r = b.op("Reciprocal", b.op("Sqrt", b.op("Add", red(b.op("Mul", d, d)), b.c(eps))))
    if scaled:
        r = b.op("Mul", r, b.c(GAMMA))
    b.op("Add", b.op("Mul", "x", r), b.op("Sub", b.c(BETA), b.op("Mul", mean, r)), out="y")
    return make_model(b.nodes, [tensor("x", [B, S, H])], [tensor("y", [B, S, H])], b.inits)


def rmsnorm_model(square: str = "pow", form: str = "div1-mul", affine: str = "gr", *, opset: int = 17, eps=1e-6,
                  axes=(-1,), exponent: float = 2.0, gamma=GAMMA, fp16_island: bool = False, residual: bool = False,
                  mean_centred: bool = False) -> onnx.ModelProto:
    """Llama-style RMSNorm; ``fp16_island`` is LlamaRMSNorm's upcast, ``residual`` reuses the cast input."""
    b = _Nodes(opset)
    dtype = TensorProto.FLOAT16 if fp16_island else TensorProto.FLOAT
    x = b.op("Cast", "x", to=TensorProto.FLOAT) if fp16_island else "x"
    if mean_centred:
        x = b.op("Sub", x, b.mean(x))
    sq = b.op("Pow", x, b.c(exponent)) if square == "pow" else b.op("Mul", x, x)
    t = b.rsqrt_norm(x, b.mean(sq, axes), form, eps)
    if fp16_island:
        t = b.op("Cast", t, to=TensorProto.FLOAT16)
    b.affine(t, affine, np.asarray(gamma).astype(np.float16 if fp16_island else np.float32))
    outputs = [tensor("y", [B, S, H], dtype)]
    if residual:
        b.op("Identity", x, out="res")
        outputs.append(tensor("res", [B, S, H]))
    return make_model(b.nodes, [tensor("x", [B, S, H], dtype)], outputs, b.inits, opset=opset)


C, G, HW = 8, 4, 3
GN_GAMMA = _rng.uniform(0.5, 1.5, (C, 1, 1)).astype(np.float32)
GN_BETA = _rng.uniform(-0.5, 0.5, (C, 1, 1)).astype(np.float32)


def groupnorm_model(core: str = "instnorm", affine: str = "g-b", *, silu: bool = False, opset: int = 17,
                    groups: int = G, in_scale: float = 1.0, gamma=GN_GAMMA, shape_back: str = "shape") -> onnx.ModelProto:
    """PyTorch GroupNorm export: Reshape [0, G, -1] -> InstanceNormalization | ReduceMean chain -> Reshape back -> affine."""
    b = _Nodes(opset)
    r = b.op("Reshape", "x", b.c([0, groups, -1], np.int64))
    if core == "instnorm":
        n = b.op("InstanceNormalization", r, b.c(np.full(groups, in_scale)), b.c(np.zeros(groups)), epsilon=1e-5)
    else:
        d = b.op("Sub", r, b.mean(r))
        sq = b.op("Pow", d, b.c(2.0)) if core == "reduce-pow" else b.op("Mul", d, d)
        n = b.rsqrt_norm(d, b.mean(sq), "div", 1e-5)
    back = b.op("Shape", "x") if shape_back == "shape" else b.c([B, C, HW, HW + 1] if shape_back == "wrong" else [B, C, HW, HW], np.int64)
    t = b.op("Reshape", n, back)
    t = b.affine(t, affine, gamma, GN_BETA, out="y" if not silu else "gn")
    if silu:
        b.op("Mul", t, b.op("Sigmoid", t), out="y")
    return make_model(b.nodes, [tensor("x", [B, C, HW, HW])], [tensor("y", [B, C, HW, HW])], b.inits, opset=opset)


def skip_layernorm_model(bias: str = "bias", *, eps: float = 1e-12, skip_shape=(B, S, H), opset: int = 17,
                         reuse_sum: bool = False) -> onnx.ModelProto:
    """BERT post-LN: LayerNormalization(Add(Add(h, bias), skip)); ``bias=''`` drops the bias Add."""
    b = _Nodes(opset)
    h = b.op("Add", b.c(_rng.uniform(-1, 1, H)), "h") if bias else "h"
    s = b.op("Add", h, "skip", out="sum")
    b.op("LayerNormalization", s, b.c(GAMMA), b.c(BETA), out="y", axis=-1, epsilon=eps)
    outputs = [tensor("y", [B, S, H])] + ([tensor("sum", [B, S, H])] if reuse_sum else [])
    return make_model(b.nodes, [tensor("h", [B, S, H]), tensor("skip", list(skip_shape))], outputs, b.inits, opset=opset)


def pre_ln_model(*, sum_output: bool = False, bias_reused: bool = False, opset: int = 17) -> onnx.ModelProto:
    """Two pre-LN blocks (ViT, GPT-2): ``s1 = x + (LN0(x) @ W1 + b1); s2 = s1 + LN1(s1) @ W2; y = LN2(s2)``.

    ``s1`` feeds LN1 and the second residual Add; ``s2`` feeds only the final LN (post-LN form), and is
    also a graph output with ``sum_output``. ``bias_reused`` makes ``LN0(x) @ W1 + b1`` a graph output too.
    Shapes are inferred, as ``infer-shapes`` would.
    """
    rng = np.random.default_rng(11)
    b = _Nodes(opset)

    def ln(t: str, out: str | None = None) -> str:
        g, be = rng.uniform(0.5, 1.5, H), rng.uniform(-0.5, 0.5, H)
        return b.op("LayerNormalization", t, b.c(g), b.c(be), out=out, axis=-1, epsilon=1e-5)

    h1 = b.op("MatMul", ln("x"), b.c(rng.normal(0, 0.5, (H, H))))
    hb = b.op("Add", h1, b.c(rng.uniform(-1, 1, H)), out="hb")
    s1 = b.op("Add", hb, "x", out="s1")
    s2 = b.op("Add", s1, b.op("MatMul", ln(s1), b.c(rng.normal(0, 0.5, (H, H)))), out="s2")
    ln(s2, out="y")
    outputs = [tensor("y", [B, S, H])] + ([tensor("s2", [B, S, H])] if sum_output else []) \
        + ([tensor("hb", [B, S, H])] if bias_reused else [])
    model = make_model(b.nodes, [tensor("x", [B, S, H])], outputs, b.inits, opset=opset)
    return onnx.shape_inference.infer_shapes(model)
