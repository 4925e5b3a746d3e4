"""The per-node precision report: every node of the final model with its precision and the rule behind it,
for fp16/bf16 (convert-precision's reasons) and int8/fp8 (the quantization step's), in the JSON and the HTML."""
from __future__ import annotations

import json
import re

import onnx
import pytest

from converter.cli.main import main
from converter.optimize import OptimizeOptions, optimize_file
from converter.precision_report import precision_report
from converter.runtime.quantize import QuantizeOptions
from tests.converter import tiny
from tests.helpers import apply_pass
from tests.samples import sample_path


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, tuple[onnx.ModelProto, dict]]:
    folder = tmp_path_factory.mktemp("precision")
    out = {}
    for mode in ("fp16", "bf16", "int8", "fp8"):
        quant = QuantizeOptions(mode=mode, calibration_samples=4) if mode in ("int8", "fp8") else None
        path = folder / f"bert.{mode}.onnx"
        report = optimize_file(sample_path("bert_ts"), path, OptimizeOptions(precision=mode, quantize=quant))
        out[mode] = onnx.load(str(path)), report
    return out


@pytest.mark.parametrize("mode", ["fp16", "bf16", "int8", "fp8"])
def test_every_node_is_listed_with_a_precision_and_a_reason(reports, mode):
    model, report = reports[mode]
    rows = report["precision"]["nodes"]
    assert [r["node"] for r in rows] == [n.name for n in model.graph.node]
    assert all(r["precision"] and r["rule"] and r["reason"] for r in rows)
    assert report["precision"]["mode"] == mode and report["precision"]["nodes_total"] == len(rows)
    assert sum(report["precision"]["summary"].values()) == len(rows) == sum(report["precision"]["rules"].values())


@pytest.mark.parametrize("mode", ["fp16", "bf16"])
def test_low_float_reasons_come_from_convert_precision(reports, mode):
    _, report = reports[mode]
    rows = {r["node"]: r for r in report["precision"]["nodes"]}
    ln = rows["/m/embeddings/LayerNorm/LayerNormalization"]
    assert (ln["precision"], ln["rule"]) == ("fp32", "normalization")
    soft = rows["/m/encoder/layer.0/attention/self/Softmax"]
    assert (soft["precision"], soft["rule"]) == ("fp32", "softmax")
    mm = rows["/m/encoder/layer.0/attention/self/query/MatMul"]
    assert (mm["precision"], mm["rule"]) == (mode, "converted")
    rules = report["precision"]["rules"]
    assert rules["island-chain"] > 0 and rules["cast"] > 0
    if mode == "fp16":  # -1e9 fits bf16's range
        assert rules["large-constant"] == 1
    inserted = [r for r in rows.values() if r["rule"] == "cast" and r["node"].startswith("convert-precision/")]
    assert inserted and all("inserted by convert-precision" in r["reason"] for r in inserted)


@pytest.mark.parametrize("mode", ["int8", "fp8"])
def test_quantized_modes_name_the_rule_for_each_float_node(reports, mode):
    _, report = reports[mode]
    rows = {r["node"]: r for r in report["precision"]["nodes"]}
    assert rows["/m/encoder/layer.0/output/Add"]["rule"] == "residual-add"
    assert rows["/m/encoder/layer.0/output/LayerNorm/LayerNormalization"]["rule"] == "normalization"
    assert rows["/m/encoder/layer.0/attention/self/Softmax"]["rule"] == "softmax"
    quantized = [r for r in rows.values() if r["rule"] == "quantized"]
    assert quantized and all(r["precision"] == mode and "error" in r for r in quantized)
    assert {r["precision"] for r in rows.values() if r["op"] in ("QuantizeLinear", "DequantizeLinear")} == {mode}
    kept = [r for r in rows.values() if r["op"] == "MatMul" and r["rule"] != "quantized"]
    assert all(r["precision"] == "fp32" and r["rule"] == "measured-error" for r in kept)  # fp8's P.V, if any


def test_tiny_layernorm_block_rules(rng):
    model, result = apply_pass(tiny.layernorm_block(), "convert-precision", ctx_options={"precision": "fp16"})
    kept = {s["site"]: s["reason"] for s in result.sites if s["outcome"] == "kept-fp32"}
    rows = {r["node"]: r for r in precision_report(model, "fp16", kept_fp32=kept)["nodes"]}
    assert rows["mean1"]["rule"] == "reduction" and rows["pow"]["rule"] == "range-sensitive"
    assert rows["add_mask"]["rule"] == "large-constant" and rows["sub"]["rule"] == "island-chain"
    assert rows["mm"]["precision"] == "fp16" and rows["softmax"]["rule"] == "softmax"


def test_cli_prints_the_summary_and_writes_the_html(tmp_path, capsys):
    out, rep, page = tmp_path / "o.onnx", tmp_path / "r.json", tmp_path / "r.html"
    assert main(["optimize", str(sample_path("cnn_ts")), "-o", str(out), "--precision", "int8",
                 "--calibration-samples", "2", "--report", str(rep), "--html", str(page)]) == 0
    printed = capsys.readouterr().out
    assert "precision (int8): 31 nodes: 11 fp32, 20 int8" in printed
    assert "quantization validation: passed" in printed
    data = json.loads(rep.read_text())
    html = page.read_text()
    table = html[html.index('class="precision-nodes"'):]
    assert len(re.findall(r"<tr><td>", table)) == data["precision"]["nodes_total"]
    assert "measured" not in data["precision"]["rules"] and "quant-validation" in html


def test_html_path_is_checked_before_any_work(tmp_path, capsys):
    src = sample_path("cnn_ts")
    assert main(["optimize", str(src), "-o", str(tmp_path / "o.onnx"), "--precision", "int8", "--html", str(src)]) == 2
    assert not (tmp_path / "o.onnx").exists()


def test_a_shape_reading_an_fp16_tensor_is_reported_as_reading_either_precision(tmp_path):
    out = tmp_path / "o.onnx"
    report = tmp_path / "r.json"
    assert main(["optimize", str(sample_path("bert_ts")), "-o", str(out), "--preset", "trt", "--emit", "ort",
                 "--precision", "fp16", "--report", str(report)]) == 0
    nodes = json.loads(report.read_text())["precision"]["nodes"]
    shapes = [n for n in nodes if n["rule"] == "reads-either"]
    assert shapes and all(n["op"] in ("Shape", "IsNaN") and n["precision"] == "fp16" for n in shapes)
    casts = [n for n in nodes if n["op"] == "Cast" and "convert-precision" in n["node"]]
    # only the fp32 graph output: the finfo.min mask fill is clamped to -65504 and the mask runs in fp16;
    # LayerNorm, SkipLayerNorm, Gelu and attention run in fp16 for onnxruntime, no Shape reads through a Cast
    assert sorted(n["precision"] for n in casts) == ["fp32"]
