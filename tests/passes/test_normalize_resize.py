from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import helper

from onnx.reference import ReferenceEvaluator

from surgery import to_graph, to_model
from converter.runtime.numerics import run_ort
from tests.builders import const, make_model, tensor
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph


def untouched(out, model) -> bool:
    """``out`` equals ``model`` after the same import/export round trip (nothing was rewritten)."""
    return same_graph(out, to_model(to_graph(copy.deepcopy(model)), like=model))


def _cubic_1d(mode="cubic", sizes=False, runtime=False, ctm="half_pixel"):
    ins = ["x", "", "", "s"] if sizes else ["x", "", "s"]
    node = helper.make_node("Resize", ins, ["y"], name="resize", mode=mode, coordinate_transformation_mode=ctm)
    value = np.array([1, 2, 16], np.int64) if sizes else np.array([1, 1, 2], np.float32)
    inputs = [tensor("x", [1, 2, 8])]
    if runtime:
        inputs.append(tensor("s", [3], onnx.TensorProto.FLOAT))
        return make_model([node], inputs, [tensor("y", [1, 2, 16])])
    return make_model([node], inputs, [tensor("y", [1, 2, 16])], [const("s", value)])


@pytest.mark.parametrize("sizes", [False, True])
@pytest.mark.parametrize("ctm", ["half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel"])
def test_cubic_1d_becomes_2d(sizes, ctm):
    model = _cubic_1d(sizes=sizes, ctm=ctm)
    out, result = apply_pass(model, "normalize-resize")
    assert result.changed == 1
    assert ops(out) == Counter({"Unsqueeze": 1, "Resize": 1, "Squeeze": 1})
    # onnxruntime refuses 1-D cubic too, so the original runs on the ONNX reference evaluator
    x = np.random.default_rng(0).standard_normal((1, 2, 8)).astype(np.float32)
    (ref,) = ReferenceEvaluator(model).run(None, {"x": x})
    np.testing.assert_allclose(run_ort(out, {"x": x})["y"], ref, rtol=1e-5, atol=1e-5)
    again, second = apply_pass(out, "normalize-resize")
    assert second.changed == 0 and same_graph(again, out)


def test_linear_1d_is_left_alone():
    model = _cubic_1d(mode="linear")
    out, result = apply_pass(model, "normalize-resize")
    assert result.changed == 0 and untouched(out, model)


def _aspect(policy="not_larger", target=(16, 15), x_shape=(1, 2, 8, 6)):
    node = helper.make_node("Resize", ["x", "", "", "sz"], ["y"], name="resize", mode="linear",
                            keep_aspect_ratio_policy=policy, axes=[2, 3])
    return make_model([node], [tensor("x", list(x_shape))], [tensor("y", [1, 2, None, None])],
                      [const("sz", np.array(target, np.int64))], opset=18)


@pytest.mark.parametrize("policy,want", [("not_larger", [16, 12]), ("not_smaller", [20, 15])])
def test_keep_aspect_ratio_becomes_stretch(policy, want):
    model = _aspect(policy)
    out, result = apply_pass(model, "normalize-resize")
    assert result.changed == 1 and ops(out) == Counter({"Resize": 1})
    node = out.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["keep_aspect_ratio_policy"] == b"stretch"
    sizes = next(t for t in out.graph.initializer if t.name == node.input[3])
    assert onnx.numpy_helper.to_array(sizes).tolist() == want
    assert_same_outputs(model, out)


@pytest.mark.parametrize("model,reason", [
    (lambda: _cubic_1d(runtime=True), "scales-not-constant"),
    (lambda: _cubic_1d(ctm="tf_crop_and_resize"), "crop-and-resize"),
    (lambda: _aspect(target=(12, 7)), "aspect-rounding"),
])
def test_rejects(model, reason):
    m = model()
    out, result = apply_pass(m, "normalize-resize")
    assert result.changed == 0 and result.stats[f"rejected:{reason}"] == 1
    assert untouched(out, m)


def test_rejects_unknown_input_shape():
    m = _aspect(x_shape=(1, 2, "h", "w"))
    out, result = apply_pass(m, "normalize-resize")
    assert result.changed == 0 and result.stats["rejected:input-shape-unknown"] == 1
