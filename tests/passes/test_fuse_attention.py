from __future__ import annotations

import copy
import math
from collections import Counter

import numpy as np
import onnx
import pytest

from surgery import to_graph, to_model
from converter.runtime.numerics import run_ort
from tests.attention_builders import HEAD, attention_feeds, attention_model
from tests.helpers import apply_pass, ops, same_graph

TOL = dict(rtol=1e-4, atol=1e-4)
PROJ = {"MatMul": 3, "Reshape": 4, "Transpose": 3}  # projections, head split/merge kept around the fused core


def _roundtrip(model: onnx.ModelProto) -> onnx.ModelProto:
    return to_model(to_graph(copy.deepcopy(model)), like=model)


def _attrs(model: onnx.ModelProto, op: str) -> dict:
    node = next(n for n in model.graph.node if n.op_type == op)
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _same_outputs(a: onnx.ModelProto, b: onnx.ModelProto, run_b=run_ort) -> None:
    feeds = attention_feeds(a)
    want, got = run_ort(a, feeds), run_b(b, feeds)
    np.testing.assert_allclose(got["y"], want["y"], **TOL)


@pytest.mark.parametrize("scale", ["none", "mul", "div", "qmul", "qdiv", "both"])
@pytest.mark.parametrize("mask", ["none", "add", "where", "where-inv"])
def test_scale_and_mask_forms_fuse_to_attention23(scale, mask):
    model = attention_model(scale=scale, mask=mask)
    out, result = apply_pass(model, "fuse-attention")
    assert result.changed == 1
    extra = Counter({"Not": 1}) if mask == "where-inv" else Counter()
    if mask == "add":  # the [B,1,1,S] padding mask is expanded to [B,1,Sq,Sk] for the fused op
        extra += Counter({"Shape": 2, "Concat": 1, "Expand": 1})
    assert ops(out) == Counter({**PROJ, "Transpose": 4, "Attention": 1}) + extra  # K^T became a [B,H,S,D] transpose
    attrs = _attrs(out, "Attention")
    assert attrs["scale"] == pytest.approx(1.0 if scale == "none" else 1 / math.sqrt(HEAD), rel=1e-6)
    assert "is_causal" not in attrs
    attn = next(n for n in out.graph.node if n.op_type == "Attention")
    assert len(attn.input) == (3 if mask == "none" else 4)
    assert out.opset_import[0].version == 23
    assert [o.name for o in out.graph.output] == ["y"]
    _same_outputs(model, out)


@pytest.mark.parametrize("casts", [1, 2])
def test_identity_casts_after_softmax_are_absorbed(casts):
    model = attention_model(casts=casts, k_layout="bhsd", mask="none")
    out, result = apply_pass(model, "fuse-attention")
    assert result.changed == 1
    assert ops(out) == Counter({**PROJ, "Transpose": 4, "Attention": 1})
    _same_outputs(model, out)


def test_grouped_query_attention_drops_the_repeat():
    model = attention_model(gqa=True, mask="none")
    out, result = apply_pass(model, "fuse-attention")
    assert result.changed == 1
    assert ops(out) == Counter({**PROJ, "Transpose": 4, "Attention": 1})
    assert [s["outcome"] for s in result.sites] == ["fused:gqa/mul/none/0:k"]
    _same_outputs(model, out)


def test_cross_attention_fuses():
    model = attention_model(cross=True)
    out, result = apply_pass(model, "fuse-attention")
    assert result.changed == 1
    assert ops(out)["Attention"] == 1
    _same_outputs(model, out)


def test_constant_causal_mask_becomes_is_causal():
    model = attention_model(mask="causal")
    out, result = apply_pass(model, "fuse-attention")
    assert result.changed == 1
    assert _attrs(out, "Attention")["is_causal"] == 1
    assert len(next(n for n in out.graph.node if n.op_type == "Attention").input) == 3
    _same_outputs(model, out)


def _node(model: onnx.ModelProto, op: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == op)


def _ort_fused(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Counter]:
    """fuse-attention with --emit ort, which must fuse the one core: the model and its op counts."""
    out, result = apply_pass(model, "fuse-attention", ctx_options={"emit": "ort"})
    assert result.changed == 1
    return out, ops(out)


def _init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return onnx.numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("mask", ["none", "add", "where", "causal"])
def test_ort_emit_packs_self_attention_into_attention(mask, bias):
    model = attention_model(mask=mask, bias=bias)
    out, counts = _ort_fused(model)
    # the three projections became one [E, 3E] GEMM inside Attention; only the head merge Reshape/Transpose
    # and the output's Reshape/Transpose back to [B,H,S,D] remain around it
    assert counts["Attention"] == 1 and counts["MultiHeadAttention"] == 0
    assert counts["MatMul"] == 0 and counts["Add"] == 0 and counts["Softmax"] == 0
    attn = _node(out, "Attention")
    assert attn.domain == "com.microsoft" and attn.input[0] == "x"
    weight, qkv_bias = _init(out, attn.input[1]), _init(out, attn.input[2])
    want_w = np.concatenate([_init(model, w) for w in ("wq", "wk", "wv")], axis=1)
    want_b = np.concatenate([_init(model, b) for b in ("bq", "bk", "bv")]) if bias else np.zeros(3 * 8, np.float32)
    np.testing.assert_array_equal(weight, want_w)
    np.testing.assert_array_equal(qkv_bias, want_b)
    assert len(attn.input) == (3 if mask in ("none", "causal") else 6)  # attention_bias is input 5
    attrs = _attrs(out, "Attention")
    assert attrs["num_heads"] == 2 and attrs.get("unidirectional", 0) == (mask == "causal")
    _same_outputs(model, out)


@pytest.mark.parametrize("bias", [False, True])
def test_ort_emit_packs_a_split_projection(bias):
    model = attention_model(mask="add", fused_qkv=True, bias=bias)
    out, counts = _ort_fused(model)
    assert counts["Attention"] == 1 and counts["Split"] == 0 and counts["MatMul"] == 0 and counts["Add"] == 0
    attn = _node(out, "Attention")
    np.testing.assert_array_equal(_init(out, attn.input[1]), _init(model, "wqkv"))
    _same_outputs(model, out)


@pytest.mark.parametrize("bias", [False, True])
def test_ort_emit_cross_attention_uses_multi_head_attention(bias):
    model = attention_model(mask="add", cross=True, bias=bias)
    out, counts = _ort_fused(model)
    assert counts["MultiHeadAttention"] == 1 and counts["Attention"] == 0
    mha = _node(out, "MultiHeadAttention")
    assert counts["MatMul"] == 3 and counts["Add"] == 0  # the biases went into MHA's bias input
    if bias:
        np.testing.assert_array_equal(_init(out, mha.input[3]),
                                      np.concatenate([_init(model, b) for b in ("bq", "bk", "bv")]))
    else:
        assert mha.input[3] == ""
    assert _attrs(out, "MultiHeadAttention")["num_heads"] == 2
    _same_outputs(model, out)


def test_ort_emit_keeps_projections_other_nodes_read():
    model = attention_model(mask="none", bias=True)
    model.graph.output.append(onnx.helper.make_tensor_value_info("k1", onnx.TensorProto.FLOAT, None))
    out, counts = _ort_fused(model)
    assert counts["MultiHeadAttention"] == 1 and counts["Attention"] == 0 and counts["MatMul"] == 3
    _same_outputs(model, out)


def test_ort_emit_keeps_the_gqa_repeat():
    model = attention_model(gqa=True, mask="none")
    out, result = apply_pass(model, "fuse-attention", ctx_options={"emit": "ort"})
    assert result.changed == 1
    assert result.stats["rejected:gqa-no-ort-op"] == 1
    assert ops(out)["Expand"] == 2 and ops(out)["MultiHeadAttention"] == 1
    _same_outputs(model, out)


@pytest.mark.parametrize("kwargs,kind", [({"mask": "add"}, 1), ({"mask": "where"}, 2), ({"gqa": True, "mask": "none"}, 0)])
def test_plugin_emit_through_reference_runner(kwargs, kind):
    runner = pytest.importorskip("converter.runtime.reference_runner")
    model = attention_model(**kwargs)
    out, result = apply_pass(model, "fuse-attention", ctx_options={"emit": "plugin"})
    assert result.changed == 1
    assert ops(out)["SurgeryAttention"] == 1
    attrs = _attrs(out, "SurgeryAttention")
    assert (attrs["num_heads"], attrs["causal"], attrs["mask_kind"]) == (2, 0, kind)
    assert attrs["plugin_namespace"] == b"onnx_surgery"
    _same_outputs(model, out, runner.run_with_references)


def _assert_rejected(model: onnx.ModelProto, reason: str, emit: str = "onnx") -> None:
    before = _roundtrip(model)
    out, result = apply_pass(model, "fuse-attention", ctx_options={"emit": emit})
    assert result.changed == 0
    assert result.stats[f"rejected:{reason}"] >= 1
    assert same_graph(out, before)


def test_where_fill_must_be_large_negative():
    _assert_rejected(attention_model(mask="where", fill=0.0), "fill-not-large-negative")


def test_cast_that_changes_dtype_is_rejected():
    model = attention_model(casts=1, mask="none")
    del model.graph.value_info[:]
    cast = next(n for n in model.graph.node if n.op_type == "Cast")
    cast.attribute[0].i = onnx.TensorProto.DOUBLE
    model.graph.node.insert(list(model.graph.node).index(cast) + 1,
                            onnx.helper.make_node("Cast", ["pc0"], ["pc0f"], name="back", to=onnx.TensorProto.FLOAT))
    next(n for n in model.graph.node if n.name == "pv").input[0] = "pc0f"
    _assert_rejected(onnx.shape_inference.infer_shapes(model), "cast-changes-dtype")


def test_scale_not_scalar_is_rejected():
    model = attention_model(scale="mul")
    init = next(i for i in model.graph.initializer if i.name == "c_scale")
    init.CopyFrom(onnx.numpy_helper.from_array(np.full((1, 2, 1, 1), 0.5, np.float32), "c_scale"))
    _assert_rejected(model, "scale-not-scalar")


def test_num_heads_unknown_for_plugin_emit():
    model = attention_model()
    del model.graph.value_info[:]
    for name in ("split_q",):  # a dynamic head split hides the head count
        init = next(i for i in model.graph.initializer if i.name == name)
        init.CopyFrom(onnx.numpy_helper.from_array(np.array([0, 0, -1, HEAD], np.int64), name))
    graph_in = model.graph.input[0]
    graph_in.type.tensor_type.shape.dim[2].dim_param = "h"  # hidden unknown: H = hidden / D is unknown too
    _assert_rejected(model, "num-heads-unknown", "plugin")


def test_opset_raise_refused():
    model = attention_model(opset=9, mask="none", scale="mul")
    model.graph.node.append(onnx.helper.make_node("Upsample", ["x", "scales"], ["u"], name="up", mode="nearest"))
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.ones(3, np.float32), "scales"))
    model.graph.output.append(onnx.helper.make_tensor_value_info("u", onnx.TensorProto.FLOAT, [2, 4, 8]))
    before = _roundtrip(model)
    out, result = apply_pass(model, "fuse-attention")
    assert result.changed == 0 and result.stats["rejected:opset-raise-refused"] == 1
    assert any("refused: Upsample" in n for n in result.notes)
    assert same_graph(out, before)


def test_internal_tensor_as_graph_output_blocks_the_match():
    model = attention_model(extra_output="probs")
    out, result = apply_pass(model, "fuse-attention", explain=True)
    assert result.changed == 0
    assert same_graph(out, _roundtrip(model))
    assert result.sites == [{"site": "softmax", "outcome": "unmatched",
                             "reason": "no-attention-pattern (Softmax input from Add; Q/K/scale/mask structure not recognised)"}]


def test_second_run_changes_nothing():
    out, _ = apply_pass(attention_model(gqa=True), "fuse-attention")
    again, result = apply_pass(out, "fuse-attention")
    assert result.changed == 0
    assert same_graph(again, out)


def test_explain_lists_rejected_candidates():
    _, result = apply_pass(attention_model(mask="where", fill=0.0), "fuse-attention", explain=True)
    assert {"site": "softmax", "outcome": "rejected", "reason": "fill-not-large-negative", "tensor": "c_fill"} in result.sites


@pytest.mark.parametrize("mask,k_layout", [("none", "bshd"), ("add", "bshd"), ("add", "bhsd"), ("where", "bshd"),
                                           ("none", "bhsd")])
def test_ort_emit_feeds_multi_head_attention_the_projections_when_shapes_prove_the_split(mask, k_layout):
    model = attention_model(mask=mask, k_layout=k_layout, cross=True)  # self-attention packs into Attention
    shaped, _ = apply_pass(model, "infer-shapes")
    out, result = apply_pass(shaped, "fuse-attention", ctx_options={"emit": "ort"})
    assert result.changed == 1
    mha = next(n for n in out.graph.node if n.op_type == "MultiHeadAttention")
    assert list(mha.input[:3]) == ["q2", "k2", "v2"]  # [B,S,H*D], the layout onnxruntime's fused kernels take
    out, _ = apply_pass(out, "merge-transposes")  # the way back to [B,H,S,Dv] cancels the model's head merge
    out, _ = apply_pass(out, "remove-dead-nodes")
    assert ops(out)["Transpose"] == 0
    _same_outputs(model, out)


def test_ort_emit_keeps_the_head_split_when_shapes_are_unknown():
    model = attention_model(mask="add")
    del model.graph.value_info[:]
    out, _ = apply_pass(model, "fuse-attention", ctx_options={"emit": "ort"})
    mha = next(n for n in out.graph.node if n.op_type == "MultiHeadAttention")
    assert mha.input[1] != "k2" and mha.input[2] == "v"


def _computed_mask_model(keep: np.ndarray) -> onnx.ModelProto:
    """attention_model(mask="add") whose additive mask is computed in the graph from a constant keep-mask:
    Where(Expand(keep, [B,1,S,S]), 0, -1e9), the way transformers builds a ViT's bidirectional mask."""
    model = attention_model(mask="add")
    del model.graph.value_info[:]
    mask_input = next(i for i in model.graph.input if i.name == "mask")
    model.graph.input.remove(mask_input)
    model.graph.initializer.extend([
        onnx.numpy_helper.from_array(keep, "keep"), onnx.numpy_helper.from_array(np.array([2, 1, 4, 4], np.int64), "full"),
        onnx.numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        onnx.numpy_helper.from_array(np.array(-1e9, np.float32), "low")])
    model.graph.node.insert(0, onnx.helper.make_node("Expand", ["keep", "full"], ["keep_full"], name="expand_keep"))
    model.graph.node.insert(1, onnx.helper.make_node("Where", ["keep_full", "zero", "low"], ["mask"], name="to_bias"))
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize("emit", ["onnx", "ort"])
def test_mask_that_keeps_everything_is_dropped(emit):
    model = _computed_mask_model(np.ones((1, 1, 4, 1), bool))
    out, result = apply_pass(model, "fuse-attention", ctx_options={"emit": emit})
    assert result.changed == 1
    fused = next(n for n in out.graph.node if n.op_type in ("Attention", "MultiHeadAttention"))
    assert len(fused.input) == 3 and ops(out)["Where"] == 0 and ops(out)["Expand"] == 0
    _same_outputs(model, out)


def test_mask_with_a_masked_position_is_kept():
    keep = np.ones((1, 1, 4, 1), bool)
    keep[0, 0, 2, 0] = False
    model = _computed_mask_model(np.broadcast_to(keep, (1, 1, 4, 4)).copy())
    out, result = apply_pass(model, "fuse-attention")
    assert result.changed == 1
    fused = next(n for n in out.graph.node if n.op_type == "Attention")
    assert len(fused.input) == 4 and ops(out)["Where"] == 1
    _same_outputs(model, out)
