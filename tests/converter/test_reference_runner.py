from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from converter.runtime.reference_runner import MissingReferenceError, run_with_references
from converter.runtime.numerics import run_ort
from surgery.plugins import PLUGIN_DOMAIN
from tests.builders import const, make_model, tensor
from tests.fusion_builders import GAMMA


def _plugin_model(op: str = "SurgeryRMSNorm"):
    """x -> Relu -> plugin(op) -> Add(1) -> y, plus a standard-only side output z = Neg(x)."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node(op, ["r"], ["p"], name="plugin", domain=PLUGIN_DOMAIN, epsilon=1e-6,
                         gamma=helper.make_tensor("gamma", 1, [8], GAMMA.tolist()), plugin_version="1", plugin_namespace="onnx_surgery"),
        helper.make_node("Add", ["p", "one"], ["y"], name="add"),
        helper.make_node("Neg", ["x"], ["z"], name="neg"),
    ]
    graph = helper.make_graph(nodes, "g", [tensor("x", [2, 4, 8])], [tensor("y", [2, 4, 8]), tensor("z", [2, 4, 8])],
                              [const("one", np.float32(1.0))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(PLUGIN_DOMAIN, 1)])
    model.ir_version = 8
    return model


def test_plugin_runs_on_reference_between_ort_segments(rng):
    x = rng.standard_normal((2, 4, 8)).astype(np.float32)
    out = run_with_references(_plugin_model(), {"x": x})
    r = np.maximum(x, 0).astype(np.float64)
    expected = r / np.sqrt((r * r).mean(-1, keepdims=True) + 1e-6) * GAMMA + 1.0
    np.testing.assert_allclose(out["y"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["z"], -x)
    assert list(out) == ["y", "z"]


def test_missing_reference_is_a_clear_error(rng):
    with pytest.raises(MissingReferenceError, match="NoSuchPlugin"):
        run_with_references(_plugin_model("NoSuchPlugin"), {"x": np.zeros((2, 4, 8), np.float32)})


def test_model_without_plugins_matches_onnxruntime(rng):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Mul", ["r", "x"], ["y"], name="mul")]
    model = make_model(nodes, [tensor("x", [2, 3])], [tensor("y", [2, 3])])
    feeds = {"x": rng.standard_normal((2, 3)).astype(np.float32)}
    np.testing.assert_array_equal(run_with_references(model, feeds)["y"], run_ort(model, feeds)["y"])


def test_unsorted_nodes_are_ordered_first(rng):
    model = _plugin_model()
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    x = rng.standard_normal((2, 4, 8)).astype(np.float32)
    np.testing.assert_allclose(run_with_references(model, {"x": x})["y"], run_with_references(_plugin_model(), {"x": x})["y"])
