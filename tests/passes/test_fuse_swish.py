"""fuse-swish: x*Sigmoid(alpha*x) -> Swish-24 (onnx) or com.microsoft QuickGelu (ort)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import helper

from surgery import PassContext, UserInputError, parse_pipeline, to_graph
from tests.builders import const, make_model, tensor
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph

TOL = dict(rtol=1e-5, atol=1e-6)


def _silu_model(*, x_first: bool = True, alpha: float | None = None, alpha_shape=(), extra_sigmoid_user: bool = False):
    """y = Relu(x) * Sigmoid(alpha * Relu(x)) (alpha left out: SiLU), operands in either order."""
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="relu")]
    inits = []
    src = "h"
    if alpha is not None:
        inits.append(const("alpha", np.full(alpha_shape, alpha, np.float32) if alpha_shape else np.float32(alpha)))
        nodes.append(helper.make_node("Mul", ["h", "alpha"] if x_first else ["alpha", "h"], ["sx"], name="scale"))
        src = "sx"
    nodes.append(helper.make_node("Sigmoid", [src], ["s"], name="sigmoid"))
    nodes.append(helper.make_node("Mul", ["h", "s"] if x_first else ["s", "h"], ["y"], name="mul"))
    outputs = [tensor("y", [2, 8])]
    if extra_sigmoid_user:
        outputs.append(tensor("s", [2, 8]))
    return make_model(nodes, [tensor("x", [2, 8])], outputs, inits, opset=17)


def _attrs(model: onnx.ModelProto, op: str) -> dict:
    node = next(n for n in model.graph.node if n.op_type == op)
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("x_first", [True, False])
@pytest.mark.parametrize("alpha", [None, 0.5])
def test_silu_and_scaled_forms_fuse_to_swish24(x_first, alpha):
    model = _silu_model(x_first=x_first, alpha=alpha)
    out, result = apply_pass(model, "fuse-swish")
    assert result.changed == 1 and ops(out) == Counter({"Relu": 1, "Swish": 1})
    assert _attrs(out, "Swish")["alpha"] == pytest.approx(alpha or 1.0)
    assert out.opset_import[0].version == 24 and "opset raised 17 -> 24 for fuse-swish" in result.notes
    assert_same_outputs(model, out, **TOL)
    again, second = apply_pass(out, "fuse-swish")
    assert second.changed == 0 and same_graph(again, out)


def test_ort_emit_is_quickgelu_with_alpha_and_keeps_the_opset():
    model = _silu_model(alpha=0.5)
    out, result = apply_pass(model, "fuse-swish", ctx_options={"emit": "ort"})
    assert result.changed == 1 and ops(out) == Counter({"Relu": 1, "QuickGelu": 1})
    node = next(n for n in out.graph.node if n.op_type == "QuickGelu")
    assert node.domain == "com.microsoft" and _attrs(out, "QuickGelu")["alpha"] == pytest.approx(0.5)
    assert out.opset_import[0].version == 17
    assert_same_outputs(model, out, **TOL)


def test_a_vector_alpha_is_rejected_with_the_tensor_named():
    model = _silu_model(alpha=0.5, alpha_shape=(8,))
    out, result = apply_pass(model, "fuse-swish", explain=True)
    assert result.changed == 0 and result.stats["rejected:alpha-not-scalar"] == 1
    assert {"site": "sigmoid", "outcome": "rejected", "reason": "alpha-not-scalar", "tensor": "alpha"} in result.sites
    assert ops(out) == ops(model)


def test_a_sigmoid_read_outside_the_match_is_left_and_explained():
    model = _silu_model(extra_sigmoid_user=True)
    out, result = apply_pass(model, "fuse-swish", explain=True)
    assert result.changed == 0 and ops(out) == ops(model)
    assert [s["outcome"] for s in result.sites] == ["unmatched"] and result.sites[0]["site"] == "sigmoid"


def test_plugin_emit_and_wrong_order_are_refused():
    with pytest.raises(UserInputError, match="fuse-swish: emit must be one of onnx, ort"):
        from surgery.registry import get_pass
        get_pass("fuse-swish")(to_graph(_silu_model()), PassContext(options={"emit": "plugin"}))
    with pytest.raises(UserInputError, match="fuse-swish cannot emit 'plugin'"):
        parse_pipeline("fuse-swish", emit="plugin")
    with pytest.raises(UserInputError, match="runs fuse-swish before fuse-groupnorm"):
        parse_pipeline("fuse-swish,fuse-groupnorm")
