from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from onnx import helper

from converter.runtime.reference_runner import run_with_references
from converter.runtime.numerics import random_feeds, run_ort, spec_from_model
from surgery import PassContext, get_pass, to_graph
from surgery.errors import UserInputError
from tests.fusion_builders import skip_layernorm_model
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph

TOL = dict(rtol=1e-4, atol=1e-4)


def _attrs(model, op):
    (node,) = [n for n in model.graph.node if n.op_type == op]
    return node, {a.name: helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("bias", ["bias", ""])
def test_ort_skip_layernorm(bias):
    model = skip_layernorm_model(bias, eps=1e-5)
    out, result = apply_pass(model, "fuse-skip-layernorm", ctx_options={"emit": "ort"})
    assert result.changed == 1 and ops(out) == Counter({"SkipLayerNormalization": 1})
    node, attrs = _attrs(out, "SkipLayerNormalization")
    assert node.domain == "com.microsoft" and attrs["epsilon"] == pytest.approx(1e-5)
    assert list(node.input[:2]) == ["h", "skip"] and len(node.input) == (5 if bias else 4)
    assert [o.name for o in out.graph.output] == ["y"]
    assert_same_outputs(model, out, **TOL)


def test_plugin_skip_layernorm_through_reference():
    model = skip_layernorm_model(eps=1e-12)
    out, result = apply_pass(model, "fuse-skip-layernorm", ctx_options={"emit": "plugin"})
    assert result.changed == 1
    assert ops(out) == Counter({"CustomSkipLayerNormPluginDynamic": 1, "Unsqueeze": 2, "Squeeze": 1})
    _, attrs = _attrs(out, "CustomSkipLayerNormPluginDynamic")
    assert attrs["ld"] == 8 and attrs["type_id"] == 0 and attrs["plugin_version"] == b"1"
    assert any("no epsilon field" in n for n in result.notes)
    feeds = random_feeds(spec_from_model(model), seed=0)
    np.testing.assert_allclose(run_with_references(out, feeds)["y"], run_ort(model, feeds)["y"], **TOL)


def test_onnx_emit_is_refused():
    graph = to_graph(skip_layernorm_model())
    with pytest.raises(UserInputError):
        get_pass("fuse-skip-layernorm")(graph, PassContext(options={"emit": "onnx"}))


@pytest.mark.parametrize("kwargs,emit,reason", [
    (dict(eps=1e-5), "plugin", "eps-not-supported-by-plugin"),
    (dict(skip_shape=(1, 4, 8)), "ort", "residual-shapes-differ"),
])
def test_rejections_leave_graph_unchanged(kwargs, emit, reason):
    model = skip_layernorm_model(**kwargs)
    out, result = apply_pass(model, "fuse-skip-layernorm", ctx_options={"emit": emit})
    assert result.changed == 0 and result.stats[f"rejected:{reason}"] >= 1
    assert same_graph(model, out)


def test_pre_ln_sum_reused_elsewhere_is_explained():
    model = skip_layernorm_model(reuse_sum=True)
    out, result = apply_pass(model, "fuse-skip-layernorm", explain=True, ctx_options={"emit": "ort"})
    assert result.changed == 0 and same_graph(model, out)
    assert {"residual-sum-used-elsewhere"} <= {s["reason"] for s in result.sites}


def test_second_run_changes_nothing():
    out, _ = apply_pass(skip_layernorm_model(), "fuse-skip-layernorm", ctx_options={"emit": "ort"})
    again, result = apply_pass(out, "fuse-skip-layernorm", ctx_options={"emit": "ort"})
    assert result.changed == 0 and same_graph(out, again)
