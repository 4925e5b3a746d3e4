from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import pytest

from surgery import to_graph, to_model
from converter.runtime.numerics import run_ort
from tests.builders import constant_node_model, removable_model, single_node_model
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph


@pytest.mark.parametrize("options", [{"remove_names": ["sig"]}, {"remove_ops": ["Sigmoid"]}])
def test_removes_selected_node(options):
    model = removable_model()
    out, result = apply_pass(model, "remove-nodes", ctx_options=options)
    assert ops(out) == Counter({"Relu": 1, "Add": 1, "Reshape": 1, "Cast": 1})
    assert result.changed == 1
    assert "removed 'sig' (Sigmoid)" in result.notes
    assert [o.name for o in out.graph.output] == ["y"]
    assert_same_outputs(removable_model(with_sigmoid=False), out)
    _, again = apply_pass(out, "remove-nodes", ctx_options=options)
    assert again.changed == 0


def test_removing_last_node_keeps_output_name():
    model = single_node_model("Sigmoid", where="end")
    out, result = apply_pass(model, "remove-nodes", ctx_options={"remove_names": ["noop"]})
    assert ops(out) == Counter({"Relu": 1})
    assert result.changed == 1
    assert [o.name for o in out.graph.output] == ["y"]
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)}
    np.testing.assert_allclose(run_ort(out, feeds)["y"], np.maximum(feeds["x"], 0))


def test_nothing_configured_changes_nothing():
    model = removable_model()
    out, result = apply_pass(model, "remove-nodes")
    assert result.changed == 0
    assert same_graph(out, model)


def test_unknown_name_is_noted():
    model = removable_model()
    out, result = apply_pass(model, "remove-nodes", ctx_options={"remove_names": ["ghost"]})
    assert result.changed == 0
    assert result.notes == ["no node named 'ghost'"]
    assert same_graph(out, model)


# name -> (model factory, selected name, rejection reason)
REJECTED = {
    "multiple-data-inputs": (removable_model, "add", "multiple-data-inputs"),
    "shape-mismatch": (removable_model, "reshape", "shape-mismatch"),
    "dtype-mismatch": (removable_model, "cast", "dtype-mismatch"),
    "no-data-input": (constant_node_model, "cst", "no-data-input"),
    "extra-output-used": (lambda: single_node_model("Dropout", (np.array(0.5, np.float32),), mask_used=True),
                          "noop", "extra-output-used"),
    "output-passthrough": (lambda: single_node_model("Identity", where="direct"), "noop", "output-passthrough"),
}


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_refuses(name):
    factory, target, reason = REJECTED[name]
    model = factory()
    before = to_model(to_graph(copy.deepcopy(model)), like=model)  # gs re-serializes Constant nodes
    out, result = apply_pass(model, "remove-nodes", ctx_options={"remove_names": [target]})
    assert result.changed == 0
    assert result.stats[f"rejected:{reason}"] == 1
    assert any(note.startswith(f"kept '{target}'") and reason in note for note in result.notes)
    assert same_graph(out, before)
