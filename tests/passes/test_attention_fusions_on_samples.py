"""fuse-gelu and fuse-attention on the real exports: fused counts equal the manifest, outputs unchanged."""
from __future__ import annotations

import numpy as np
import pytest

from surgery import PassContext, PassManager, get_pass, load_model, parse_pipeline, to_graph, to_model
from converter.runtime.numerics import load_spec, random_feeds, run_ort
from tests.samples import manifest, sample_path, spec_path

CLEANUP = "infer-shapes,fold-constants,remove-dead-nodes"
TOL = dict(rtol=1e-4, atol=1e-4)
KNOWN_GAPS: dict[tuple[str, str], str] = {}
# attention runs behind canonicalize-attention-layout, as in the trt preset: it turns Keras/tf2onnx's
# 5-D einsum form (Softmax on axis 2 of transposed scores) into the 4-D form fuse-attention matches.
PASSES = {"gelu": ("fuse-gelu",), "attention": ("canonicalize-attention-layout", "fuse-attention")}


def _cases() -> list:
    cases = []
    for entry in manifest():
        for block, pass_name in PASSES.items():
            want = entry["blocks"].get(block, 0)
            if want > 0:
                gap = KNOWN_GAPS.get((entry["name"], block))
                marks = [pytest.mark.xfail(reason=gap, strict=True)] if gap else []
                cases.append(pytest.param(entry["name"], pass_name, want, id=f"{entry['name']}-{block}", marks=marks))
    return cases


def _cleaned(name: str):
    graph = to_graph(load_model(sample_path(name)))
    PassManager(parse_pipeline(CLEANUP)).run(graph, PassContext())
    return graph


@pytest.mark.parametrize("name,pass_names,want", _cases())
@pytest.mark.parametrize("emit", ["onnx", "ort"])
def test_fused_count_matches_manifest_and_outputs_agree(name, pass_names, want, emit):
    graph = _cleaned(name)
    original = to_model(graph)
    for pass_name in pass_names:
        result = get_pass(pass_name)(graph, PassContext(options={"emit": emit}))
    fused = to_model(graph, like=original)
    assert result.changed == want, result.sites
    feeds = random_feeds(load_spec(spec_path(name)), seed=0)
    ref = run_ort(original, feeds)
    got = run_ort(fused, feeds, outputs=list(ref))
    for key, value in ref.items():
        np.testing.assert_allclose(got[key], value, err_msg=key, **TOL)


def test_explain_says_why_keras_attention_is_not_fused_without_canonicalization():
    graph = _cleaned("keras_mha")
    result = get_pass("fuse-attention")(graph, PassContext(explain=frozenset({"fuse-attention"})))
    assert result.changed == 0
    assert [s["outcome"] for s in result.sites] == ["unmatched", "unmatched"]
    assert all(s["reason"].startswith("softmax-axis-2") and "canonicalize-attention-layout" in s["reason"] for s in result.sites)


def test_canonicalized_keras_attention_fuses_at_the_original_softmax_sites():
    graph = _cleaned("keras_mha")
    canon = get_pass("canonicalize-attention-layout")(graph, PassContext())
    fused = get_pass("fuse-attention")(graph, PassContext(explain=frozenset({"fuse-attention"})))
    sites = ["keras_mha/mha_0/Softmax_0", "keras_mha/mha_1/Softmax_0"]
    assert canon.changed == 2 and [s["site"] for s in canon.sites] == sites
    assert [(s["site"], s["outcome"]) for s in fused.sites] == [(site, "fused:kbshd/qmul/none/0:k") for site in sites]


@pytest.mark.trt
@pytest.mark.parametrize("name", ["bert_ts", "llama_dynamo"])
def test_fused_sample_parses_and_builds_with_tensorrt_rtx(name):
    """Attention-23 parses into an IAttention; fp32 with head size 16 has no fused kernel, so the
    build only succeeds once the parsed attention is marked decomposable."""
    trt = pytest.importorskip("tensorrt_rtx")
    graph = _cleaned(name)
    get_pass("fuse-gelu")(graph, PassContext())
    assert get_pass("fuse-attention")(graph, PassContext()).changed == 2
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(to_model(graph).SerializeToString()), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    attention = [layer for layer in layers if layer.type == trt.LayerType.ATTENTION_INPUT]
    assert len(attention) == 2
    profile = builder.create_optimization_profile()
    for spec in load_spec(spec_path(name)):
        profile.set_shape(spec.name, spec.shape, spec.shape, spec.shape)
    config = builder.create_builder_config()
    config.add_optimization_profile(profile)
    for layer in attention:
        layer.__class__ = trt.IAttentionInputLayer  # the parser hands back the base ILayer
        layer.attention.decomposable = True
    assert builder.build_serialized_network(network, config) is not None
