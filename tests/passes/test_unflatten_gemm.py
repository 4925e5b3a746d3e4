"""unflatten-gemm: Reshape -> Gemm -> Reshape around an N-D input becomes MatMul (+ Add)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import helper

from converter.runtime.numerics import run_ort
from tests.builders import const, make_model, tensor
from tests.helpers import apply_pass, ops, same_graph

RNG = np.random.default_rng(5)


def conv1d_model(trans_b: int = 0, alpha: float = 1.0, heads: bool = False, back_src: str = "x", bias: bool = True,
                 opset: int = 17) -> onnx.ModelProto:
    """GPT-2's Conv1D as TorchScript exports it: x -> Reshape([-1, 8]) -> Gemm -> Reshape(x.shape[:-1] + [12]).

    heads: x is [B, S, 2, 4] (an attention output before the head merge) instead of [B, S, 8].
    back_src: the tensor whose leading dims the back Reshape reads (``ctx`` [B, T, 8] is not x's).
    """
    w = RNG.standard_normal((12, 8) if trans_b else (8, 12)).astype(np.float32)
    gemm_in = ["flat", "w"] + (["b"] if bias else [])
    nodes = [helper.make_node("Reshape", ["x", "c_flat"], ["flat"], name="flatten"),
             helper.make_node("Gemm", gemm_in, ["g"], name="gemm", transB=trans_b, alpha=alpha),
             helper.make_node("Shape", [back_src], ["sx"], name="shape"),
             helper.make_node("Slice", ["sx", "c_zero", "c_two"], ["lead"], name="lead"),
             helper.make_node("Concat", ["lead", "c_n"], ["target"], name="concat", axis=0),
             helper.make_node("Reshape", ["g", "target"], ["y"], name="back")]
    inits = [const("w", w), const("b", RNG.standard_normal(12).astype(np.float32)),
             const("c_flat", np.array([-1, 8], np.int64)), const("c_zero", np.array([0], np.int64)),
             const("c_two", np.array([2], np.int64)), const("c_n", np.array([12], np.int64))]
    if not bias:
        inits = [i for i in inits if i.name != "b"]
    inputs = [tensor("x", ["B", "S", 2, 4] if heads else ["B", "S", 8])]
    if back_src == "ctx":
        inputs.append(tensor("ctx", ["B", "T", 8]))
    model = make_model(nodes, inputs, [tensor("y", ["B", "S", 12])], inits, opset=opset)
    return onnx.shape_inference.infer_shapes(model)


def _feeds(model: onnx.ModelProto, b: int = 2, s: int = 3) -> dict[str, np.ndarray]:
    shape = [d.dim_value or {"B": b, "S": s, "T": s}[d.dim_param] for d in model.graph.input[0].type.tensor_type.shape.dim]
    feeds = {"x": RNG.standard_normal(shape).astype(np.float32)}
    if len(model.graph.input) > 1:
        feeds["ctx"] = RNG.standard_normal((b, s, 8)).astype(np.float32)
    return feeds


def _check_same(model, out):
    for b, s in ((2, 3), (1, 5)):
        feeds = _feeds(model, b, s)
        np.testing.assert_allclose(run_ort(out, feeds)["y"], run_ort(model, feeds)["y"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("bias", [True, False])
def test_flattened_gemm_becomes_matmul_and_add(trans_b, bias):
    model = conv1d_model(trans_b=trans_b, bias=bias)
    out, result = apply_pass(model, "unflatten-gemm")
    assert result.changed == 1
    assert ops(out) == Counter({"MatMul": 1, **({"Add": 1} if bias else {})})  # no Reshape, no shape arithmetic
    matmul = next(n for n in out.graph.node if n.op_type == "MatMul")
    assert matmul.input[0] == "x"
    weight = next(i for i in out.graph.initializer if i.name == matmul.input[1])
    assert list(weight.dims) == [8, 12]
    _check_same(model, out)
    again, second = apply_pass(out, "unflatten-gemm")
    assert second.changed == 0 and same_graph(again, out)


def test_split_heads_are_merged_before_the_matmul():
    model = conv1d_model(heads=True)
    out, result = apply_pass(model, "unflatten-gemm")
    assert result.changed == 1
    assert ops(out) == Counter({"Reshape": 1, "MatMul": 1, "Add": 1})
    reshape = next(n for n in out.graph.node if n.op_type == "Reshape")
    target = next(i for i in out.graph.initializer if i.name == reshape.input[1])
    assert onnx.numpy_helper.to_array(target).tolist() == [0, 0, -1]
    _check_same(model, out)


def test_dynamo_allowzero_flatten_matches():
    model = conv1d_model(opset=18)
    next(n for n in model.graph.node if n.name == "flatten").attribute.append(helper.make_attribute("allowzero", 1))
    out, result = apply_pass(model, "unflatten-gemm")
    assert result.changed == 1 and ops(out)["Gemm"] == 0
    _check_same(model, out)


@pytest.mark.parametrize("kwargs,reason", [({"alpha": 0.5}, "gemm-attributes"), ({"back_src": "ctx"}, "back-target")])
def test_unsafe_forms_are_rejected(kwargs, reason):
    model = conv1d_model(**kwargs)
    out, result = apply_pass(model, "unflatten-gemm")
    assert result.changed == 0 and result.stats[f"rejected:{reason}"] == 1
    assert ops(out)["Gemm"] == 1


def test_a_transposed_weight_shared_by_two_gemms_gets_two_unique_constants():
    model = conv1d_model(trans_b=1)
    g = model.graph
    next(n for n in g.node if n.name == "back").output[0] = "y1"
    g.node.extend([
        helper.make_node("Reshape", ["x", "c_flat"], ["flat2"], name="flatten2"),
        helper.make_node("Gemm", ["flat2", "w", "b"], ["g2"], name="gemm2", transB=1),
        helper.make_node("Reshape", ["g2", "target"], ["y2"], name="back2"),
        helper.make_node("Mul", ["y1", "y2"], ["y"], name="out")])
    del g.value_info[:]
    model = onnx.shape_inference.infer_shapes(model)
    out, result = apply_pass(model, "unflatten-gemm")  # apply_pass verifies: duplicate names would fail it
    assert result.changed == 2 and ops(out)["Gemm"] == 0
    names = [i.name for i in out.graph.initializer]
    assert len(names) == len(set(names))
    _check_same(model, out)
