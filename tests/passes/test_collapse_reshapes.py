from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import pytest
from onnx import numpy_helper

from tests.builders import reshape_chain_model
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph


def _target(model) -> list[int]:
    node = next(n for n in model.graph.node if n.op_type == "Reshape")
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return inits[node.input[1]].tolist()


# name -> (steps, expected shape of the single Reshape left)
CHAINS = {
    "reshape-reshape": ([("Reshape", [6, 4]), ("Reshape", [4, -1])], [4, -1]),
    "copy-dim-resolved": ([("Reshape", [6, 4]), ("Reshape", [0, 2, 2])], [6, 2, 2]),
    "flatten-reshape": ([("Flatten", 2), ("Reshape", [3, 8])], [3, 8]),
    "unsqueeze-squeeze": ([("Unsqueeze", [0, 4]), ("Squeeze", [4])], [1, 2, 3, 4]),
    "reshape-flatten": ([("Reshape", [4, 3, 2]), ("Flatten", 1)], [4, 6]),
    "reshape-squeeze": ([("Reshape", [2, 1, 12]), ("Squeeze", [1])], [2, 12]),
}


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_collapses_pair(name):
    steps, expected = CHAINS[name]
    model = reshape_chain_model(steps)
    out, result = apply_pass(model, "collapse-reshapes")
    assert ops(out) == Counter({"Reshape": 1})
    assert _target(out) == expected
    assert result.changed == 1
    assert [o.name for o in out.graph.output] == ["y"]
    assert_same_outputs(model, out)
    _, again = apply_pass(out, "collapse-reshapes")
    assert again.changed == 0


def test_long_chain_collapses_in_one_run():
    steps = [("Reshape", [6, 4]), ("Unsqueeze", [0]), ("Flatten", 2), ("Reshape", [4, 6])]
    model = reshape_chain_model(steps)
    out, result = apply_pass(model, "collapse-reshapes")
    assert ops(out) == Counter({"Reshape": 1})
    assert _target(out) == [4, 6]
    assert result.changed == 3
    assert_same_outputs(model, out)
    _, again = apply_pass(out, "collapse-reshapes")
    assert again.changed == 0


def test_dynamic_input_reshape_pair_keeps_minus_one():
    model = reshape_chain_model([("Reshape", [-1, 4]), ("Reshape", [-1, 2, 2])], x_shape=("N", 3, 4))
    out, result = apply_pass(model, "collapse-reshapes")
    assert ops(out) == Counter({"Reshape": 1})
    assert _target(out) == [-1, 2, 2]
    assert result.changed == 1
    feeds = {"x": np.random.default_rng(0).standard_normal((5, 3, 4)).astype(np.float32)}
    assert_same_outputs(model, out, feeds=feeds)


# name -> (steps, builder kwargs, rejection reason)
REJECTED = {
    "shape-not-constant": ([("Reshape", [6, 4]), ("Reshape", [4, 6])], {"runtime_shape": True}, "shape-not-constant"),
    "copy-dim-unknown": ([("Reshape", [-1, 12]), ("Reshape", [0, 3, 4])], {"x_shape": ("N", 3, 4)}, "copy-dim-unknown"),
    "shape-unknown": ([("Reshape", [-1, 12]), ("Flatten", 1)], {"x_shape": ("N", 3, 4)}, "shape-unknown"),
}


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_rejects(name):
    steps, kwargs, reason = REJECTED[name]
    model = reshape_chain_model(steps, **kwargs)
    before = copy.deepcopy(model)
    out, result = apply_pass(model, "collapse-reshapes")
    assert result.changed == 0
    assert result.stats[f"rejected:{reason}"] == 1
    assert same_graph(out, before)


def test_intermediate_with_other_consumer_is_left_alone():
    model = reshape_chain_model([("Reshape", [6, 4]), ("Reshape", [4, 6])], shared=True)
    before = copy.deepcopy(model)
    out, result = apply_pass(model, "collapse-reshapes", explain=True)
    assert result.changed == 0
    assert same_graph(out, before)
