from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import onnx
import pytest

from passes.plugins import GELU_PLUGIN
from converter.runtime.numerics import run_ort
from tests.attention_builders import gelu_model
from surgery import to_graph, to_model
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph

TOL = dict(rtol=1e-4, atol=1e-4)
FORMS = ["erf-div", "erf-mul", "tanh-pow", "tanh-mul"]
OUTERS = ["x-first", "half-first", "half-inner"]


def _roundtrip(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model as an untouched pass would export it (GS orders initializers its own way)."""
    return to_model(to_graph(copy.deepcopy(model)), like=model)


def _attrs(model: onnx.ModelProto, op: str) -> dict:
    node = next(n for n in model.graph.node if n.op_type == op)
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("outer", OUTERS)
@pytest.mark.parametrize("const_first", [False, True])
def test_every_form_fuses_to_gelu20(form, outer, const_first):
    model = gelu_model(form, outer, const_first)
    out, result = apply_pass(model, "fuse-gelu")
    assert result.changed == 1
    assert ops(out) == Counter({"Gelu": 1, "Identity": 1})
    assert _attrs(out, "Gelu") == ({"approximate": b"tanh"} if form.startswith("tanh") else {})
    assert out.opset_import[0].version == 20
    assert [o.name for o in out.graph.output] == ["y"]
    assert any("17 -> 20" in n for n in result.notes)
    assert_same_outputs(model, out, **TOL)


@pytest.mark.parametrize("form,op", [("erf-div", "Gelu"), ("tanh-pow", "FastGelu"), ("quick", "QuickGelu")])
def test_ort_emit_uses_com_microsoft_ops(form, op):
    model = gelu_model(form)
    out, result = apply_pass(model, "fuse-gelu", ctx_options={"emit": "ort"})
    assert result.changed == 1
    assert ops(out) == Counter({op: 1, "Identity": 1})
    assert next(n for n in out.graph.node if n.op_type == op).domain == "com.microsoft"
    assert_same_outputs(model, out, **TOL)


@pytest.mark.parametrize("form,op", [("erf-div", "BiasGelu"), ("tanh-pow", "FastGelu")])
def test_ort_emit_folds_the_bias_add(form, op):
    model = gelu_model(form, bias=True, const_first=True)
    out, result = apply_pass(model, "fuse-gelu", ctx_options={"emit": "ort"})
    assert result.changed == 1
    assert ops(out) == Counter({op: 1, "Identity": 1})
    assert len(next(n for n in out.graph.node if n.op_type == op).input) == 2
    assert_same_outputs(model, out, **TOL)


def test_onnx_emit_keeps_the_bias_add():
    out, result = apply_pass(gelu_model("erf-div", bias=True), "fuse-gelu")
    assert result.changed == 1
    assert ops(out) == Counter({"Add": 1, "Gelu": 1, "Identity": 1})


@pytest.mark.parametrize("form,approx", [("erf-mul", 0), ("tanh-mul", 1), ("quick", 2)])
def test_plugin_emit_matches_reference(form, approx):
    model = gelu_model(form, "half-first")
    out, result = apply_pass(model, "fuse-gelu", ctx_options={"emit": "plugin"})
    assert result.changed == 1
    assert ops(out) == Counter({"SurgeryGelu": 1, "Identity": 1})
    attrs = _attrs(out, "SurgeryGelu")
    assert attrs["approximate"] == approx and attrs["plugin_version"] == b"1" and attrs["plugin_namespace"] == b"onnx_surgery"
    x = np.random.default_rng(0).standard_normal((2, 4, 8)).astype(np.float32)
    want = run_ort(model, {"x": x})["y"]
    got = GELU_PLUGIN.reference([x], {"approximate": approx})[0]
    np.testing.assert_allclose(got, want, **TOL)


def test_plugin_emit_through_reference_runner():
    runner = pytest.importorskip("converter.runtime.reference_runner")
    model = gelu_model("tanh-pow")
    out, _ = apply_pass(model, "fuse-gelu", ctx_options={"emit": "plugin"})
    x = np.random.default_rng(0).standard_normal((2, 4, 8)).astype(np.float32)
    got = runner.run_with_references(out, {"x": x})["y"]
    np.testing.assert_allclose(got, run_ort(model, {"x": x})["y"], **TOL)


@pytest.mark.parametrize("model,reason,emit", [
    (gelu_model("erf-div", consts={"k": 1.5}), "erf-constant-mismatch", "onnx"),
    (gelu_model("erf-mul", consts={"half": 0.6}), "erf-constant-mismatch", "onnx"),
    (gelu_model("tanh-pow", consts={"kappa": 0.05}), "tanh-constant-mismatch", "onnx"),
    (gelu_model("tanh-pow", consts={"three": 2.0}), "tanh-constant-mismatch", "onnx"),
    (gelu_model("quick", consts={"alpha": 1.5}), "sigmoid-constant-mismatch", "ort"),
    (gelu_model("quick"), "no-onnx-op", "onnx"),
])
def test_rejections_leave_graph_unchanged(model, reason, emit):
    before = _roundtrip(model)
    out, result = apply_pass(model, "fuse-gelu", ctx_options={"emit": emit})
    assert result.changed == 0
    assert result.stats[f"rejected:{reason}"] >= 1
    assert same_graph(out, before)
    assert out.opset_import[0].version == 17


def test_opset_raise_refused_is_reported():
    model = gelu_model("erf-div", opset=9)
    # Upsample changes meaning at opset 10, so raise_opset refuses to lift this graph to 20
    model.graph.node.append(onnx.helper.make_node("Upsample", ["x", "scales"], ["u"], name="up", mode="nearest"))
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.ones(3, np.float32), "scales"))
    model.graph.output.append(onnx.helper.make_tensor_value_info("u", onnx.TensorProto.FLOAT, [2, 4, 8]))
    before = _roundtrip(model)
    out, result = apply_pass(model, "fuse-gelu")
    assert result.changed == 0
    assert result.stats["rejected:opset-raise-refused"] == 1
    assert any("refused: Upsample" in n for n in result.notes)
    assert same_graph(out, before)


def test_internal_tensor_used_elsewhere_blocks_the_match():
    model = gelu_model("erf-div", extra_output="t2")  # t2 = Erf output, also a graph output
    out, result = apply_pass(model, "fuse-gelu", explain=True)
    assert result.changed == 0
    assert same_graph(out, _roundtrip(model))
    assert [s["outcome"] for s in result.sites] == ["unmatched"]


def test_second_run_changes_nothing():
    out, _ = apply_pass(gelu_model("tanh-mul", "half-inner"), "fuse-gelu")
    again, result = apply_pass(out, "fuse-gelu")
    assert result.changed == 0
    assert same_graph(again, out)


def test_explain_lists_candidates_and_reasons():
    _, result = apply_pass(gelu_model("erf-div", consts={"k": 2.0}), "fuse-gelu", explain=True)
    assert result.sites == [{"site": "erf2", "outcome": "rejected", "reason": "erf-constant-mismatch", "tensor": "c_k"}]
    _, result = apply_pass(gelu_model("erf-div"), "fuse-gelu", explain=True)
    assert result.sites[0]["site"] == "erf2" and result.sites[0]["outcome"].startswith("fused:erf-div")
