"""Small CNN blocks built in code for the fold passes: a layer (Conv, ConvTranspose or Gemm) followed by
a chain of per-channel ops (BatchNormalization, Mul, Add), and 2-D MatMul + Add.

Every layer has 6 input and 12 output channels: Conv on ``x[1, 6, 5, 5]`` (3x3, pad 1), ConvTranspose
on the same (3x3, stride 2), Gemm on ``x[3, 6]`` (alpha 0.5, beta 2). Weights are seeded random.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from tests.builders import const, make_model, tensor

C_IN, C_OUT = 6, 12
X_SHAPE = {"Conv": [1, C_IN, 5, 5], "ConvTranspose": [1, C_IN, 5, 5], "Gemm": [3, C_IN]}
Y_SHAPE = {"Conv": [1, C_OUT, 5, 5], "ConvTranspose": [1, C_OUT, 11, 11], "Gemm": [3, C_OUT]}


@dataclass
class Block:
    """Knobs of ``block``; the defaults are a foldable fp32 Conv with a bias."""

    layer: str = "Conv"
    tail: tuple[str, ...] = ("bn",)  # each of "bn", "mul", "add", applied in order
    bias: bool = True
    group: int = 1
    trans_b: int = 0  # Gemm
    gemm_c_shape: tuple[int, ...] = (C_OUT,)
    dtype: type = np.float32
    const_shape: tuple[int, ...] | None = None  # Mul / Add constants; default: per channel for the layer
    const_first: bool = False  # Mul / Add operand order
    bn_attrs: dict = field(default_factory=dict)
    bn_training: bool = False  # training_mode=1, with its running-statistics outputs
    bn_params: dict = field(default_factory=dict)  # name -> values, replacing the random ones
    shared_bn_params: bool = False  # one initializer for all four BatchNormalization parameters
    dynamic: frozenset[str] = frozenset()  # of "w", "b", "scale", "mean": graph inputs instead of initializers
    weight_shape: list | None = None  # shape of a dynamic weight input (default: the real one)
    layer_output_used: bool = False  # a Relu also reads the layer's output
    layer_output_is_graph_output: bool = False
    y_shape: list | None = None  # declared output shape (default: the layer's)
    opset: int = 17
    seed: int = 0


def weight_shape(b: Block) -> tuple[int, ...]:
    if b.layer == "Conv":
        return (C_OUT, C_IN // b.group, 3, 3)
    if b.layer == "ConvTranspose":
        return (C_IN, C_OUT // b.group, 3, 3)
    return (C_OUT, C_IN) if b.trans_b else (C_IN, C_OUT)


def per_channel_shape(layer: str) -> tuple[int, ...]:
    return (C_OUT,) if layer == "Gemm" else (C_OUT, 1, 1)


def block(b: Block = Block()) -> onnx.ModelProto:
    rng = np.random.default_rng(b.seed)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(b.dtype))
    inits, inputs = [], [tensor("x", X_SHAPE[b.layer], elem)]

    def value(name: str, values: np.ndarray) -> str:
        values = np.asarray(values, b.dtype)
        if name in b.dynamic:
            shape = b.weight_shape if name == "w" and b.weight_shape is not None else list(values.shape)
            inputs.append(tensor(name, shape, elem))
        else:
            inits.append(const(name, values))
        return name

    layer_in = ["x", value("w", rng.normal(0, 0.5, weight_shape(b)))]
    attrs = {}
    if b.layer == "Gemm":
        attrs = {"alpha": 0.5, "beta": 2.0, "transB": b.trans_b}
        if b.bias:
            layer_in.append(value("b", rng.normal(0, 0.5, b.gemm_c_shape)))
    else:
        attrs = {"group": b.group, "kernel_shape": [3, 3]}
        attrs.update({"pads": [1, 1, 1, 1]} if b.layer == "Conv" else {"strides": [2, 2]})
        if b.bias:
            layer_in.append(value("b", rng.normal(0, 0.5, C_OUT)))
    nodes = [helper.make_node(b.layer, layer_in, ["h0"], name="layer", **attrs)]
    outputs = []
    src = "h0"
    for i, op in enumerate(b.tail):
        out = "y" if i == len(b.tail) - 1 else f"h{i + 1}"
        if op == "bn":
            params = {"scale": rng.uniform(0.5, 1.5, C_OUT), "bias": rng.normal(0, 0.5, C_OUT),
                      "mean": rng.normal(0, 0.5, C_OUT), "var": rng.uniform(0.5, 2.0, C_OUT), **b.bn_params}
            names = [value(f"{k}{i or ''}" if k not in b.dynamic else k, v) for k, v in params.items()]
            if b.shared_bn_params:
                names = [names[0]] * 4  # scale, drawn from [0.5, 1.5], serves as a variance too
            extra = {"training_mode": 1} if b.bn_training else {}
            nodes.append(helper.make_node("BatchNormalization", [src, *names],
                                          [out, "running_mean", "running_var"] if b.bn_training else [out],
                                          name="bn" if not i else f"bn{i}", **{"epsilon": 1e-3, **extra, **b.bn_attrs}))
        else:
            shape = b.const_shape if b.const_shape is not None else per_channel_shape(b.layer)
            c = value(f"{op}_c{i}", rng.uniform(0.5, 1.5, shape) if op == "mul" else rng.normal(0, 0.5, shape))
            ins = [c, src] if b.const_first else [src, c]
            nodes.append(helper.make_node("Mul" if op == "mul" else "Add", ins, [out], name=op if not i else f"{op}{i}"))
        src = out
    outputs.append(tensor("y", b.y_shape or Y_SHAPE[b.layer], elem))
    if b.layer_output_used:
        nodes.append(helper.make_node("Relu", ["h0"], ["side"], name="side"))
        outputs.append(tensor("side", Y_SHAPE[b.layer], elem))
    if b.layer_output_is_graph_output:
        outputs.append(tensor("h0", Y_SHAPE[b.layer], elem))
    return make_model(nodes, inputs, outputs, inits, opset=b.opset)


def matmul_add(*, a_shape=(3, 4), b_shape=(4, 5), c_shape=(5,), const_first: bool = False, dtype=np.float32,
               dynamic_b: bool = False, a_rank_known: bool = True, add: bool = True, mm_output_used: bool = False,
               then_bn: bool = False) -> onnx.ModelProto:
    """y = Add(MatMul(a, B), c) (or MatMul alone); ``then_bn`` puts a BatchNormalization after it."""
    rng = np.random.default_rng(0)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inputs = [tensor("a" if a_rank_known else "x", list(a_shape), elem)]
    inits = []
    values = rng.normal(0, 0.5, b_shape)
    values = (values * 4).astype(dtype) if np.dtype(dtype).kind == "i" else values.astype(dtype)
    if dynamic_b:
        inputs.append(tensor("B", list(b_shape), elem))
    else:
        inits.append(const("B", values))
    nodes = [helper.make_node("MatMul", ["a", "B"], ["mm" if add else "y"], name="matmul")]
    if not a_rank_known:  # an intermediate without a value_info: its shape is unknown until infer-shapes
        nodes.insert(0, helper.make_node("Relu", ["x"], ["a"], name="relu"))
    if add:
        inits.append(const("c", rng.normal(0, 0.5, c_shape).astype(dtype) if np.dtype(dtype).kind == "f"
                           else np.ones(c_shape, dtype)))
        nodes.append(helper.make_node("Add", ["c", "mm"] if const_first else ["mm", "c"], ["s" if then_bn else "y"],
                                      name="add"))
    if then_bn:
        n = b_shape[-1]
        for name, v in (("scale", rng.uniform(0.5, 1.5, n)), ("bias", rng.normal(0, 0.5, n)),
                        ("mean", rng.normal(0, 0.5, n)), ("var", rng.uniform(0.5, 2, n))):
            inits.append(const(name, v.astype(dtype)))
        nodes.append(helper.make_node("BatchNormalization", ["s", "scale", "bias", "mean", "var"], ["y"], name="bn"))
    mm_rank = len(b_shape) - 1 if len(a_shape) == 1 else max(len(a_shape), len(b_shape))
    outputs = [tensor("y", [None] * (max(mm_rank, len(c_shape)) if add else mm_rank), elem)]  # ranks only
    if mm_output_used:
        nodes.append(helper.make_node("Relu", ["mm"], ["side"], name="side"))
        outputs.append(tensor("side", [None] * mm_rank, elem))
    return make_model(nodes, inputs, outputs, inits)
