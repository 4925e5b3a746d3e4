"""convert-precision: fp16/bf16 with fp32 islands; numerics on onnxruntime within rtol 1e-2."""
from __future__ import annotations

import glob
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

import passes  # noqa: F401  (registers the passes)

from surgery.io import load_model
from converter.runtime.numerics import load_spec, random_feeds, run_ort
from tests.converter import tiny
from tests.helpers import apply_pass

TRANSFORMERS = [p for p in sorted(glob.glob(str(Path(__file__).resolve().parents[2] / "sample_models" / "*.onnx")))
                if Path(p).stem.split("_")[0] in ("bert", "gpt2", "llama", "vit")]


def _close(ref_model, cand_model, feeds, rtol=1e-2):
    ref = run_ort(ref_model, feeds)
    got = run_ort(cand_model, feeds, outputs=list(ref))
    for name, value in ref.items():
        assert got[name].dtype == value.dtype  # keep_io_types
        scale = max(1.0, float(np.abs(value).max()))
        np.testing.assert_allclose(got[name], value, rtol=rtol, atol=rtol * scale, err_msg=name)


def test_mlp_fp16_all_nodes_converted(rng):
    model = tiny.mlp()
    out, result = apply_pass(model, "convert-precision", ctx_options={"precision": "fp16"})
    assert result.changed == 4
    fp16_inits = [i for i in out.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(fp16_inits) == 3
    ops = Counter(n.op_type for n in out.graph.node)
    assert ops["Cast"] == 2  # input to fp16, output back to fp32
    assert [o.name for o in out.graph.output] == ["y"]
    _close(model, out, {"x": rng.standard_normal((2, 8)).astype(np.float32)})


def test_islands_and_large_constants_stay_fp32(rng):
    model = tiny.layernorm_block()
    out, result = apply_pass(model, "convert-precision", ctx_options={"precision": "fp16"})
    kept = result.notes[0]
    for name in ("mean1", "sub", "pow", "mean2", "add_eps", "sqrt", "div", "softmax"):
        assert name in kept
    assert result.stats["kept-fp32:large-constant"] == 1  # add_mask (-1e9)
    assert {s["site"] for s in result.sites if s["outcome"] == "to-fp16"} == {"mm", "scale"}
    kept = {s["site"]: s["reason"] for s in result.sites if s["outcome"] == "kept-fp32"}
    assert kept["softmax"] == kept["mean1"] == "island-op" and kept["add_mask"] == "large-constant"
    assert kept["sub"] == "island-chain"
    _close(model, out, {"x": rng.standard_normal((2, 4, 8)).astype(np.float32)})


def test_keep_io_types_false_changes_graph_io():
    out, _ = apply_pass(tiny.mlp(), "convert-precision", ctx_options={"precision": "fp16", "keep_io_types": False})
    assert out.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert out.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_bf16_is_structurally_valid():
    out, result = apply_pass(tiny.mlp(), "convert-precision", ctx_options={"precision": "bf16"})
    assert result.changed == 4
    assert any(n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.BFLOAT16 for n in out.graph.node)


@pytest.mark.skipif(not TRANSFORMERS, reason="no transformer sample models generated")
@pytest.mark.parametrize("path", TRANSFORMERS, ids=[Path(p).stem for p in TRANSFORMERS])
def test_transformer_samples_bf16_within_1e_2_through_the_fp32_upcast(path):
    from converter.runtime.numerics import ort_runnable

    model = load_model(path).model
    out, _ = apply_pass(model, "convert-precision", ctx_options={"precision": "bf16"})
    runnable, note = ort_runnable(out)  # onnxruntime's CPU provider has no bf16 kernels
    assert note.startswith("upcast to float32")
    feeds = random_feeds(load_spec(Path(path).with_suffix(".spec.json")), seed=0)
    _close(model, runnable, feeds)


def test_second_run_is_a_noop():
    out, _ = apply_pass(tiny.mlp(), "convert-precision", ctx_options={"precision": "fp16"})
    _, again = apply_pass(out, "convert-precision", ctx_options={"precision": "fp16"})
    assert again.changed == 0


@pytest.mark.skipif(not TRANSFORMERS, reason="no transformer sample models generated")
@pytest.mark.parametrize("path", TRANSFORMERS, ids=[Path(p).stem for p in TRANSFORMERS])
def test_transformer_samples_fp16_within_1e_2(path):
    model = load_model(path).model
    out, result = apply_pass(model, "convert-precision", ctx_options={"precision": "fp16"})
    assert result.changed > 0 and result.notes
    feeds = random_feeds(load_spec(Path(path).with_suffix(".spec.json")), seed=0)
    _close(model, out, feeds)


def test_cli_precision_flag_converts_and_validate_each_allows_its_tolerance(tmp_path, capsys):
    import json

    from converter.cli.main import main
    from tests.samples import sample_path

    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    assert main(["optimize", str(sample_path("bert_ts_op14")), "-o", str(out), "--preset", "trt",
                 "--precision", "fp16", "--validate-each", "--report", str(report)]) == 0
    last = json.loads(report.read_text())["passes"][-1]
    assert last["name"] == "convert-precision" and last["changed"] > 0
    assert any(note.startswith("kept in fp32") for note in last["notes"])
    model = onnx.load(out)
    assert {i.type.tensor_type.elem_type for i in model.graph.output} == {onnx.TensorProto.FLOAT}
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)


def test_cli_bf16_validate_each_runs_through_the_upcast(tmp_path, capsys):
    import json

    from converter.cli.main import main
    from tests.samples import sample_path

    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    assert main(["optimize", str(sample_path("bert_ts_op14")), "-o", str(out), "--preset", "trt",
                 "--precision", "bf16", "--validate-each", "--report", str(report)]) == 0
    last = json.loads(report.read_text())["passes"][-1]
    assert last["name"] == "convert-precision"
    assert any("validated against the original" in n and "upcast to float32" in n for n in last["notes"])


def _ort_block(rng) -> onnx.ModelProto:
    """x -> MatMul -> LayerNormalization -> com.microsoft SkipLayerNormalization(+x) -> com.microsoft Gelu ->
    Softmax -> y, and Shape(x) -> s: what --emit ort leaves of a transformer layer."""
    from onnx import TensorProto as T, helper as h, numpy_helper as nh
    f = lambda shape, name: nh.from_array(rng.standard_normal(shape).astype(np.float32), name)  # noqa: E731
    nodes = [h.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
             h.make_node("LayerNormalization", ["m", "g", "b"], ["ln"], name="ln", axis=-1),
             h.make_node("SkipLayerNormalization", ["ln", "x", "g", "b"], ["sk"], name="skip", domain="com.microsoft",
                         epsilon=1e-5),
             h.make_node("Gelu", ["sk"], ["ge"], name="gelu", domain="com.microsoft"),
             h.make_node("Softmax", ["ge"], ["y"], name="softmax", axis=-1),
             h.make_node("Shape", ["m"], ["s"], name="shape")]
    graph = h.make_graph(nodes, "ort_block", [h.make_tensor_value_info("x", T.FLOAT, [2, 4, 8])],
                         [h.make_tensor_value_info("y", T.FLOAT, [2, 4, 8]), h.make_tensor_value_info("s", T.INT64, [3])],
                         [f((8, 8), "w"), f((8,), "g"), f((8,), "b")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    return model


def test_emit_ort_lowers_what_onnxruntime_accumulates_in_fp32(rng):
    model = _ort_block(rng)
    out, result = apply_pass(model, "convert-precision", ctx_options={"precision": "fp16", "emit": "ort"})
    lowered = {s["site"] for s in result.sites if s["outcome"] == "to-fp16"}
    assert lowered == {"mm", "ln", "skip", "gelu", "softmax"} and result.stats["reads-either"] == 1
    ops = Counter(n.op_type for n in out.graph.node)
    assert ops["Cast"] == 2  # x in (shared by MatMul and the skip input), y out; Shape reads the fp16 tensor
    shape = next(n for n in out.graph.node if n.op_type == "Shape")
    assert next(n for n in out.graph.node if n.output[0] == shape.input[0]).op_type == "MatMul"
    _close(model, out, {"x": rng.standard_normal((2, 4, 8)).astype(np.float32)})


def test_emit_onnx_keeps_the_islands_tensorrt_needs(rng):
    out, result = apply_pass(_ort_block(rng), "convert-precision", ctx_options={"precision": "fp16", "emit": "onnx"})
    kept = {s["site"]: s["reason"] for s in result.sites if s["outcome"] == "kept-fp32"}
    assert kept == {"ln": "island-op", "softmax": "island-op"}
    assert {s["site"] for s in result.sites if s["outcome"] == "to-fp16"} == {"mm", "skip", "gelu"}


def test_emit_ort_fp16_clamps_attention_mask_fill_so_fully_masked_rows_stay_finite():
    from tests.attention_builders import attention_feeds, attention_model  # noqa: PLC0415

    model = attention_model(mask="where", fill=float(np.finfo(np.float32).min))
    fused, _ = apply_pass(model, "fuse-attention", ctx_options={"emit": "ort"})
    out, result = apply_pass(fused, "convert-precision", ctx_options={"precision": "fp16", "emit": "ort"})
    assert result.stats["mask-fill-clamped"] == 1
    where = next(n for n in out.graph.node if n.op_type == "Where")
    fills = [onnx.numpy_helper.to_array(i) for i in out.graph.initializer if i.name in where.input[1:]]
    assert any(f.dtype == np.float16 and float(f.min()) == -65504.0 for f in fills)  # lowered with the fill
    feeds = attention_feeds(model)
    feeds["mask"][0, 0, 1, :] = False  # batch 0, query 1 sees no key at all
    ref, got = run_ort(model, feeds)["y"], run_ort(out, feeds)["y"]
    assert np.isfinite(got).all()  # (onnxruntime CPU also tolerates the unclamped -inf; CUDA kernels vary)
    keep = np.ones(ref.shape[:2], bool)
    keep[0, 1] = False  # the fully masked query: garbage in the original too (uniform weights)
    np.testing.assert_allclose(got[keep], ref[keep], rtol=1e-2, atol=1e-2)
