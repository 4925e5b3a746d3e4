"""Source mapping: the dynamo exporter's node metadata, TorchScript and tf2onnx scopes, kept through passes."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from surgery.io import to_graph, to_model
from surgery.provenance import (DERIVED_FROM, NAME_SCOPES, STACK_TRACE, carry_metadata, from_metadata, from_name,
                                parse_stack, source_map)
from tests.samples import sample_path

DATA = Path(__file__).resolve().parents[1] / "data"


def test_real_dynamo_export_gives_module_class_and_model_line():
    sources = source_map(onnx.load(DATA / "tiny_dynamo.onnx"))
    fc = sources.get("node_linear")
    assert fc.origin == "dynamo metadata" and fc.module == "layer.0.fc"
    assert fc.classes == ("__main__.Net", "__main__.Block", "torch.nn.modules.linear.Linear")
    assert [f.file.rsplit("/", 1)[-1] for f in fc.frames] == ["tiny_model.py", "tiny_model.py", "linear.py"]
    # the innermost frame outside torch is the model's own line, not torch's F.linear
    assert (fc.frame.line, fc.frame.code) == (8, "return x + torch.relu(s.fc(h))")
    assert fc.line() == "layer.0.fc (Linear) at tiny_model.py:8 in forward: return x + torch.relu(s.fc(h))"
    assert sources.line("node_layer_norm_1") == "layer.1.norm (LayerNorm) at tiny_model.py:7 in forward: h = s.norm(x)"
    assert sources.line("node_softmax").startswith("top-level module (Net) at tiny_model.py:15")
    assert len(sources) == 10  # every node


def test_torchscript_export_of_the_same_module_names_the_same_modules():
    ts = source_map(onnx.load(DATA / "tiny_ts.onnx"))
    dyn = source_map(onnx.load(DATA / "tiny_dynamo.onnx"))
    assert ts.get("/layer.0/fc/Gemm").module == dyn.get("node_linear").module == "layer.0.fc"
    assert ts.get("/layer.1/norm/LayerNormalization").module == dyn.get("node_layer_norm_1").module
    assert ts.get("/Softmax").module == "" and ts.line("/Softmax") == "top-level module"
    alias = ts.get("Identity_0")  # an unscoped weight alias: the module of the node that reads it
    assert alias.module == "layer.1.norm" and alias.via == "consumer /layer.1/norm/LayerNormalization"


def test_namespace_alone_is_enough():
    props = {"namespace": ": m.Net/enc: m.Enc/enc.attn: m.Attn/matmul: aten.matmul.default"}
    src = from_metadata(props)
    assert (src.module, src.classes, src.frames) == ("enc.attn", ("m.Net", "m.Enc", "m.Attn"), ())
    assert src.line() == "enc.attn (Attn)"


def test_parse_stack_reads_torch_fx_traces():
    text = 'File "/a/model.py", line 12, in forward\n    y = self.fc(x)\n  File "/b/torch/nn/modules/linear.py", line 1, in forward\n'
    frames = parse_stack(text)
    assert [(f.file, f.line, f.function, f.code) for f in frames] == [
        ("/a/model.py", 12, "forward", "y = self.fc(x)"), ("/b/torch/nn/modules/linear.py", 1, "forward", "")]


def test_names_without_a_trace_have_no_source():
    assert from_name("node_Conv_57", "pytorch") is None and from_metadata({}) is None
    assert from_name("fuse-attention/2", "pytorch") is None  # a name one of our passes gave
    assert from_name("keras_mha/dense/MatMul_0", "tf2onnx").module == "keras_mha/dense"
    model = onnx.load(sample_path("bert_dynamo"))
    for node in model.graph.node:
        del node.metadata_props[:]
    assert len(source_map(model)) == 0


def test_relative_library_frames_are_not_the_model_line():
    trace = ('File "sample_models/generate.py", line 5, in forward\n    y = self.m(x)\n'
             '  File "transformers/models/bert/modeling_bert.py", line 9, in forward\n    h = self.dense(x)\n'
             '  File "torch/nn/modules/linear.py", line 134, in forward\n    return F.linear(x)')
    source = from_metadata({STACK_TRACE: trace, NAME_SCOPES: "['', 'm', 'm.dense']"})
    assert source.frame.file == "transformers/models/bert/modeling_bert.py" and source.frame.line == 9


@pytest.mark.parametrize("name", ["keras_cnn", "keras_lstm", "keras_mha"])
def test_every_tf2onnx_node_has_its_layer(name):
    model = onnx.load(sample_path(name))
    sources = source_map(model)
    assert {sources.get(n.name).origin for n in model.graph.node} == {"tf2onnx scope"}
    assert all(sources.get(n.name).module.startswith(name) for n in model.graph.node)


def test_export_through_graphsurgeon_keeps_node_metadata():
    model = onnx.load(DATA / "tiny_dynamo.onnx")
    graph = to_graph(model)
    assert not any(n.metadata_props for n in to_model(graph).graph.node)  # graphsurgeon drops them ...
    kept = to_model(graph, like=model)  # ... to_model restores them from the original
    assert [list(n.metadata_props) for n in kept.graph.node] == [list(n.metadata_props) for n in model.graph.node]


def test_fused_nodes_of_an_optimized_torchscript_export_keep_their_module(tmp_path):
    from converter.optimize import OptimizeOptions, optimize_file

    out = tmp_path / "bert.opt.onnx"
    optimize_file(sample_path("bert_ts_op14"), out, OptimizeOptions(preset="trt"))
    model = onnx.load(out)
    sources = source_map(model)
    assert len(sources) == len(model.graph.node)  # every node, the fused ones too
    norms = [n.name for n in model.graph.node if n.op_type == "LayerNormalization"]
    assert len(norms) == 5 and all(sources.get(n).module.endswith("LayerNorm") for n in norms)
    assert all(sources.get(n).via.startswith("replaced /m/") for n in norms)
    gelus = [sources.get(n.name).module for n in model.graph.node if n.op_type == "Gelu"]
    assert gelus == [f"m.encoder.layer.{i}.intermediate.intermediate_act_fn" for i in range(2)]


def test_a_replacing_node_inherits_the_trace_of_the_node_whose_output_it_produces():
    model = onnx.load(DATA / "tiny_ts.onnx")
    rewritten = onnx.load(DATA / "tiny_ts.onnx")
    node = next(n for n in rewritten.graph.node if n.name == "/layer.0/Add")
    node.name = "fuse-something/0"
    assert carry_metadata(rewritten, model) == 1
    assert {p.key: p.value for p in node.metadata_props} == {DERIVED_FROM: "/layer.0/Add"}
    src = source_map(rewritten).get("fuse-something/0")
    assert src.module == "layer.0" and src.via == "replaced /layer.0/Add"
    assert carry_metadata(rewritten, model) == 0  # idempotent: nodes with metadata are left alone
