from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import pytest
from onnx import TensorProto

from tests.builders import INT64_MAX, single_node_model, transpose_chain_model
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph

f32 = np.float32
i64 = np.int64

# kind -> (op, constant extra inputs, attrs, builder keyword arguments); x is [2, 3, 4] unless given
NOOPS = {
    "identity": ("Identity", (), {}, {}),
    "dropout": ("Dropout", (np.array(0.5, f32),), {}, {}),
    "dropout-training-false": ("Dropout", (np.array(0.5, f32), np.array(False)), {}, {}),
    "dropout-mask-unused": ("Dropout", (np.array(0.5, f32),), {}, {}),
    "cast": ("Cast", (), {"to": TensorProto.FLOAT}, {}),
    "reshape": ("Reshape", (np.array([2, -1, 4], i64),), {}, {}),
    "reshape-copy-dims": ("Reshape", (np.array([0, 0, 4], i64),), {}, {}),
    "reshape-keeps-symbolic-dims": ("Reshape", (np.array([0, 3, 4], i64),), {}, {"x_shape": ("N", 3, 4)}),
    "reshape-copy-and-infer": ("Reshape", (np.array([0, 0, -1], i64),), {}, {"x_shape": ("N", "S", 4)}),
    "flatten": ("Flatten", (), {"axis": 1}, {"x_shape": (6, 4)}),
    "squeeze": ("Squeeze", (), {}, {}),
    "transpose": ("Transpose", (), {"perm": [0, 1, 2]}, {}),
    "expand": ("Expand", (np.array([3, 1], i64),), {}, {}),
    "tile": ("Tile", (np.array([1, 1, 1], i64),), {}, {}),
    "concat": ("Concat", (), {"axis": 0}, {}),
    "slice": ("Slice", (np.array([0, 0], i64), np.array([INT64_MAX, 3], i64), np.array([0, 1], i64)), {}, {}),
    "slice-negative-start": ("Slice", (np.array([-3], i64), np.array([10], i64), np.array([-2], i64)), {}, {}),
    "pad": ("Pad", (np.zeros(6, i64),), {}, {}),
    "mul": ("Mul", (np.ones(4, f32),), {}, {}),
    "mul-const-first": ("Mul", (np.ones((3, 1), f32),), {}, {"const_first": True}),
    "div": ("Div", (np.array(1.0, f32),), {}, {}),
    "add": ("Add", (np.zeros((1, 3, 4), f32),), {}, {}),
    "sub": ("Sub", (np.zeros(1, f32),), {}, {}),
}


def _model(kind: str, **overrides):
    op, extra, attrs, kwargs = NOOPS[kind]
    return single_node_model(op, extra, attrs, **{**kwargs, **overrides})


@pytest.mark.parametrize("kind", sorted(NOOPS))
def test_removes_noop(kind):
    model = _model(kind)
    out, result = apply_pass(model, "eliminate-noops")
    op = NOOPS[kind][0]
    assert ops(out) == Counter({"Relu": 1})
    assert result.changed == 1
    assert result.stats[op] == 1
    assert [o.name for o in out.graph.output] == ["y"]
    assert_same_outputs(model, out)
    _, again = apply_pass(out, "eliminate-noops")
    assert again.changed == 0


def test_noop_feeding_graph_output_renames_producer():
    model = _model("transpose", where="end")
    out, result = apply_pass(model, "eliminate-noops")
    assert ops(out) == Counter({"Relu": 1})
    assert result.changed == 1
    assert [o.name for o in out.graph.output] == ["y"]
    assert out.graph.node[0].output[0] == "y"
    assert_same_outputs(model, out)


def test_noop_between_graph_input_and_output_leaves_identity():
    model = _model("mul", where="direct")
    out, result = apply_pass(model, "eliminate-noops")
    assert ops(out) == Counter({"Identity": 1})
    assert result.changed == 1
    assert [o.name for o in out.graph.output] == ["y"]
    assert_same_outputs(model, out)
    _, again = apply_pass(out, "eliminate-noops")
    assert again.changed == 0
    assert again.stats["rejected:output-passthrough"] == 1


def test_chained_noops_all_go_in_one_run():
    model = transpose_chain_model([[0, 1, 2], [0, 1, 2]])
    out, result = apply_pass(model, "eliminate-noops")
    assert ops(out) == Counter({"Relu": 1})
    assert result.changed == 2
    assert result.stats["Transpose"] == 2
    assert [o.name for o in out.graph.output] == ["y"]
    assert_same_outputs(model, out)


# kind -> (op, extra, attrs, builder kwargs, expected rejection reason)
REJECTED = {
    "identity-input-to-output": ("Identity", (), {}, {"where": "direct"}, "output-passthrough"),
    "dropout-training": ("Dropout", (np.array(0.5, f32), np.array(True)), {}, {}, "training-mode"),
    "dropout-mask-used": ("Dropout", (np.array(0.5, f32),), {}, {"mask_used": True}, "mask-used"),
    "mul-broadcasts-rank": ("Mul", (np.ones((2, 1, 1, 1), f32),), {}, {}, "broadcasts"),
    "add-broadcasts-dim": ("Add", (np.zeros((2, 3, 4), f32),), {}, {"x_shape": (1, 3, 4)}, "broadcasts"),
    "add-broadcasts-symbolic": ("Add", (np.zeros((2, 3, 4), f32),), {}, {"x_shape": ("N", 3, 4)}, "broadcasts"),
    "mul-shape-unknown": ("Mul", (np.ones(4, f32),), {}, {"where": "end", "annotate": False}, "shape-unknown"),
}


@pytest.mark.parametrize("kind", sorted(REJECTED))
def test_rejects(kind):
    op, extra, attrs, kwargs, reason = REJECTED[kind]
    model = single_node_model(op, extra, attrs, **kwargs)
    before = copy.deepcopy(model)
    out, result = apply_pass(model, "eliminate-noops")
    assert result.changed == 0
    assert result.stats[f"rejected:{reason}"] == 1
    assert same_graph(out, before)


# Nodes that change something: not candidates, so no rejection is recorded either.
NOT_NOOPS = {
    "reshape": ("Reshape", (np.array([6, 4], i64),), {}, {}),
    "transpose": ("Transpose", (), {"perm": [1, 0, 2]}, {}),
    "transpose-default-perm": ("Transpose", (), {}, {}),
    "cast": ("Cast", (), {"to": TensorProto.DOUBLE}, {"y_type": TensorProto.DOUBLE}),
    "unsqueeze": ("Unsqueeze", (np.array([0], i64),), {}, {}),
    "slice-partial": ("Slice", (np.array([1], i64), np.array([INT64_MAX], i64)), {}, {}),
    "slice-step": ("Slice", (np.array([0], i64), np.array([INT64_MAX], i64), np.array([0], i64), np.array([2], i64)), {}, {}),
    "expand": ("Expand", (np.array([2, 2, 3, 4], i64),), {}, {}),
    "mul-by-two": ("Mul", (np.full(4, 2.0, f32),), {}, {}),
    "sub-zero-first": ("Sub", (np.zeros(1, f32),), {}, {"const_first": True}),
    "reshape-dynamic-input": ("Reshape", (np.array([0, 4, 3], i64),), {}, {"x_shape": ("N", 3, 4)}),
    "reshape-symbolic-dims-moved": ("Reshape", (np.array([0, -1, 2], i64),), {}, {"x_shape": ("N", "S", 4)}),
    "reshape-two-unknown": ("Reshape", (np.array([0, -1, 4], i64),), {}, {"x_shape": ("N", "S", "T")}),
}


@pytest.mark.parametrize("kind", sorted(NOT_NOOPS))
def test_leaves_real_computation(kind):
    op, extra, attrs, kwargs = NOT_NOOPS[kind]
    model = single_node_model(op, extra, attrs, **{"where": "end", **kwargs})
    before = copy.deepcopy(model)
    out, result = apply_pass(model, "eliminate-noops")
    assert result.changed == 0
    assert not any(k.startswith("rejected:") for k in result.stats)
    assert same_graph(out, before)


def test_a_chain_of_no_op_reshapes_goes_in_one_run():
    """The second Reshape is provably a no-op only once the first is gone (its input shape is then x's):
    one run removes both, and a second run changes nothing."""
    import numpy as np
    from onnx import helper

    from tests.builders import const, make_model, tensor
    from tests.helpers import apply_pass, assert_same_outputs, same_graph

    nodes = [helper.make_node("Reshape", ["x", "s"], ["a"], name="r1"), helper.make_node("Reshape", ["a", "s"], ["y"], name="r2")]
    model = make_model(nodes, [tensor("x", [2, 3])], [tensor("y", [2, 3])], [const("s", np.array([2, 3], np.int64))])
    out, result = apply_pass(model, "eliminate-noops")
    assert result.changed == 2 and [n.op_type for n in out.graph.node] == ["Identity"]
    assert_same_outputs(model, out)
    again, second = apply_pass(out, "eliminate-noops")
    assert second.changed == 0 and same_graph(again, out)
