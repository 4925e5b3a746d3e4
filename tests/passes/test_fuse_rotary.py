from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import onnx
import pytest

from surgery import PassContext, PassManager, get_pass, load_model, parse_pipeline, to_graph, to_model
from converter.runtime.numerics import load_spec, random_feeds, run_ort
from surgery.errors import UserInputError
from tests.helpers import apply_pass, ops, same_graph
from tests.rotary_builders import B, HEAD, HIDDEN, SEQ, rotary_model
from tests.samples import manifest, sample_path, spec_path

TOL = dict(rtol=1e-5, atol=1e-5)
AROUND = Counter({"MatMul": 1, "Reshape": 1, "Transpose": 1})
CACHE = Counter({"Concat": 1, "Cos": 1, "Sin": 1, "Unsqueeze": 2})  # HF rotary_emb, kept as the cache source
PER_SITE = Counter({"Slice": 2, "Squeeze": 2, "RotaryEmbedding": 1})  # half-width cos/sin caches + the op


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((B, SEQ, HIDDEN)).astype(np.float32)}
    if any(i.name == "position_ids" for i in model.graph.input):
        feeds["position_ids"] = np.stack([np.arange(SEQ), np.arange(3, 3 + SEQ)]).astype(np.int64)
    return feeds


def _same_outputs(a: onnx.ModelProto, b: onnx.ModelProto) -> None:
    feeds = _feeds(a)
    np.testing.assert_allclose(run_ort(b, feeds)["y"], run_ort(a, feeds)["y"], **TOL)


def _attrs(model: onnx.ModelProto, op: str) -> dict:
    node = next(n for n in model.graph.node if n.op_type == op)
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def test_hf_rotary_fuses_to_rotary_embedding23_with_expanded_caches():
    model = rotary_model()
    out, result = apply_pass(model, "fuse-rotary")
    assert result.changed == 1 and [s["site"] for s in result.sites] == ["rope"]
    # the batch-1 caches are Expanded to X's batch: onnxruntime checks the cache batch against X's
    assert ops(out) == AROUND + CACHE + PER_SITE + Counter({"Shape": 1, "Concat": 1, "Expand": 2})
    assert _attrs(out, "RotaryEmbedding") == {"interleaved": 0, "rotary_embedding_dim": HEAD}
    assert out.opset_import[0].version == 23
    assert [o.name for o in out.graph.output] == ["y"]
    _same_outputs(model, out)


def test_batch_cache_from_position_ids_needs_no_expand():
    model = rotary_model(cache="positions")
    out, result = apply_pass(model, "fuse-rotary")
    assert result.changed == 1
    assert ops(out)["Expand"] == 0 and ops(out)["RotaryEmbedding"] == 1
    _same_outputs(model, out)


def test_constant_caches_with_equal_halves_fuse():
    model = rotary_model(cache="const")
    out, result = apply_pass(model, "fuse-rotary")
    assert result.changed == 1
    _same_outputs(model, out)


def test_ort_emit_uses_the_contrib_op_with_a_position_offset():
    model = rotary_model()
    out, result = apply_pass(model, "fuse-rotary", ctx_options={"emit": "ort"})
    assert result.changed == 1
    assert ops(out) == AROUND + CACHE + PER_SITE
    node = next(n for n in out.graph.node if n.op_type == "RotaryEmbedding")
    assert node.domain == "com.microsoft" and len(node.input) == 4
    assert out.opset_import[0].version == 17
    _same_outputs(model, out)


def test_plugin_emit_is_refused():
    graph = to_graph(copy.deepcopy(rotary_model()))
    with pytest.raises(UserInputError):
        get_pass("fuse-rotary")(graph, PassContext(options={"emit": "plugin"}))


def _roundtrip(model: onnx.ModelProto) -> onnx.ModelProto:
    return to_model(to_graph(copy.deepcopy(model)), like=model)


@pytest.mark.parametrize("kwargs,reason,emit", [
    ({"rank": 3}, "not-4d", "onnx"),
    ({"split": 3}, "slice-not-halves", "onnx"),
    ({"concat_axis": 2}, "concat-axis", "onnx"),
    ({"cache": "rank3"}, "cos-sin-shape", "onnx"),
    ({"cache": "uneven"}, "halves-unproven", "onnx"),
    ({"cache": "positions"}, "cos-batch-not-1", "ort"),
    ({"extra_ops": True}, "opset-raise-refused", "onnx"),
])
def test_rejections_leave_the_graph_unchanged(kwargs, reason, emit):
    model = rotary_model(**kwargs)
    before = _roundtrip(model)
    graph = to_graph(copy.deepcopy(model))
    result = get_pass("fuse-rotary")(graph, PassContext(options={"emit": emit}))
    assert result.changed == 0
    assert result.stats[f"rejected:{reason}"] == 1, result.stats
    assert same_graph(to_model(graph, like=model), before)


def test_unknown_head_dim_is_rejected():
    model = rotary_model()
    del model.graph.value_info[:]
    _, result = apply_pass(model, "fuse-rotary")
    assert result.changed == 0 and result.stats["rejected:head-dim-unknown"] == 1


def test_refused_opset_raise_is_noted():
    _, result = apply_pass(rotary_model(extra_ops=True), "fuse-rotary")
    assert any("refused: LpNormalization" in n for n in result.notes)


def test_explain_names_unmatched_neg():
    model = rotary_model()
    model.graph.output.append(onnx.helper.make_tensor_value_info("rot", onnx.TensorProto.FLOAT, None))
    _, result = apply_pass(model, "fuse-rotary", explain=True)
    assert result.sites == [{"site": "neg", "outcome": "unmatched",
                             "reason": "no-rotary-pattern (Neg -> Concat found; x*cos + rotate_half(x)*sin around it not recognised)"}]


def test_second_run_changes_nothing():
    out, _ = apply_pass(rotary_model(), "fuse-rotary")
    again, result = apply_pass(out, "fuse-rotary")
    assert result.changed == 0 and same_graph(again, out)


LLAMAS = [e for e in manifest() if e["family"] == "llama"]


@pytest.mark.parametrize("emit", ["onnx", "ort"])
@pytest.mark.parametrize("entry", LLAMAS, ids=[e["name"] for e in LLAMAS])
def test_llama_samples_fuse_q_and_k_of_every_attention_block(entry, emit):
    graph = to_graph(load_model(sample_path(entry["name"])))
    PassManager(parse_pipeline("infer-shapes,fold-constants,remove-dead-nodes")).run(graph, PassContext())
    original = to_model(graph)
    ctx = PassContext(options={"emit": emit})
    result = get_pass("fuse-rotary")(graph, ctx)
    assert result.changed == 2 * entry["blocks"]["attention"]  # rotary on Q and on K per block
    assert get_pass("fuse-attention")(graph, ctx).changed == entry["blocks"]["attention"]
    feeds = random_feeds(load_spec(spec_path(entry["name"])), seed=0)
    ref = run_ort(original, feeds)
    got = run_ort(to_model(graph, like=original), feeds, outputs=list(ref))
    for key, value in ref.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-4, err_msg=key)
