from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from onnx import helper

from converter.runtime.reference_runner import run_with_references
from converter.runtime.numerics import random_feeds, run_ort, spec_from_model
from surgery import PassContext, get_pass, to_graph
from surgery.errors import UserInputError
from tests.fusion_builders import pre_ln_model, skip_layernorm_model
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
    assert result.stats["matched"] == 1  # the bias Add's other operand order is not a candidate
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


def test_plugin_rejects_pre_ln_sum_reused_elsewhere():
    """The TensorRT plugin has no output for the residual sum, so a sum read elsewhere keeps the site."""
    for model in (skip_layernorm_model(reuse_sum=True), pre_ln_model(sum_output=True)):
        out, result = apply_pass(model, "fuse-skip-layernorm", explain=True, ctx_options={"emit": "plugin"})
        assert result.changed == 0 and same_graph(model, out)
        assert result.stats["rejected:residual-sum-used-elsewhere"] >= 1
        assert {s["reason"] for s in result.sites if s["outcome"] == "rejected"} == {"residual-sum-used-elsewhere"}


def test_ort_graph_output_sum_is_kept_as_the_sum_output():
    model = skip_layernorm_model(reuse_sum=True)
    out, result = apply_pass(model, "fuse-skip-layernorm", ctx_options={"emit": "ort"})
    assert result.changed == 1 and ops(out) == Counter({"SkipLayerNormalization": 1})
    node, _ = _attrs(out, "SkipLayerNormalization")
    assert list(node.output) == ["y", "", "", "sum"] and [o.name for o in out.graph.output] == ["y", "sum"]
    assert_same_outputs(model, out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sum_output", [False, True])
def test_ort_pre_ln_blocks(sum_output):
    """Block 1's sum feeds its LN and block 2's residual Add; block 2's sum feeds only the final LN
    (post-LN form) or is also a graph output. Both fuse; the first LN (no residual) stays."""
    model = pre_ln_model(sum_output=sum_output)
    out, result = apply_pass(model, "fuse-skip-layernorm", ctx_options={"emit": "ort"})
    assert result.changed == 2
    assert ops(out) == Counter({"SkipLayerNormalization": 2, "LayerNormalization": 1, "MatMul": 2})
    first, last = [n for n in out.graph.node if n.op_type == "SkipLayerNormalization"]
    assert list(first.input[1:2]) == ["x"] and len(first.input) == 5  # the bias folded
    assert list(first.output[1:]) == ["", "", "s1"]  # block 2's residual reads the fused node's sum output
    assert last.input[0] == "s1" and len(last.input) == 4  # no bias Add in block 2
    assert list(last.output) == (["y", "", "", "s2"] if sum_output else ["y"])
    assert [o.name for o in out.graph.output] == [o.name for o in model.graph.output]
    assert_same_outputs(model, out, rtol=1e-5, atol=1e-5)
    again, rerun = apply_pass(out, "fuse-skip-layernorm", ctx_options={"emit": "ort"})
    assert rerun.changed == 0 and same_graph(out, again)


def test_ort_pre_ln_bias_add_used_elsewhere_is_not_folded():
    """``h + bias`` is also a graph output: only the residual Add and the LN fuse, with ``h + bias`` as the input."""
    model = pre_ln_model(bias_reused=True)
    out, result = apply_pass(model, "fuse-skip-layernorm", ctx_options={"emit": "ort"})
    assert result.changed == 2
    assert ops(out) == Counter({"SkipLayerNormalization": 2, "LayerNormalization": 1, "MatMul": 2, "Add": 1})
    first = next(n for n in out.graph.node if n.op_type == "SkipLayerNormalization")
    assert list(first.input[:2]) == ["hb", "x"] and len(first.input) == 4 and first.output[3] == "s1"
    assert_same_outputs(model, out, rtol=1e-5, atol=1e-5)
    again, rerun = apply_pass(out, "fuse-skip-layernorm", ctx_options={"emit": "ort"})
    assert rerun.changed == 0 and same_graph(out, again)


def test_second_run_changes_nothing():
    out, _ = apply_pass(skip_layernorm_model(), "fuse-skip-layernorm", ctx_options={"emit": "ort"})
    again, result = apply_pass(out, "fuse-skip-layernorm", ctx_options={"emit": "ort"})
    assert result.changed == 0 and same_graph(out, again)
