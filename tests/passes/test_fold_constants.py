from __future__ import annotations

from collections import Counter

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
