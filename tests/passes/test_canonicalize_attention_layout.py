from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import onnx
import pytest

from surgery import to_graph, to_model
from converter.runtime.numerics import run_ort
from tests.helpers import apply_pass, ops, same_graph
from tests.keras_attention_builders import HEADS, HEAD, HIDDEN, SEQ, keras_attention_model

TOL = dict(rtol=1e-5, atol=1e-6)
AROUND = {"MatMul": 3, "Reshape": 4, "Transpose": 1}  # projections, head split, head merge: untouched
CANONICAL = Counter({"Transpose": 3, "MatMul": 2, "Softmax": 1})


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    batch = model.graph.input[0].type.tensor_type.shape.dim[0].dim_value or 3
    return {"x": np.random.default_rng(0).standard_normal((batch, SEQ, HIDDEN)).astype(np.float32)}


def _same_outputs(a: onnx.ModelProto, b: onnx.ModelProto) -> None:
    feeds = _feeds(a)
    np.testing.assert_allclose(run_ort(b, feeds)["y"], run_ort(a, feeds)["y"], **TOL)


def _roundtrip(model: onnx.ModelProto) -> onnx.ModelProto:
    return to_model(to_graph(copy.deepcopy(model)), like=model)


@pytest.mark.parametrize("scaled", [True, False])
@pytest.mark.parametrize("dynamic", [True, False])
def test_keras_einsum_core_becomes_the_4d_form(scaled, dynamic):
    model = keras_attention_model(scaled=scaled, dynamic=dynamic)
    out, result = apply_pass(model, "canonicalize-attention-layout")
    assert result.changed == 1
    assert [s["outcome"] for s in result.sites] == [f"fused:{'scaled' if scaled else 'plain'}/{'dynamic' if dynamic else 'const'}:"
                                                    + ("k" * (scaled + 2 * dynamic))]
    assert ops(out) == Counter(AROUND) + CANONICAL + Counter({"Mul": 1} if scaled else {})
    softmax = next(n for n in out.graph.node if n.op_type == "Softmax")
    assert softmax.name == "softmax" and softmax.attribute[0].i == -1
    assert [o.name for o in out.graph.output] == ["y"]
    _same_outputs(model, out)


def test_canonical_form_then_fuses_to_attention():
    model = keras_attention_model()
    canon, _ = apply_pass(model, "canonicalize-attention-layout")
    fused, result = apply_pass(canon, "fuse-attention")
    assert result.changed == 1
    assert [s["outcome"] for s in result.sites] == ["fused:kbshd/qmul/none/0:k"]
    attn = next(n for n in fused.graph.node if n.op_type == "Attention")
    assert onnx.helper.get_attribute_value(attn.attribute[0]) == pytest.approx(HEAD ** -0.5)
    _same_outputs(model, fused)


def test_ort_emit_reads_the_head_count_off_the_new_tensors():
    canon, _ = apply_pass(keras_attention_model(), "canonicalize-attention-layout")
    fused, result = apply_pass(canon, "fuse-attention", ctx_options={"emit": "ort"})
    # self-attention whose Q/K/V are projections of one input: packed into com.microsoft.Attention
    attn = next(n for n in fused.graph.node if n.op_type == "Attention")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in attn.attribute}
    assert result.changed == 1 and attn.domain == "com.microsoft" and attrs["num_heads"] == HEADS


def _assert_rejected(model: onnx.ModelProto, reason: str) -> None:
    before = _roundtrip(model)
    out, result = apply_pass(model, "canonicalize-attention-layout")
    assert result.changed == 0
    assert result.stats[f"rejected:{reason}"] >= 1, result.stats
    assert same_graph(out, before)


def test_unknown_head_dims_are_rejected():
    model = keras_attention_model()
    del model.graph.value_info[:]  # no shapes: H and D cannot be read off Q/K/V
    _assert_rejected(model, "dims-unknown")


def test_other_squeeze_axes_are_rejected():
    _assert_rejected(keras_attention_model(dynamic=False, score_target=([2, HEADS, 1, SEQ, SEQ], 2)), "axes-mismatch")


def test_unproven_constant_target_is_rejected():
    _assert_rejected(keras_attention_model(dynamic=False, flat_q=[-1, SEQ, HEAD]), "target-unproven")


def test_unproven_dynamic_plumbing_is_rejected():
    _assert_rejected(keras_attention_model(gather_idx=(1, 0)), "target-unproven")


def test_per_channel_query_scale_stays_outside_the_site():
    model = keras_attention_model(scale_shape=(HEAD,))
    out, result = apply_pass(model, "canonicalize-attention-layout")
    assert result.stats["rejected:scale-not-scalar"] == 1  # the scaled variant refuses; the plain one takes Q·c as Q
    assert result.changed == 1 and [s["outcome"] for s in result.sites][-1] == "fused:plain/dynamic:kk"
    mul = next(n for n in out.graph.node if n.op_type == "Mul")
    assert mul.name == "q_scale"
    _same_outputs(model, out)


def test_internal_tensor_as_graph_output_is_unmatched_and_explained():
    model = keras_attention_model(extra_output="probs")
    out, result = apply_pass(model, "canonicalize-attention-layout", explain=True)
    assert result.changed == 0 and same_graph(out, _roundtrip(model))
    assert result.sites == [{"site": "softmax", "outcome": "unmatched", "reason": (
        "no-keras-einsum-pattern (Softmax axis 2 fed by Squeeze; expected the tf2onnx Keras MHA chain "
        "MatMul -> Reshape5 -> Squeeze -> Softmax(2) -> Unsqueeze -> Transpose5 with its Shape plumbing)")}]


def test_last_axis_softmax_is_explained_as_already_canonical():
    canon, _ = apply_pass(keras_attention_model(), "canonicalize-attention-layout")
    _, result = apply_pass(canon, "canonicalize-attention-layout", explain=True)
    assert result.sites == [{"site": "softmax", "outcome": "unmatched", "reason": "already-canonical (Softmax on the last axis)"}]


def test_second_run_changes_nothing():
    out, _ = apply_pass(keras_attention_model(), "canonicalize-attention-layout")
    again, result = apply_pass(out, "canonicalize-attention-layout")
    assert result.changed == 0
    assert same_graph(again, out)
