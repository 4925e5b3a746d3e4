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


def _elements(reduction="add", idx=((0, 2), (1, 3)), runtime=False, opset=18):
    nodes = [helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], name="scatter", axis=1, reduction=reduction)]
    inputs = [tensor("x", [2, 6]), tensor("u", [2, 2])]
    inits = []
    if runtime:
        inputs.append(tensor("i", [2, 2], TensorProto.INT64))
    else:
        inits.append(const("i", np.array(idx, np.int64)))
    return make_model(nodes, inputs, [tensor("y", [2, 6])], inits, opset=opset)


def _nd(reduction="add", idx=((0,), (2,)), shape=(4, 3)):
    nodes = [helper.make_node("ScatterND", ["x", "i", "u"], ["y"], name="scatter", reduction=reduction)]
    return make_model(nodes, [tensor("x", list(shape)), tensor("u", [2, 3])], [tensor("y", list(shape))],
                      [const("i", np.array(idx, np.int64))], opset=18)


@pytest.mark.parametrize("reduction,op", [("add", "Add"), ("mul", "Mul"), ("max", "Max"), ("min", "Min")])
def test_scatter_elements_reduction_becomes_plain(reduction, op):
    model = _elements(reduction)
    out, result = apply_pass(model, "rewrite-static-scatter")
    assert result.changed == 1
    assert ops(out) == Counter({"ScatterElements": 1, "GatherElements": 1, op: 1})
    scatter = next(n for n in out.graph.node if n.op_type == "ScatterElements")
    assert all(a.name != "reduction" for a in scatter.attribute)
    assert_same_outputs(model, out)
    again, second = apply_pass(out, "rewrite-static-scatter")
    assert second.changed == 0 and same_graph(again, out)


@pytest.mark.parametrize("idx", [((0,), (2,)), ((-1,), (1,))])
def test_scatter_nd_reduction_becomes_plain(idx):
    model = _nd("add", idx)
    out, result = apply_pass(model, "rewrite-static-scatter")
    assert result.changed == 1
    assert ops(out) == Counter({"ScatterND": 1, "GatherND": 1, "Add": 1})
    assert_same_outputs(model, out)


def test_negative_element_indices_normalised():
    model = _elements("add", idx=((0, -1), (1, 3)))
    out, result = apply_pass(model, "rewrite-static-scatter")
    assert result.changed == 1
    assert_same_outputs(model, out)


@pytest.mark.parametrize("model,reason", [
    (lambda: _elements("add", runtime=True), "indices-not-constant"),
    (lambda: _elements("add", idx=((0, 0), (1, 3))), "duplicate-indices"),
    (lambda: _nd("add", idx=((1,), (1,))), "duplicate-indices"),
    (lambda: _nd("add", idx=((-1,), (1,)), shape=("n", 3)), "negative-index-unknown-dim"),
])
def test_rejects(model, reason):
    m = model()
    out, result = apply_pass(m, "rewrite-static-scatter")
    assert result.changed == 0 and result.stats[f"rejected:{reason}"] == 1
    assert untouched(out, m)


def test_plain_scatter_is_left_alone():
    m = _elements("none")
    out, result = apply_pass(m, "rewrite-static-scatter")
    assert result.changed == 0 and not result.stats and untouched(out, m)
