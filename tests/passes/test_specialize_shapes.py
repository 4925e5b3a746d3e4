from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import pytest

from surgery import PassContext, PassManager, UserInputError, get_pass, to_graph, to_model
from tests.builders import dynamic_reshape_model, sliced_shape_model
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph

FEEDS = {"x": np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)}


def _dims(model, name: str) -> list:
    vi = next(v for v in model.graph.input if v.name == name)
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim]


def test_fixes_dynamic_input_dims():
    model = dynamic_reshape_model()
    out, result = apply_pass(model, "specialize-shapes", ctx_options={"input_shapes": {"x": [3, 8]}})
    assert _dims(out, "x") == [3, 8]
    assert result.changed == 1
    assert result.stats["cleared-shapes"] > 0
    assert ops(out) == ops(model)
    assert [o.name for o in out.graph.output] == ["y"]
    assert_same_outputs(model, out, feeds=FEEDS)
    _, again = apply_pass(out, "specialize-shapes", ctx_options={"input_shapes": {"x": [3, 8]}})
    assert again.changed == 0


def test_then_fold_constants_removes_shape_arithmetic():
    model = dynamic_reshape_model()
    graph = to_graph(copy.deepcopy(model))
    ctx = PassContext(options={"input_shapes": {"x": [3, 8]}})
    PassManager([get_pass("specialize-shapes"), get_pass("fold-constants")]).run(graph, ctx)
    out = to_model(graph, like=model)
    assert ops(out) == Counter({"Reshape": 1, "Relu": 1})
    assert_same_outputs(model, out, feeds=FEEDS)


def test_without_it_fold_constants_keeps_shape():
    out, _ = apply_pass(dynamic_reshape_model(), "fold-constants")
    assert ops(out)["Shape"] == 1


def test_nothing_configured_changes_nothing():
    model = dynamic_reshape_model()
    out, result = apply_pass(model, "specialize-shapes")
    assert result.changed == 0
    assert same_graph(out, model)


@pytest.mark.parametrize("shapes, message", [
    ({"nope": [1, 8]}, r"'nope' is not a graph input \(inputs: x\)"),
    ({"x": [3, 8, 1]}, r"rank 3 does not match the input's rank 2"),
    ({"x": [3, 4]}, r"dim 1 is fixed to 8 in the model, cannot set it to 4"),
    ({"x": [0, 8]}, r"expected a list of positive ints"),
])
def test_bad_input_shapes_are_user_errors(shapes, message):
    graph = to_graph(dynamic_reshape_model())
    with pytest.raises(UserInputError, match=message):
        get_pass("specialize-shapes").run(graph, PassContext(options={"input_shapes": shapes}))


def test_then_fold_constants_respects_shape_start():
    model = sliced_shape_model()
    graph = to_graph(copy.deepcopy(model))
    ctx = PassContext(options={"input_shapes": {"x": [3, 8]}})
    PassManager([get_pass("specialize-shapes"), get_pass("infer-shapes"), get_pass("fold-constants")]).run(graph, ctx)
    out = to_model(graph, like=model)
    assert ops(out) == Counter({"Reshape": 1})
    assert_same_outputs(model, out, feeds=FEEDS)
