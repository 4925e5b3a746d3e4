from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from onnx import helper, numpy_helper

from converter.runtime.reference_runner import run_with_references
from converter.runtime.numerics import random_feeds, run_ort, spec_from_model
from tests.builders import make_model, tensor
from tests.fusion_builders import GAMMA, rmsnorm_model
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph

TOL = dict(rtol=1e-4, atol=1e-4)


def _node(model, op):
    (node,) = [n for n in model.graph.node if n.op_type == op]
    return node, {a.name: helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("square,form,affine,opset", [
    ("pow", "div1-mul", "gr", 17), ("pow", "recip-mul", "g", 18), ("mul", "div", "g", 17),
    ("pow", "recip-mulr", "", 18), ("mul", "div1-mulr", "gr", 14),
])
def test_rmsnorm_spellings_fuse(square, form, affine, opset):
    model = rmsnorm_model(square, form, affine, opset=opset)
    out, result = apply_pass(model, "fuse-rmsnorm")
    assert result.changed == 1
    assert ops(out) == Counter({"RMSNormalization": 1} | ({"Identity": 1} if not affine else {}))
    node, attrs = _node(out, "RMSNormalization")
    assert attrs["axis"] == -1 and attrs["epsilon"] == pytest.approx(1e-6) and attrs["stash_type"] == 1
    assert max(o.version for o in out.opset_import if o.domain == "") == 23
    assert [o.name for o in out.graph.output] == ["y"]
    assert_same_outputs(model, out, **TOL)


def test_llama_fp32_upcast_island():
    model = rmsnorm_model(fp16_island=True, residual=True)
    out, result = apply_pass(model, "fuse-rmsnorm")
    assert result.changed == 1
    assert ops(out) == Counter({"RMSNormalization": 1, "Cast": 1, "Identity": 1})  # the Cast still feeds the residual
    assert _node(out, "RMSNormalization")[0].input[0] == "x"
    assert [o.name for o in out.graph.output] == ["y", "res"]
    assert_same_outputs(model, out, rtol=1e-2, atol=1e-2)


def test_ort_emit_notes_the_op_choice():
    model = rmsnorm_model()
    out, result = apply_pass(model, "fuse-rmsnorm", ctx_options={"emit": "ort"})
    assert result.changed == 1 and ops(out) == Counter({"RMSNormalization": 1})
    assert any("SimplifiedLayerNormalization" in n for n in result.notes)
    assert_same_outputs(model, out, **TOL)


def test_plugin_emit_runs_through_reference():
    model = rmsnorm_model()
    out, result = apply_pass(model, "fuse-rmsnorm", ctx_options={"emit": "plugin"})
    assert result.changed == 1 and ops(out) == Counter({"SurgeryRMSNorm": 1})
    np.testing.assert_allclose(numpy_helper.to_array(_node(out, "SurgeryRMSNorm")[1]["gamma"]), GAMMA, rtol=1e-6)
    feeds = random_feeds(spec_from_model(model), seed=0)
    np.testing.assert_allclose(run_with_references(out, feeds)["y"], run_ort(model, feeds)["y"], **TOL)


def _gridsample_side(model):
    """A GridSample branch: its schema changed at opset 20, so raising 17 -> 23 is refused."""
    g = model.graph
    nodes = list(g.node) + [helper.make_node("GridSample", ["img", "grid"], ["gs"], name="gs")]
    inputs = list(g.input) + [tensor("img", [1, 1, 2, 2]), tensor("grid", [1, 2, 2, 2])]
    return make_model(nodes, inputs, list(g.output) + [tensor("gs", [1, 1, 2, 2])], list(g.initializer), opset=17)


@pytest.mark.parametrize("kwargs,reason", [
    (dict(axes=(1,)), "reduce-axes-not-last"),
    (dict(exponent=3.0), "pow-exponent-not-2"),
    (dict(eps=np.full(8, 1e-6)), "eps-not-scalar"),
    (dict(mean_centred=True, affine="g"), "input-is-mean-centred"),
])
def test_rejections_leave_graph_unchanged(kwargs, reason):
    model = rmsnorm_model(**kwargs)
    out, result = apply_pass(model, "fuse-rmsnorm")
    assert result.changed == 0 and result.stats[f"rejected:{reason}"] >= 1
    assert same_graph(model, out)


def test_opset_raise_refused():
    model = _gridsample_side(rmsnorm_model())
    out, result = apply_pass(model, "fuse-rmsnorm")
    assert result.changed == 0 and result.stats["rejected:opset-raise-refused"] >= 1
    assert any("GridSample" in n for n in result.notes) and same_graph(model, out)


def test_weight_of_wrong_shape_stays_a_mul():
    model = rmsnorm_model(affine="g", gamma=np.tile(GAMMA, (4, 1)))
    out, result = apply_pass(model, "fuse-rmsnorm")
    assert result.stats["rejected:scale-shape-mismatch"] == 1
    assert result.changed == 1 and ops(out) == Counter({"RMSNormalization": 1, "Mul": 1})
    assert_same_outputs(model, out, **TOL)


def test_second_run_changes_nothing():
    out, _ = apply_pass(rmsnorm_model(), "fuse-rmsnorm")
    again, result = apply_pass(out, "fuse-rmsnorm")
    assert result.changed == 0 and same_graph(out, again)


def test_explain_reports_rejection():
    _, result = apply_pass(rmsnorm_model(axes=(1,)), "fuse-rmsnorm", explain=True)
    assert {s["reason"] for s in result.sites if s["outcome"] == "rejected"} == {"reduce-axes-not-last"}


def test_opset_raise_converts_untouched_reduces():
    """The raise 17 -> 23 moves other ReduceMean axes to an input; the dry run must not have eaten them."""
    base = rmsnorm_model()
    g = base.graph
    side = helper.make_node("ReduceMean", ["x"], ["m1"], name="side_mean", axes=[1], keepdims=1)
    model = make_model(list(g.node) + [side], list(g.input), list(g.output) + [tensor("m1", [2, 1, 8])],
                       list(g.initializer), opset=17)
    out, result = apply_pass(model, "fuse-rmsnorm")
    assert result.changed == 1 and ops(out) == Counter({"RMSNormalization": 1, "ReduceMean": 1})
    assert_same_outputs(model, out, **TOL)
