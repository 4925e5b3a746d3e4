from __future__ import annotations

import copy

from collections import Counter

import numpy as np
import pytest
from onnx import TensorProto, helper

from surgery import to_graph, to_model
from tests.builders import const, make_model, tensor
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph


def untouched(out, model) -> bool:
    """``out`` equals ``model`` after the same import/export round trip (nothing was rewritten)."""
    return same_graph(out, to_model(to_graph(copy.deepcopy(model)), like=model))


def _loop_model(trip=3, *, cond=True, body_cond="pass", trip_input=False, scan=True, nested=False):
    """h = Loop(trip, cond, h0){h' = tanh(x[i] + h); scan s = h' * 2}; x[4,3] is read from the outer scope."""
    body_nodes = [helper.make_node("Gather", ["x", "i"], ["xi"], name="gather", axis=0),
                  helper.make_node("Add", ["xi", "h"], ["a"], name="add"),
                  helper.make_node("Tanh", ["a"], ["h2"], name="tanh"),
                  helper.make_node("Mul", ["h2", "two"], ["s"], name="mul")]
    if body_cond == "pass":
        body_nodes.append(helper.make_node("Identity", ["c"], ["c2"], name="cid"))
    else:
        body_nodes.append(helper.make_node("ReduceSum", ["h2"], ["sum"], name="rsum", keepdims=0))
        body_nodes.append(helper.make_node("Less", ["sum", "two"], ["c2"], name="less"))
    if nested:
        sub = helper.make_graph([helper.make_node("Identity", ["h2"], ["q"], name="q")], "b", [], [tensor("q", [3])])
        body_nodes.append(helper.make_node("If", ["c"], ["unused"], name="inner", then_branch=sub, else_branch=sub))
    outs = [tensor("c2", [], TensorProto.BOOL), tensor("h2", [3])] + ([tensor("s", [3])] if scan else [])
    body = helper.make_graph(body_nodes, "body", [tensor("i", [], TensorProto.INT64), tensor("c", [], TensorProto.BOOL),
                                                  tensor("h", [3])], outs)
    loop_outs = ["y"] + (["ys"] if scan else [])
    nodes = [helper.make_node("Loop", ["M", "cond", "h0"], loop_outs, name="loop", body=body)]
    inputs = [tensor("x", [4, 3]), tensor("h0", [3])] + ([tensor("M", [], TensorProto.INT64)] if trip_input else [])
    inits = [const("two", np.float32(2.0)), const("cond", np.array(cond))] + ([] if trip_input else [const("M", np.array(trip, np.int64))])
    outputs = [tensor("y", [3])] + ([tensor("ys", [None, 3])] if scan else [])
    return make_model(nodes, inputs, outputs, inits)


def test_unrolls_with_scan_output():
    model = _loop_model(3)
    out, result = apply_pass(model, "unroll-loop")
    assert result.changed == 1 and result.stats["iterations"] == 3
    assert ops(out) == Counter({"Gather": 3, "Add": 3, "Tanh": 3, "Mul": 3, "Unsqueeze": 3, "Concat": 1})
    assert [o.name for o in out.graph.output] == ["y", "ys"]
    feeds = {"x": np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32),
             "h0": np.random.default_rng(1).standard_normal(3).astype(np.float32)}
    assert_same_outputs(model, out, feeds=feeds)
    again, second = apply_pass(out, "unroll-loop")
    assert second.changed == 0 and same_graph(again, out)


def test_unrolls_without_scan_output():
    model = _loop_model(4, scan=False)
    out, result = apply_pass(model, "unroll-loop")
    assert result.changed == 1
    assert ops(out) == Counter({"Gather": 4, "Add": 4, "Tanh": 4})  # the scan-free body's Mul is dead
    assert_same_outputs(model, out, feeds={"x": np.ones((4, 3), np.float32), "h0": np.zeros(3, np.float32)})


@pytest.mark.parametrize("kwargs,reason", [
    ({"trip_input": True}, "trip-count-not-constant"),
    ({"trip": 40}, "too-many-iterations"),
    ({"trip": 0}, "zero-iterations"),
    ({"cond": False}, "zero-iterations"),
    ({"body_cond": "computed"}, "data-dependent-condition"),
    ({"nested": True}, "nested-subgraph"),
])
def test_rejects(kwargs, reason):
    model = _loop_model(**kwargs)
    out, result = apply_pass(model, "unroll-loop")
    assert result.changed == 0 and result.stats[f"rejected:{reason}"] == 1
    assert untouched(out, model)


def test_max_iters_option():
    out, result = apply_pass(_loop_model(3), "unroll-loop", max_iters=2)
    assert result.changed == 0 and result.stats["rejected:too-many-iterations"] == 1
