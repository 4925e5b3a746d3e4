from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from onnx import helper

from converter.runtime.reference_runner import run_with_references
from converter.runtime.numerics import random_feeds, run_ort, spec_from_model
from tests.builders import make_model, tensor
from tests.fusion_builders import GAMMA, layernorm_model, tf_layernorm_model
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph

TOL = dict(rtol=1e-4, atol=1e-4)


def _node(model, op):
    (node,) = [n for n in model.graph.node if n.op_type == op]
    return node, {a.name: helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("square,form,affine,opset", [
    ("pow", "div", "g-b", 17), ("mul", "div", "gr-br", 17), ("pow", "recip-mul", "g", 18),
    ("pow", "recip-mulr", "gr-b", 14), ("mul", "div1-mul", "", 18), ("pow", "div1-mulr", "g-br", 17),
])
def test_pytorch_spellings_fuse_to_one_layernorm(square, form, affine, opset):
    model = layernorm_model(square, form, affine, opset=opset, eps=1e-6)
    out, result = apply_pass(model, "fuse-layernorm")
    assert result.changed == 1
    assert ops(out) == Counter({"LayerNormalization": 1} | ({"Identity": 1} if not affine else {}))
    node, attrs = _node(out, "LayerNormalization")
    assert attrs["axis"] == -1 and attrs["epsilon"] == pytest.approx(1e-6) and attrs["stash_type"] == 1
    assert len(node.input) == (3 if "b" in affine else 2)
    assert [o.name for o in out.graph.output] == ["y"]
    assert max(o.version for o in out.opset_import if o.domain == "") == max(opset, 17)
    assert_same_outputs(model, out, **TOL)


@pytest.mark.parametrize("mean_op,scaled", [("GlobalAveragePool", True), ("GlobalAveragePool", False), ("ReduceMean", True)])
def test_tf2onnx_keras_layernorm(mean_op, scaled):
    model = tf_layernorm_model(mean_op, scaled)
    out, result = apply_pass(model, "fuse-layernorm")
    assert result.changed == 1 and ops(out) == Counter({"LayerNormalization": 1})
    assert _node(out, "LayerNormalization")[1]["epsilon"] == pytest.approx(1e-3)
    assert_same_outputs(model, out, **TOL)


def test_fp16_cast_island_is_absorbed():
    model = layernorm_model(fp16_island=True)
    out, result = apply_pass(model, "fuse-layernorm")
    assert result.changed == 1 and ops(out) == Counter({"LayerNormalization": 1})
    node, _ = _node(out, "LayerNormalization")
    assert node.input[0] == "x"  # reads the fp16 input directly: stash_type=1 keeps fp32 statistics
    assert_same_outputs(model, out, rtol=1e-2, atol=1e-2)


def test_ort_emit_is_standard_layernorm_with_note():
    model = layernorm_model()
    out, result = apply_pass(model, "fuse-layernorm", ctx_options={"emit": "ort"})
    assert result.changed == 1 and ops(out) == Counter({"LayerNormalization": 1})
    assert any(n.startswith("ort:") for n in result.notes)
    assert_same_outputs(model, out, **TOL)


def test_plugin_emit_runs_through_reference():
    model = layernorm_model("pow", "div", "g")
    out, result = apply_pass(model, "fuse-layernorm", ctx_options={"emit": "plugin"})
    assert result.changed == 1 and ops(out) == Counter({"SurgeryLayerNorm": 1})
    node, attrs = _node(out, "SurgeryLayerNorm")
    assert attrs["plugin_version"] == b"1" and attrs["plugin_namespace"] == b"onnx_surgery"
    feeds = random_feeds(spec_from_model(model), seed=0)
    np.testing.assert_allclose(run_with_references(out, feeds)["y"], run_ort(model, feeds)["y"], **TOL)


def _logsoftmax_side(model):
    """Add a LogSoftmax branch: its axis semantics changed at opset 13, so raising opset 12 is refused."""
    g = model.graph
    nodes = list(g.node) + [helper.make_node("LogSoftmax", ["x"], ["ls"], name="ls", axis=-1)]
    return make_model(nodes, list(g.input), list(g.output) + [tensor("ls", [2, 4, 8])], list(g.initializer), opset=12)


@pytest.mark.parametrize("kwargs,reason", [
    (dict(axes=(1,)), "reduce-axes-not-last"),
    (dict(exponent=3.0), "pow-exponent-not-2"),
    (dict(eps=np.full(8, 1e-5)), "eps-not-scalar"),
])
def test_rejections_leave_graph_unchanged(kwargs, reason):
    model = layernorm_model(**kwargs)
    out, result = apply_pass(model, "fuse-layernorm")
    assert result.changed == 0
    assert result.stats[f"rejected:{reason}"] >= 1
    assert same_graph(model, out)


def test_reciprocal_numerator_must_be_one():
    model = layernorm_model("pow", "div1-mul", "g-b", one=2.0)
    out, result = apply_pass(model, "fuse-layernorm")
    assert result.changed == 0 and result.stats["rejected:reciprocal-numerator-not-1"] >= 1
    assert same_graph(model, out)


def test_opset_raise_refused_rejects_and_notes():
    model = _logsoftmax_side(layernorm_model(opset=12))
    out, result = apply_pass(model, "fuse-layernorm")
    assert result.changed == 0 and result.stats["rejected:opset-raise-refused"] >= 1
    assert any("LogSoftmax" in n for n in result.notes)
    assert same_graph(model, out)


def test_scale_of_wrong_shape_is_left_as_a_mul():
    model = layernorm_model("pow", "div", "g", gamma=np.tile(GAMMA, (4, 1)))
    out, result = apply_pass(model, "fuse-layernorm")
    assert result.stats["rejected:scale-shape-mismatch"] == 1
    assert result.changed == 1 and ops(out) == Counter({"LayerNormalization": 1, "Mul": 1})
    assert_same_outputs(model, out, **TOL)


def test_intermediate_graph_output_blocks_the_match():
    model = layernorm_model(extra_output=True)
    out, result = apply_pass(model, "fuse-layernorm")
    assert result.changed == 0 and same_graph(model, out)


def test_second_run_changes_nothing():
    out, _ = apply_pass(layernorm_model(), "fuse-layernorm")
    again, result = apply_pass(out, "fuse-layernorm")
    assert result.changed == 0 and same_graph(out, again)


def test_explain_lists_candidates_with_reasons():
    _, result = apply_pass(layernorm_model(exponent=3.0), "fuse-layernorm", explain=True)
    assert {s["reason"] for s in result.sites if s["outcome"] == "rejected"} == {"pow-exponent-not-2"}
    assert {s["outcome"] for s in result.sites} == {"rejected", "unmatched"}  # both ReduceMeans stay unmatched
