"""Tiny models built in code for pass tests (hidden=8, seq=4 unless stated)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def make_model(nodes, inputs, outputs, initializers=(), opset: int = OPSET, name: str = "test") -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), name, list(inputs), list(outputs), list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def tensor(name: str, shape: Sequence[int | str] | None, dtype=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def shape_arith_model() -> onnx.ModelProto:
    """x[2,8] -> Reshape(x, Concat(Shape(x)[0], -1)) -> Add(c1 + c2): shape arithmetic and a constant sum."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["d0"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["d0", "axes0"], ["d0u"], name="unsq"),
        helper.make_node("Concat", ["d0u", "minus1"], ["newshape"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "newshape"], ["r"], name="reshape"),
        helper.make_node("Add", ["c1", "c2"], ["c"], name="add_consts"),
        helper.make_node("Add", ["r", "c"], ["y"], name="add"),
    ]
    inits = [const("zero", np.array(0, np.int64)), const("axes0", np.array([0], np.int64)),
             const("minus1", np.array([-1], np.int64)), const("c1", np.ones(8, np.float32)),
             const("c2", np.full(8, 2.0, np.float32))]
    return make_model(nodes, [tensor("x", [2, 8])], [tensor("y", [2, 8])], inits)


def dead_branch_model() -> onnx.ModelProto:
    """y = Relu(x); a dead Sigmoid branch, an unused initializer and an unused input."""
    nodes = [
        helper.make_node("Relu", ["x"], ["y"], name="relu"),
        helper.make_node("Sigmoid", ["x"], ["dead"], name="sigmoid"),
        helper.make_node("Mul", ["dead", "w"], ["dead2"], name="mul"),
    ]
    inits = [const("w", np.ones(4, np.float32)), const("unused", np.zeros(3, np.float32))]
    return make_model(nodes, [tensor("x", [2, 4]), tensor("extra", [1])], [tensor("y", [2, 4])], inits)
