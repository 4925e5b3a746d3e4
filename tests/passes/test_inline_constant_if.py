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


def _if_model(cond, *, cond_input: bool = False):
    """y = If(cond){then: Relu(x)*2 (or x itself); else: x-1}; z = y + 1. x is read from the outer scope."""
    two, one = const("two", np.float32(2.0)), const("one", np.float32(1.0))
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                              helper.make_node("Mul", ["r", "two"], ["t"], name="mul")],
                             "then", [], [tensor("t", [2, 3])])
    other = helper.make_graph([helper.make_node("Sub", ["x", "one"], ["e"], name="sub")], "else", [], [tensor("e", [2, 3])])
    nodes = [helper.make_node("If", ["c"], ["y"], name="if", then_branch=then, else_branch=other),
             helper.make_node("Add", ["y", "one"], ["z"], name="add")]
    inputs = [tensor("x", [2, 3])] + ([tensor("c", [], TensorProto.BOOL)] if cond_input else [])
    inits = [two, one] + ([] if cond_input else [const("c", np.array(cond))])
    return make_model(nodes, inputs, [tensor("z", [2, 3]), tensor("y", [2, 3])], inits)


@pytest.mark.parametrize("cond,want", [(True, {"Relu": 1, "Mul": 1, "Add": 1}), (False, {"Sub": 1, "Add": 1})])
def test_inlines_chosen_branch(cond, want):
    model = _if_model(cond)
    out, result = apply_pass(model, "inline-constant-if")
    assert result.changed == 1
    assert ops(out) == Counter(want)
    assert [o.name for o in out.graph.output] == ["z", "y"]
    assert_same_outputs(model, out)
    again, second = apply_pass(out, "inline-constant-if")
    assert second.changed == 0 and same_graph(again, out)


def test_rejects_runtime_condition():
    model = _if_model(True, cond_input=True)
    out, result = apply_pass(model, "inline-constant-if")
    assert result.changed == 0 and result.stats["rejected:condition-not-constant"] == 1
    assert untouched(out, model)


def test_rejects_non_scalar_condition():
    model = _if_model(np.array([True, False]))
    out, result = apply_pass(model, "inline-constant-if")
    assert result.changed == 0 and result.stats["rejected:condition-not-scalar"] == 1
    assert untouched(out, model)
