from __future__ import annotations

from collections import Counter

import numpy as np
from onnx import numpy_helper

from tests.builders import shape_arith_model
from tests.helpers import apply_pass, assert_same_outputs, ops


def test_folds_shape_arithmetic_and_constant_add():
    model = shape_arith_model()
    out, result = apply_pass(model, "fold-constants")
    assert ops(out) == Counter({"Reshape": 1, "Add": 1})
    assert result.changed == 5  # shape, gather, unsqueeze, concat, add_consts vanished
    assert result.stats["folded-nodes"] == 5
    assert [o.name for o in out.graph.output] == ["y"]
    assert_same_outputs(model, out)


def test_second_run_changes_nothing():
    out, _ = apply_pass(shape_arith_model(), "fold-constants")
    again, result = apply_pass(out, "fold-constants")
    assert result.changed == 0
    assert again.graph.SerializeToString() == out.graph.SerializeToString()


def test_size_threshold_keeps_large_results_unfolded():
    out, result = apply_pass(shape_arith_model(), "fold-constants", size_threshold=16)
    # the 8-float (32-byte) constant sum exceeds 16 bytes and must stay as an Add
    assert ops(out)["Add"] == 2
    assert result.changed == 4


def test_shape_with_start_on_partly_dynamic_input_folds_correctly():
    """gs 0.6.1 would read dim 1 of the *full* shape here (8) instead of the sliced shape's dim 1 (16)."""
    from onnx import TensorProto, helper

    from tests.builders import const, make_model, tensor

    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape", start=1),
        helper.make_node("Gather", ["s", "one"], ["d"], name="gather", axis=0),
        helper.make_node("Cast", ["d"], ["df"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Add", ["x", "df"], ["y"], name="add"),
    ]
    model = make_model(nodes, [tensor("x", ["N", 8, 16])], [tensor("y", ["N", 8, 16])], [const("one", np.array(1, np.int64))])
    out, result = apply_pass(model, "fold-constants")
    assert result.stats["sliced-shapes"] == 1
    assert ops(out) == Counter({"Add": 1})
    assert float(numpy_helper.to_array(out.graph.initializer[0]).reshape(-1)[0]) == 16.0
    assert_same_outputs(model, out)
