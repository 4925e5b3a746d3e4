from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from onnx import helper

from converter.runtime.reference_runner import run_with_references
from converter.runtime.numerics import random_feeds, run_ort, spec_from_model
from surgery import PassContext, get_pass, to_graph
from surgery.errors import UserInputError
from tests.builders import make_model, tensor
from tests.fusion_builders import groupnorm_model
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph

TOL = dict(rtol=1e-4, atol=1e-4)


def _attrs(model, op):
    (node,) = [n for n in model.graph.node if n.op_type == op]
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("core,affine,shape_back", [
    ("instnorm", "g-b", "shape"), ("instnorm", "gr-br", "const"), ("reduce-pow", "g-b", "shape"),
    ("reduce-mul", "gr-b", "const"), ("instnorm", "", "shape"),
])
def test_pytorch_groupnorm_fuses_to_groupnormalization_21(core, affine, shape_back):
    model = groupnorm_model(core, affine, shape_back=shape_back)
    out, result = apply_pass(model, "fuse-groupnorm")
    assert result.changed == 1
    assert ops(out) == Counter({"GroupNormalization": 1} | ({"Identity": 1} if not affine else {}))
    attrs = _attrs(out, "GroupNormalization")
    assert attrs["num_groups"] == 4 and attrs["epsilon"] == pytest.approx(1e-5)
    assert max(o.version for o in out.opset_import if o.domain == "") == 21
    assert [o.name for o in out.graph.output] == ["y"]
    assert_same_outputs(model, out, **TOL)


def test_silu_stays_separate_for_onnx():
    model = groupnorm_model(silu=True)
    out, result = apply_pass(model, "fuse-groupnorm")
    assert result.changed == 1 and ops(out) == Counter({"GroupNormalization": 1, "Sigmoid": 1, "Mul": 1})
    assert_same_outputs(model, out, **TOL)


@pytest.mark.parametrize("silu", [True, False])
def test_plugin_absorbs_silu(silu):
    model = groupnorm_model(silu=silu)
    out, result = apply_pass(model, "fuse-groupnorm", ctx_options={"emit": "plugin"})
    assert result.changed == 1 and ops(out) == Counter({"SurgeryGroupNorm": 1})
    assert _attrs(out, "SurgeryGroupNorm")["activation"] == int(silu)
    feeds = random_feeds(spec_from_model(model), seed=0)
    np.testing.assert_allclose(run_with_references(out, feeds)["y"], run_ort(model, feeds)["y"], **TOL)


def test_ort_emit_is_refused():
    graph = to_graph(groupnorm_model())
    with pytest.raises(UserInputError):
        get_pass("fuse-groupnorm")(graph, PassContext(options={"emit": "ort"}))


@pytest.mark.parametrize("kwargs,reason", [
    (dict(groups=3), "groups-not-dividing-channels"),
    (dict(in_scale=2.0), "instancenorm-affine-not-identity"),
])
def test_rejections_leave_graph_unchanged(kwargs, reason):
    model = groupnorm_model(**kwargs)
    out, result = apply_pass(model, "fuse-groupnorm")
    assert result.stats[f"rejected:{reason}"] >= 1
    assert result.changed == 0 and same_graph(model, out)


def test_per_channel_gamma_with_leading_one_is_absorbed():
    model = groupnorm_model(gamma=np.full((1, 8, 1, 1), 1.5, np.float32))
    out, result = apply_pass(model, "fuse-groupnorm")
    assert result.changed == 1 and ops(out) == Counter({"GroupNormalization": 1})
    assert_same_outputs(model, out, **TOL)


def test_gamma_that_is_not_per_channel_stays_a_mul():
    model = groupnorm_model(gamma=np.full((3, 1), 1.5, np.float32))
    out, result = apply_pass(model, "fuse-groupnorm")
    assert result.stats["rejected:scale-shape-mismatch"] >= 1
    assert result.changed == 1 and ops(out) == Counter({"GroupNormalization": 1, "Mul": 1, "Add": 1})
    assert_same_outputs(model, out, **TOL)


def test_opset_raise_refused():
    model = groupnorm_model()
    g = model.graph
    nodes = list(g.node) + [helper.make_node("GridSample", ["img", "grid"], ["gs"], name="gs")]
    inputs = list(g.input) + [tensor("img", [1, 1, 2, 2]), tensor("grid", [1, 2, 2, 2])]
    model = make_model(nodes, inputs, list(g.output) + [tensor("gs", [1, 1, 2, 2])], list(g.initializer), opset=17)
    out, result = apply_pass(model, "fuse-groupnorm")
    assert result.changed == 0 and result.stats["rejected:opset-raise-refused"] >= 1
    assert same_graph(model, out)


def test_second_run_changes_nothing():
    out, _ = apply_pass(groupnorm_model(), "fuse-groupnorm")
    again, result = apply_pass(out, "fuse-groupnorm")
    assert result.changed == 0 and same_graph(out, again)


def test_explain():
    _, result = apply_pass(groupnorm_model(in_scale=2.0), "fuse-groupnorm", explain=True)
    assert {s["reason"] for s in result.sites if s["outcome"] == "rejected"} == {"instancenorm-affine-not-identity"}
