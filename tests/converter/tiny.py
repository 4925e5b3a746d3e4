"""Tiny models for the converter tests, built in code (seeded weights)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from surgery.plugins import PLUGIN_DOMAIN


def _model(nodes, inputs, outputs, inits=(), opsets=(("", 17),), ir: int = 8) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "tiny", list(inputs), list(outputs), list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets], producer_name="tests")
    model.ir_version = ir
    onnx.checker.check_model(model)
    return model


def _vi(name: str, shape, dtype=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def mlp(seed: int = 0) -> onnx.ModelProto:
    """x[2,8] -> MatMul -> Add -> Relu -> MatMul -> y[2,4]."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Add", ["h", "b1"], ["hb"], name="add1"),
             helper.make_node("Relu", ["hb"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")]
    return _model(nodes, [_vi("x", [2, 8])], [_vi("y", [2, 4])], inits)


def dynamic_mlp() -> onnx.ModelProto:
    m = mlp()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    return m


def layernorm_block(seed: int = 0) -> onnx.ModelProto:
    """MatMul -> decomposed LayerNorm -> Softmax, with a -1e9 mask add (fp32 islands + large constant)."""
    rng = np.random.default_rng(seed)
    c = lambda v, n: numpy_helper.from_array(np.asarray(v, dtype=np.float32), n)  # noqa: E731
    inits = [c(rng.standard_normal((8, 8)) * 0.5, "w"), c([2.0], "two"), c([1e-5], "eps"),
             c(rng.standard_normal(8), "gamma"), c(np.where(np.arange(8) < 6, 0.0, -1e9), "mask"),
             numpy_helper.from_array(np.array([-1], np.int64), "axes")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("ReduceMean", ["h", "axes"], ["mu"], name="mean1"),
             helper.make_node("Sub", ["h", "mu"], ["d"], name="sub"),
             helper.make_node("Pow", ["d", "two"], ["d2"], name="pow"),
             helper.make_node("ReduceMean", ["d2", "axes"], ["var"], name="mean2"),
             helper.make_node("Add", ["var", "eps"], ["ve"], name="add_eps"),
             helper.make_node("Sqrt", ["ve"], ["sd"], name="sqrt"),
             helper.make_node("Div", ["d", "sd"], ["n"], name="div"),
             helper.make_node("Mul", ["n", "gamma"], ["g"], name="scale"),
             helper.make_node("Add", ["g", "mask"], ["gm"], name="add_mask"),
             helper.make_node("Softmax", ["gm"], ["y"], name="softmax", axis=-1)]
    return _model(nodes, [_vi("x", [2, 4, 8])], [_vi("y", [2, 4, 8])], inits, opsets=(("", 18),))


def with_nonzero() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu1"),
             helper.make_node("NonZero", ["a"], ["idx"], name="nonzero"),
             helper.make_node("Cast", ["idx"], ["f"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Relu", ["f"], ["y"], name="relu2")]
    return _model(nodes, [_vi("x", [2, 4])], [_vi("y", [2, "n"])])


def with_unknown_op() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu1"),
             helper.make_node("FrobnicateOp", ["a"], ["b"], name="frob", domain="my.ops"),
             helper.make_node("Relu", ["b"], ["y"], name="relu2")]
    return _model(nodes, [_vi("x", [2, 4])], [_vi("y", [2, 4])], opsets=(("", 17), ("my.ops", 1)))


def with_foreign_layernorm() -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.ones(4, np.float32), "s"), numpy_helper.from_array(np.zeros(4, np.float32), "b")]
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("LayerNormalization", ["a", "s", "b"], ["y"], name="ms_ln", domain="com.microsoft")]
    return _model(nodes, [_vi("x", [2, 4])], [_vi("y", [2, 4])], inits, opsets=(("", 17), ("com.microsoft", 1)))


def with_plugin(op: str = "MissingPlugin_TRT", version: str = "1", **fields) -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node(op, ["a"], ["y"], name="plugin", domain=PLUGIN_DOMAIN, plugin_version=version,
                              plugin_namespace="", **fields)]
    return _model(nodes, [_vi("x", [2, 4])], [_vi("y", [2, 4])], opsets=(("", 17), (PLUGIN_DOMAIN, 1)))


def attention_fp32(head: int = 8) -> onnx.ModelProto:
    """A float32 ONNX Attention (opset 23) node with separate q, k, v: parses, but has no fused kernel."""
    ins = [_vi(n, [1, 2, 4, head]) for n in ("q", "k", "v")]
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], name="attention")
    return _model([node], ins, [_vi("y", [1, 2, 4, head])], opsets=(("", 23),), ir=10)


def save(model: onnx.ModelProto, folder, name: str) -> str:
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    return str(path)


TINY = {"mlp": mlp, "dynamic_mlp": dynamic_mlp, "layernorm_block": layernorm_block, "with_nonzero": with_nonzero,
        "with_unknown_op": with_unknown_op, "with_foreign_layernorm": with_foreign_layernorm, "attention_fp32": attention_fp32}
