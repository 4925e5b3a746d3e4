"""Every report that names nodes says where they came from: check (text, JSON, HTML), validate --mark-all,
optimize --explain and pass notes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from converter.cli.main import main
from converter.report_html import capability_html
from converter.trt.backends import select_backend
from converter.trt.capability import check_model
from surgery.provenance import CLASS_HIERARCHY, NAME_SCOPES, NAMESPACE, STACK_TRACE
from tests.samples import manifest, sample_path

DATA = Path(__file__).resolve().parents[1] / "data"
DYNAMO = sorted(e["name"] for e in manifest() if e["exporter"] == "dynamo")
TORCHSCRIPT = sorted(e["name"] for e in manifest() if e["exporter"] == "torchscript")


def _check_json(tmp_path: Path, model: str | Path, *extra: str) -> tuple[int, dict]:
    out = tmp_path / "check.json"
    code = main(["check", str(model), "--backend", "static", "--json", str(out), *extra])
    return code, json.loads(out.read_text())


def test_real_dynamo_export_every_checked_node_has_its_source_line(tmp_path):
    code, data = _check_json(tmp_path, DATA / "tiny_dynamo.onnx")
    assert code == 0 and len(data["nodes"]) == 10
    for node in data["nodes"]:
        src = node["source"]
        assert src["origin"] == "dynamo metadata" and " at tiny_model.py:" in src["line"]
        assert src["stack"] and all(set(f) == {"file", "line", "function", "code"} for f in src["stack"])
    fc = next(n for n in data["nodes"] if n["name"] == "node_linear_1")
    assert fc["source"]["module"] == "layer.1.fc" and fc["source"]["line"].startswith("layer.1.fc (Linear) at tiny_model.py:8")


@pytest.mark.parametrize("name", DYNAMO)
def test_every_node_of_a_dynamo_sample_has_a_source_line_from_its_metadata(tmp_path, name):
    _, data = _check_json(tmp_path, sample_path(name), "--no-build")
    model = onnx.load(sample_path(name))
    assert [n["name"] for n in data["nodes"]] == [n.name for n in model.graph.node]
    for node, proto in zip(data["nodes"], model.graph.node):
        src = node["source"]
        assert src["origin"] == "dynamo metadata"
        own = {p.key: p.value for p in proto.metadata_props}
        if STACK_TRACE not in own:  # a node the exporter's optimizer made (a merged Split): its consumer's trace
            assert src["via"].startswith("consumer ")
            continue
        assert "via" not in src
        trace = own[STACK_TRACE]
        frame = src["stack"][-1] if all(is_torch_frame(f["file"]) for f in src["stack"]) else \
            [f for f in src["stack"] if not is_torch_frame(f["file"])][-1]
        assert f' at {frame["file"].rsplit("/", 1)[-1]}:{frame["line"]} in {frame["function"]}' in src["line"]
        assert f'File "{frame["file"]}", line {frame["line"]}' in trace
        assert not any(f["file"].startswith("/") for f in src["stack"])  # paths made relative by generate.py
    model_lines = [n for n in data["nodes"] if "modeling_" in n["source"]["line"] or "generate.py" in n["source"]["line"]]
    if name.split("_dynamo")[0] in ("bert", "gpt2", "vit", "llama"):
        assert len(model_lines) > len(data["nodes"]) // 2  # most nodes point into the transformers model code


def is_torch_frame(file: str) -> bool:
    return file.startswith(("torch/", "onnxscript/", "transformers/utils/"))


@pytest.mark.parametrize("name", TORCHSCRIPT)
def test_torchscript_samples_list_a_module_path_per_node(tmp_path, name):
    _, data = _check_json(tmp_path, sample_path(name), "--no-build")
    names = [n.name for n in onnx.load(sample_path(name)).graph.node]
    assert [n["name"] for n in data["nodes"]] == names
    for node in data["nodes"]:
        src = node["source"]
        assert src["origin"] == "TorchScript scope"
        if node["name"].startswith("/"):  # a scoped name: its own module; else the module of its consumer
            assert src["module"] == ".".join(p for p in node["name"].split("/")[1:-1]) and "via" not in src
        else:
            assert src["via"].startswith("consumer /")


def test_check_text_and_html_show_the_source(tmp_path, capsys):
    code = main(["check", str(sample_path("hostile_unique")), "--backend", "static", "--html", str(tmp_path / "r.html")])
    assert code == 1
    assert "source: top-level module" in capsys.readouterr().out
    report = check_model(DATA / "tiny_dynamo.onnx", select_backend("static"), build=False)
    page = capability_html(report)
    assert page.count('<td class="source">') == 10 and "<th>source</th>" in page
    assert "layer.0.fc (Linear) at tiny_model.py:8 in forward" in page and "<summary>stack</summary>" in page


def test_mark_all_names_the_source_of_the_first_divergent_node(tmp_path, capsys):
    model = onnx.load(DATA / "tiny_dynamo.onnx")
    weight = next(t for t in model.graph.initializer if t.name == "layer.1.fc.weight")
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 3.0, weight.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, bad)
    out = tmp_path / "v.json"
    code = main(["validate", str(DATA / "tiny_dynamo.onnx"), str(bad), "--mark-all", "--json", str(out)])
    assert code == 1
    first = json.loads(out.read_text())["first_divergence"]
    assert first["node"] == "node_linear_1" and first["source"]["module"] == "layer.1.fc"
    assert first["source"]["stack"][-1]["file"].endswith("torch/nn/modules/linear.py")
    assert "source: layer.1.fc (Linear) at tiny_model.py:8" in capsys.readouterr().out


def test_explained_sites_and_notes_carry_sources(tmp_path, capsys):
    report = tmp_path / "r.json"
    code = main(["optimize", str(sample_path("bert_ts_op14")), "-o", str(tmp_path / "o.onnx"), "--preset", "trt",
                 "--explain", "fuse-attention", "--precision", "fp16", "--report", str(report)])
    assert code == 0
    passes = {p["name"]: p for p in json.loads(report.read_text())["passes"]}
    sites = passes["fuse-attention"]["sites"]
    assert [s["source"]["module"] for s in sites] == [f"m.encoder.layer.{i}.attention.self" for i in range(2)]
    named = passes["convert-precision"]["note_sources"]  # the nodes its "kept in fp32" note lists
    assert named["/m/encoder/layer.0/output/Add"]["module"] == "m.encoder.layer.0.output"
    assert named["fuse-layernorm/1"]["module"] == "m.encoder.layer.0.attention.output.LayerNorm"  # a fused node
    out = capsys.readouterr().out
    assert "source: m.encoder.layer.1.attention.self" in out
    assert "/m/encoder/layer.1/output/Add: m.encoder.layer.1.output" in out


def test_nodes_without_a_trace_have_no_source_key(tmp_path):
    model = onnx.load(sample_path("bert_dynamo"))
    for node in model.graph.node:
        del node.metadata_props[:]
    path = tmp_path / "stripped.onnx"
    onnx.save(model, path)
    _, data = _check_json(tmp_path, path, "--no-build")
    assert data["nodes"] and not any("source" in n for n in data["nodes"])
    np.testing.assert_equal(len(data["nodes"]), len(model.graph.node))
