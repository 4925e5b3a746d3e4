from __future__ import annotations

from collections import Counter

from tests.builders import dead_branch_model
from tests.helpers import apply_pass, assert_same_outputs, ops


def test_removes_dead_branch_initializer_and_input():
    model = dead_branch_model()
    out, result = apply_pass(model, "remove-dead-nodes", remove_inputs=True)
    assert ops(out) == Counter({"Relu": 1})
    assert result.stats["nodes"] == 2
    assert result.stats["inputs"] == 1
    assert [i.name for i in out.graph.input] == ["x"]
    assert list(out.graph.initializer) == []
    assert_same_outputs(model, out)


def test_default_keeps_interface():
    out, result = apply_pass(dead_branch_model(), "remove-dead-nodes")
    assert [i.name for i in out.graph.input] == ["x", "extra"]
    assert result.stats.get("inputs", 0) == 0


def test_idempotent():
    out, _ = apply_pass(dead_branch_model(), "remove-dead-nodes")
    _, result = apply_pass(out, "remove-dead-nodes")
    assert result.changed == 0
