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


# --- cleanup passes: eliminate-noops, merge-transposes, collapse-reshapes, cse, specialize-shapes, remove-nodes

INT64_MAX = int(np.iinfo(np.int64).max)


def _finish(nodes, inputs, outputs, initializers=(), *, annotate: bool = True) -> onnx.ModelProto:
    """Build a model whose graph outputs get their inferred types; ``outputs`` are (name, elem type).

    ``annotate`` also keeps the inferred intermediate shapes, as infer-shapes would (the preset runs
    it before these passes).
    """
    outs = [helper.make_tensor_value_info(name, dtype, None) for name, dtype in outputs]
    graph = helper.make_graph(list(nodes), "test", list(inputs), outs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tests")
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    for out, known in zip(model.graph.output, inferred.graph.output):
        out.type.CopyFrom(known.type)
    if annotate:
        model.graph.value_info.extend(inferred.graph.value_info)
    onnx.checker.check_model(model)
    return model


def single_node_model(op: str, extra=(), attrs=None, *, x_shape=(2, 3, 4), const_first: bool = False,
                      where: str = "middle", mask_used: bool = False, annotate: bool = True,
                      y_type: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """One node 'noop' = op(x, p0, p1, ...) with constant extra inputs ``p<i>`` (None: omitted optional input).

    ``where``: "middle" (x → noop → t → Relu → y), "end" (x → Relu → r → noop → y) or "direct"
    (x → noop → y). ``mask_used`` adds a second output 'mask' consumed by a Cast to graph output 'm'.
    ``annotate=False`` leaves intermediate tensors without shapes; ``y_type`` is the element type of y.
    """
    params = [None if v is None else const(f"p{i}", v) for i, v in enumerate(extra)]
    names = ["" if p is None else p.name for p in params]
    src = "r" if where == "end" else "x"
    ins = [names[0], src] + names[1:] if const_first else [src] + names
    out = "t" if where == "middle" else "y"
    nodes = [helper.make_node(op, ins, [out, "mask"] if mask_used else [out], name="noop", **(attrs or {}))]
    if where == "end":
        nodes.insert(0, helper.make_node("Relu", ["x"], ["r"], name="pre"))
    if where == "middle":
        nodes.append(helper.make_node("Relu", ["t"], ["y"], name="relu"))
    outputs = [("y", y_type)]
    if mask_used:
        nodes.append(helper.make_node("Cast", ["mask"], ["m"], name="mask_cast", to=TensorProto.FLOAT))
        outputs.append(("m", TensorProto.FLOAT))
    inits = [p for p in params if p is not None]
    return _finish(nodes, [tensor("x", list(x_shape))], outputs, inits, annotate=annotate)


def transpose_chain_model(perms, *, shared: bool = False, mid_output: bool = False) -> onnx.ModelProto:
    """x[2,3,4] → Relu → Transpose(perms[0]) → t0 → ... → y; a perm of None omits the attribute.

    ``shared`` also feeds t0 to a Sigmoid (graph output 'z'); ``mid_output`` makes t0 a graph output.
    """
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="pre")]
    src = "r"
    for i, perm in enumerate(perms):
        dst = "y" if i == len(perms) - 1 else f"t{i}"
        attrs = {} if perm is None else {"perm": list(perm)}
        nodes.append(helper.make_node("Transpose", [src], [dst], name=f"transpose{i}", **attrs))
        src = dst
    outputs = [("y", TensorProto.FLOAT)]
    if shared:
        nodes.append(helper.make_node("Sigmoid", ["t0"], ["z"], name="side"))
        outputs.append(("z", TensorProto.FLOAT))
    if mid_output:
        outputs.append(("t0", TensorProto.FLOAT))
    return _finish(nodes, [tensor("x", [2, 3, 4])], outputs)


def reshape_chain_model(steps, x_shape=(2, 3, 4), *, runtime_shape: bool = False, shared: bool = False) -> onnx.ModelProto:
    """x → step0 → s0 → step1 → ... → y, where a step is ("Reshape", shape), ("Flatten", axis),
    ("Squeeze", axes|None) or ("Unsqueeze", axes).

    ``runtime_shape`` feeds the last Reshape its shape from graph input 'shape'; ``shared`` also sends
    s0 to a Relu (graph output 'z').
    """
    nodes, inits, inputs = [], [], [tensor("x", list(x_shape))]
    src = "x"
    for i, (op, arg) in enumerate(steps):
        dst = "y" if i == len(steps) - 1 else f"s{i}"
        ins, attrs = [src], {}
        if op == "Flatten":
            attrs["axis"] = arg
        elif op == "Reshape" and runtime_shape and i == len(steps) - 1:
            ins.append("shape")
            inputs.append(tensor("shape", [len(arg)], TensorProto.INT64))
        elif arg is not None:
            inits.append(const(f"arg{i}", np.array(arg, np.int64)))
            ins.append(f"arg{i}")
        nodes.append(helper.make_node(op, ins, [dst], name=f"{op.lower()}{i}", **attrs))
        src = dst
    outputs = [("y", TensorProto.FLOAT)]
    if shared:
        nodes.append(helper.make_node("Relu", ["s0"], ["z"], name="side"))
        outputs.append(("z", TensorProto.FLOAT))
    return _finish(nodes, inputs, outputs, inits)


def cse_model() -> onnx.ModelProto:
    """Two identical branches Relu(x) + c over x[2,4], with c as two separate identical initializers."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a1"], name="relu1"),
        helper.make_node("Relu", ["x"], ["a2"], name="relu2"),
        helper.make_node("Add", ["a1", "c1"], ["b1"], name="add1"),
        helper.make_node("Add", ["a2", "c2"], ["b2"], name="add2"),
        helper.make_node("Mul", ["b1", "b2"], ["y"], name="mul"),
    ]
    inits = [const("c1", np.arange(4, dtype=np.float32)), const("c2", np.arange(4, dtype=np.float32))]
    return make_model(nodes, [tensor("x", [2, 4])], [tensor("y", [2, 4])], inits)


def cse_random_model() -> onnx.ModelProto:
    """Two identical RandomUniformLike(x) nodes: equal keys, but each draws its own numbers."""
    nodes = [
        helper.make_node("RandomUniformLike", ["x"], ["r1"], name="rand1"),
        helper.make_node("RandomUniformLike", ["x"], ["r2"], name="rand2"),
        helper.make_node("Sub", ["r1", "r2"], ["y"], name="sub"),
    ]
    return make_model(nodes, [tensor("x", [2, 4])], [tensor("y", [2, 4])])


def cse_outputs_model(both: bool) -> onnx.ModelProto:
    """Relu(x) twice; the second is graph output 'y2'. The first feeds a Sigmoid ('y1'), or is
    graph output 'y1' itself when ``both``."""
    nodes = [
        helper.make_node("Relu", ["x"], ["y1" if both else "a"], name="relu1"),
        helper.make_node("Relu", ["x"], ["y2"], name="relu2"),
    ]
    if not both:
        nodes.append(helper.make_node("Sigmoid", ["a"], ["y1"], name="sig"))
    return make_model(nodes, [tensor("x", [2, 4])], [tensor("y1", [2, 4]), tensor("y2", [2, 4])])


def dynamic_reshape_model() -> onnx.ModelProto:
    """x[N,8] → Reshape(x, Concat(Shape(x)[0], 2, 4)) → Relu → y[N,2,4]: shape arithmetic on a dynamic dim."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["nu"], name="unsq"),
        helper.make_node("Concat", ["nu", "rest"], ["newshape"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "newshape"], ["r"], name="reshape"),
        helper.make_node("Relu", ["r"], ["y"], name="relu"),
    ]
    inits = [const("zero", np.array(0, np.int64)), const("axes0", np.array([0], np.int64)),
             const("rest", np.array([2, 4], np.int64))]
    return _finish(nodes, [tensor("x", ["N", 8])], [("y", TensorProto.FLOAT)], inits)


def removable_model(with_sigmoid: bool = True) -> onnx.ModelProto:
    """x[2,4] → Relu → Sigmoid 'sig' → Add(·, x) 'add' → Reshape [8] 'reshape' → Cast double 'cast' → y."""
    a = "b" if not with_sigmoid else "a"
    nodes = [helper.make_node("Relu", ["x"], [a], name="relu")]
    if with_sigmoid:
        nodes.append(helper.make_node("Sigmoid", ["a"], ["b"], name="sig"))
    nodes += [
        helper.make_node("Add", ["b", "x"], ["c"], name="add"),
        helper.make_node("Reshape", ["c", "flat"], ["d"], name="reshape"),
        helper.make_node("Cast", ["d"], ["y"], name="cast", to=TensorProto.DOUBLE),
    ]
    inits = [const("flat", np.array([8], np.int64))]
    return _finish(nodes, [tensor("x", [2, 4])], [("y", TensorProto.DOUBLE)], inits)


def constant_node_model() -> onnx.ModelProto:
    """y = x + Constant node 'cst' (a node without any input)."""
    nodes = [
        helper.make_node("Constant", [], ["c"], name="cst", value=numpy_helper.from_array(np.ones(4, np.float32))),
        helper.make_node("Add", ["x", "c"], ["y"], name="add"),
    ]
    return make_model(nodes, [tensor("x", [2, 4])], [tensor("y", [2, 4])])


def sliced_shape_model() -> onnx.ModelProto:
    """x[N,8] → Reshape(x, Concat(Shape(x, start=1), [-1])) → y[8,N]: an opset-15 Shape with start."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape", start=1),
        helper.make_node("Concat", ["s", "minus1"], ["newshape"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "newshape"], ["y"], name="reshape"),
    ]
    inits = [const("minus1", np.array([-1], np.int64))]
    return _finish(nodes, [tensor("x", ["N", 8])], [("y", TensorProto.FLOAT)], inits)
