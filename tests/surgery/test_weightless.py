"""Weights stay where they are: analysis on weightless views, one streamed save, storage kept.

A small BERT-shaped model (bench/make_bert.py) has weights of every kind: embeddings and MLP matrices
of at least ``WEIGHT_BYTES`` (left in the file at load), attention matrices between 1 KiB and 64 KiB
(parsed inline, written external in external-data output) and scalars (always inline).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import external_data_helper as ext
from onnx import helper, numpy_helper

import onnx_graphsurgeon as gs

from converter.cli.main import main
from passes.infer_shapes import InferShapesPass
from surgery import ModelLoadError, PassContext, SurgeryError, load_model, save_model, to_graph, to_model
from surgery.io import save_graph, weightless_model
from surgery.verify import verify_graph
from surgery.weights import WEIGHT_BYTES, ExternalValues, plain_size
from tests.helpers import assert_same_outputs, ops

ROOT = Path(__file__).resolve().parents[2]


def _make_bert():
    spec = importlib.util.spec_from_file_location("bench_make_bert", ROOT / "bench" / "make_bert.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> dict[str, Path]:
    """The same tiny BERT saved external (``ext/model.onnx`` + ``model.onnx.data``) and embedded."""
    make_bert = _make_bert()
    folder = tmp_path_factory.mktemp("bert")
    external = folder / "ext" / "model.onnx"
    external.parent.mkdir()
    make_bert.build(external, make_bert.BertConfig(layers=2, hidden=64, heads=2, vocab=1000, max_pos=32), seed=0)
    embedded = folder / "emb" / "model.onnx"
    embedded.parent.mkdir()
    onnx.save(onnx.load(external), embedded)
    return {"external": external, "embedded": embedded}


def _full(path: Path) -> onnx.ModelProto:
    return onnx.load(path)


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("storage", ["embedded", "external"])
def test_trt_preset_output_equals_the_original_on_onnxruntime(bert, tmp_path, storage):
    out = tmp_path / "o.onnx"
    assert main(["optimize", str(bert[storage]), "-o", str(out), "--preset", "trt"]) == 0
    result = _full(out)
    assert ops(result)["LayerNormalization"] == 5 and ops(result)["Gelu"] == 2
    assert_same_outputs(_full(bert[storage]), result, rtol=1e-4, atol=1e-5)


def test_both_storages_give_the_same_model_and_the_same_as_a_full_load(bert, tmp_path):
    outs = {}
    for storage in ("embedded", "external"):
        outs[storage] = tmp_path / storage / "o.onnx"
        outs[storage].parent.mkdir()
        assert main(["optimize", str(bert[storage]), "-o", str(outs[storage]), "--preset", "trt"]) == 0
    # the same pipeline on a model loaded whole, exported and saved by onnx itself
    from converter.optimize import OptimizeOptions, pipeline_spec
    from surgery import PassManager, parse_pipeline

    graph = to_graph(_full(bert["embedded"]))
    PassManager(parse_pipeline(pipeline_spec(OptimizeOptions(preset="trt"))[0])).run(
        graph, PassContext(options={"emit": "onnx", "attention_kernels": "tensorrt"}))
    whole = to_model(graph, like=_full(bert["embedded"]))
    embedded, external = _full(outs["embedded"]), _full(outs["external"])
    for other in (external, whole):
        assert [n.SerializeToString() for n in embedded.graph.node] == [n.SerializeToString() for n in other.graph.node]
        a, b = _initializers(embedded), _initializers(other)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_embedded_output_is_what_protobuf_would_write(bert, tmp_path):
    out = tmp_path / "o.onnx"
    assert main(["optimize", str(bert["embedded"]), "-o", str(out), "--preset", "trt"]) == 0
    data = out.read_bytes()
    assert onnx.ModelProto.FromString(data).SerializeToString() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.onnx"]


def test_lazy_load_leaves_big_embedded_weights_in_the_file(bert):
    loaded = load_model(bert["embedded"], lazy_weights=True)
    refs = [t for t in loaded.model.graph.initializer if ext.uses_external_data(t)]
    assert refs and all(loaded.in_model_file(t) for t in refs)
    assert {int(np.prod(t.dims)) * 4 >= WEIGHT_BYTES for t in refs} == {True}
    assert not loaded.has_external_data
    left = sum(ext.ExternalDataInfo(t).length for t in refs)  # about 500 KB of the model's 650
    assert loaded.model.ByteSize() < bert["embedded"].stat().st_size - left + 100 * len(refs)
    full = _initializers(_full(bert["embedded"]))
    for c in to_graph(loaded).tensors().values():  # and read back right when a pass asks
        if hasattr(c, "_values") and isinstance(c._values, ExternalValues):
            assert np.array_equal(c.values, full[c.name])


def test_a_weight_that_does_not_fit_its_dims_is_reported_as_without_lazy_weights(tmp_path):
    w = onnx.TensorProto(name="w", data_type=onnx.TensorProto.FLOAT, dims=[128, 128], raw_data=b"\0" * 70000)
    m = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                                            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 128])],
                                            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 128])], [w]))
    m.ir_version = 8
    onnx.save(m, path := tmp_path / "m.onnx")
    with pytest.raises(ModelLoadError, match="holds 70000 bytes but its dims"):
        load_model(path, lazy_weights=True)
    path.write_bytes(path.read_bytes()[:50000])  # truncated inside the weight: protobuf's own message
    with pytest.raises(ModelLoadError, match="not an ONNX model"):
        load_model(path, lazy_weights=True)


class _AnalysisSpy:
    """Records the size of every model handed to shape inference or the checker."""

    def __init__(self, monkeypatch) -> None:
        self.sizes: list[int] = []
        infer, check = onnx.shape_inference.infer_shapes, onnx.checker.check_model

        def spy_infer(model, *args, **kwargs):
            self.sizes.append(model.ByteSize() if isinstance(model, onnx.ModelProto) else len(model))
            return infer(model, *args, **kwargs)

        def spy_check(model, *args, **kwargs):
            self.sizes.append(model.ByteSize() if isinstance(model, onnx.ModelProto) else len(model))
            return check(model, *args, **kwargs)

        monkeypatch.setattr(onnx.shape_inference, "infer_shapes", spy_infer)
        monkeypatch.setattr(onnx.checker, "check_model", spy_check)


def _big_model(megabytes: int) -> onnx.ModelProto:
    n = int((megabytes << 20) / 4 / 256)
    w = numpy_helper.from_array(np.full((256, n), 0.5, np.float32), "w")
    shape = numpy_helper.from_array(np.array([0, -1], np.int64), "shape")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["y"])]
    m = helper.make_model(helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["b", 256])],
                                            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["b", "n"])], [w, shape]),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("source", ["in-memory", "embedded file", "external file"])
def test_shape_inference_and_verification_never_serialize_weights(tmp_path, monkeypatch, source):
    model = _big_model(32)
    if source == "in-memory":
        graph = to_graph(model)
    else:
        path = tmp_path / "m.onnx"
        onnx.save(model, path, save_as_external_data=source == "external file", location="m.data")
        graph = to_graph(load_model(path, lazy_weights=True))
    loads = []
    for cls in (ExternalValues, gs.ir.tensor.LazyValues):
        monkeypatch.setattr(cls, "load", lambda self: loads.append(self) or pytest.fail("weight read"))
    spy = _AnalysisSpy(monkeypatch)
    result = InferShapesPass()(graph, PassContext())
    verify_graph(graph)
    assert result.changed and graph.tensors()["y"].shape == ["b", 32 << 20 >> 10]
    assert len(spy.sizes) >= 2 and max(spy.sizes) < 4096  # the 32 MB weight never went into an analysed model
    assert not loads


def test_weightless_export_leaves_the_graph_as_it_was():
    graph = to_graph(_big_model(1))
    before = {t.name: t._values for t in graph.tensors().values() if hasattr(t, "_values")}
    model = weightless_model(graph)
    assert [t.name for t in model.graph.initializer] == ["shape"] and "w" in {i.name for i in model.graph.input}
    assert {t.name: t._values for t in graph.tensors().values() if hasattr(t, "_values")} == before


def test_one_streamed_write_per_save_and_each_weight_copied_from_its_file(bert, tmp_path, monkeypatch):
    import surgery.writer as writer

    copies, writes, reads = [], [], []
    copy_range, embedded, load = writer._copy_range, writer.write_embedded, ExternalValues.load
    monkeypatch.setattr(writer, "_copy_range", lambda *a: copies.append(a[2]) or copy_range(*a))
    monkeypatch.setattr(writer, "write_embedded", lambda *a, **k: writes.append(1) or embedded(*a, **k))
    monkeypatch.setattr(ExternalValues, "load", lambda self: reads.append(self.tensor.name) or load(self))
    out = tmp_path / "o.onnx"
    assert main(["optimize", str(bert["embedded"]), "-o", str(out), "--preset", "trt"]) == 0
    big = [t for t in _full(bert["embedded"]).graph.initializer if len(t.raw_data) >= WEIGHT_BYTES]
    assert writes == [1] and sorted(copies) == sorted(len(t.raw_data) for t in big)  # none was kept in memory
    # only cse compares weights, and only those whose shape another shares (the MLP matrices of the two layers)
    assert reads and {t.dims[0] for t in big if t.name in reads} <= {64, 256}
    assert "embeddings.word_embeddings.weight" not in reads


def test_external_data_is_kept_in_one_file_with_a_deterministic_name_and_layout(bert, tmp_path):
    outs = []
    for run in ("a", "b"):
        folder = tmp_path / run
        folder.mkdir()
        assert main(["optimize", str(bert["external"]), "-o", str(folder / "opt.onnx"), "--preset", "trt"]) == 0
        assert sorted(p.name for p in folder.iterdir()) == ["opt.onnx", "opt.onnx.data"]
        outs.append(folder)
    for name in ("opt.onnx", "opt.onnx.data"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
    model = onnx.load(outs[0] / "opt.onnx", load_external_data=False)
    before = {t.name: ext.uses_external_data(t) for t in onnx.load(bert["external"], load_external_data=False).graph.initializer}
    for t in model.graph.initializer:
        # what was external stays external, what was inline and small stays inline, what a pass made goes by size
        expected = before[t.name] if t.name in before else plain_size(t) >= 1024
        assert ext.uses_external_data(t) == expected, t.name
        if ext.uses_external_data(t):
            assert ext.ExternalDataInfo(t).location == "opt.onnx.data" and ext.ExternalDataInfo(t).offset % 4096 == 0
    inputs = [name for name, external in before.items() if external]
    kept = [name for _, name in sorted((ext.ExternalDataInfo(t).offset, t.name) for t in model.graph.initializer
                                       if ext.uses_external_data(t) and t.name in before)]
    assert kept == [name for name in inputs if name in kept]  # in the input's order


def test_small_external_model_stays_external(tmp_path):
    # the 2 GB+ case in the issue: CSE shrank the weights under 2 GB and the output came out inline
    model = _big_model(1)
    model.graph.initializer.append(numpy_helper.from_array(np.full((256, 1024), 0.5, np.float32), "w_copy"))
    reshape = model.graph.node.pop()
    reshape.input[0] = "s"
    model.graph.node.extend([helper.make_node("MatMul", ["x", "w_copy"], ["h2"]), helper.make_node("Relu", ["h2"], ["r2"]),
                             helper.make_node("Add", ["r", "r2"], ["s"]), reshape])
    src = tmp_path / "src" / "m.onnx"
    src.parent.mkdir()
    onnx.save(model, src, save_as_external_data=True, location="weights.bin", size_threshold=0)
    out = tmp_path / "o.onnx"
    assert main(["optimize", str(src), "-o", str(out), "--passes", "cse,remove-dead-nodes"]) == 0
    result = onnx.load(out, load_external_data=False)
    assert len(result.graph.initializer) == 2  # w_copy merged into w
    assert all(ext.uses_external_data(t) for t in result.graph.initializer)  # even the 16-byte shape: it was
    assert_same_outputs(onnx.load(src), onnx.load(out))


def test_external_input_can_be_saved_embedded_through_the_api(bert, tmp_path):
    loaded = load_model(bert["external"])
    out = save_graph(to_graph(loaded), tmp_path / "inline.onnx", like=loaded.model, source_dir=loaded.base_dir,
                     external=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inline.onnx"]
    assert_same_outputs(_full(bert["external"]), onnx.load(out), rtol=1e-5, atol=1e-6)


def test_in_place_embedded_model(bert, tmp_path):
    src = tmp_path / "model.onnx"
    src.write_bytes(bert["embedded"].read_bytes())
    assert main(["optimize", str(src), "--in-place", "--preset", "trt"]) == 0
    assert_same_outputs(_full(bert["embedded"]), onnx.load(src), rtol=1e-4, atol=1e-5)


def _model_with_nested_weights() -> onnx.ModelProto:
    """Weights in an If branch's initializers and in a Constant node's attribute."""
    big = np.arange(64 * 300, dtype=np.float32).reshape(64, 300) / 1000
    then = helper.make_graph([helper.make_node("MatMul", ["x", "w_then"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", onnx.TensorProto.FLOAT, None)],
                             [numpy_helper.from_array(big, "w_then")])
    other = helper.make_graph([helper.make_node("Constant", [], ["w_else"], value=numpy_helper.from_array(-big, "v")),
                               helper.make_node("MatMul", ["x", "w_else"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", onnx.TensorProto.FLOAT, None)])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0), helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 64])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 300])],
                          [numpy_helper.from_array(np.float32(0), "zero")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("external_in", [False, True])
@pytest.mark.parametrize("external_out", [False, True])
def test_nested_weights_are_written_right_both_ways(tmp_path, external_in, external_out):
    model = _model_with_nested_weights()
    src = tmp_path / "src" / "m.onnx"
    src.parent.mkdir()
    onnx.save(model, src, save_as_external_data=external_in, location="m.data", size_threshold=0, convert_attribute=True)
    loaded = load_model(src, lazy_weights=True)
    graph = to_graph(loaded)
    verify_graph(graph)  # the branch's weight is an outer-scope input of the weightless view
    out = save_graph(graph, tmp_path / "o.onnx", like=loaded.model, source_dir=loaded.base_dir, external=external_out)
    assert (tmp_path / "o.onnx.data").exists() == external_out
    original = _model_with_nested_weights()  # onnx.save moved the weights of ``model`` out
    assert_same_outputs(original, onnx.load(out), feeds={"x": np.ones((2, 64), np.float32)})
    assert_same_outputs(original, onnx.load(out), feeds={"x": -np.ones((2, 64), np.float32)})
    if not external_out:
        assert onnx.ModelProto.FromString(out.read_bytes()).SerializeToString() == out.read_bytes()


def test_save_model_stands_in_without_changing_the_model(tmp_path):
    model = _big_model(1)
    before = model.SerializeToString()
    save_model(model, tmp_path / "a.onnx", external=True)
    save_model(model, tmp_path / "b.onnx")
    assert model.SerializeToString() == before
    assert (tmp_path / "b.onnx").read_bytes() == before
    assert_same_outputs(model, onnx.load(tmp_path / "a.onnx"))


def test_a_weight_shorter_than_its_entry_fails_in_one_line(tmp_path):
    model = _big_model(1)
    src = tmp_path / "m.onnx"
    onnx.save(model, src, save_as_external_data=True, location="m.data")
    loaded = load_model(src)
    graph = to_graph(loaded)
    with open(tmp_path / "m.data", "r+b") as f:  # truncated after loading
        f.truncate(1000)
    with pytest.raises(SurgeryError, match="shorter than its external data entry"):
        save_graph(graph, tmp_path / "o.onnx", like=loaded.model, source_dir=loaded.base_dir)
    assert not (tmp_path / "o.onnx").exists() and not (tmp_path / "o.onnx.data").exists()


def test_over_the_protobuf_limit_goes_external_or_is_refused(tmp_path, monkeypatch):
    import surgery.io

    monkeypatch.setattr(surgery.io, "PROTOBUF_LIMIT", 100 << 10)  # stands for 2 GB: the 1 MB model is over it
    model = _big_model(1)
    save_model(model, tmp_path / "auto.onnx")
    assert (tmp_path / "auto.onnx.data").is_file()
    with pytest.raises(SurgeryError, match="over 2 GB"):
        save_model(model, tmp_path / "inline.onnx", external=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto.onnx", "auto.onnx.data"]
