"""optimize shows the pipeline it ran and every pass an option added; a --passes pipeline is not edited
except for the passes its options need, and an impossible --emit is refused before any work."""
from __future__ import annotations

import json

import pytest

from converter.cli.main import main
from tests.samples import sample_path


def test_passes_added_by_options_are_reported(tmp_path, capsys):
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    assert main(["optimize", str(sample_path("cnn_ts")), "-o", str(out), "--precision", "fp16", "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["added_by_options"] == {"convert-precision": "--precision"}
    assert data["pipeline"].endswith(",convert-precision")
    printed = capsys.readouterr().out
    assert f"pipeline: {data['pipeline']}" in printed and "convert-precision added for --precision" in printed


def test_a_pipeline_that_already_has_the_pass_is_not_edited(tmp_path):
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    assert main(["optimize", str(sample_path("cnn_ts")), "-o", str(out), "--passes", "infer-shapes,convert-precision",
                 "--precision", "fp16", "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["pipeline"] == "infer-shapes,convert-precision" and data["added_by_options"] == {}


def test_an_emit_the_pipeline_cannot_honour_is_refused_before_writing(tmp_path, capsys):
    out = tmp_path / "o.onnx"
    assert main(["optimize", str(sample_path("bert_ts")), "-o", str(out), "--passes", "fuse-layernorm,fuse-skip-layernorm",
                 "--emit", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "fuse-skip-layernorm cannot emit 'onnx'" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("emit", ["onnx", "ort", "plugin"])
def test_the_trt_preset_runs_for_every_emit(tmp_path, emit):
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    assert main(["optimize", str(sample_path("bert_ts")), "-o", str(out), "--preset", "trt", "--emit", emit,
                 "--report", str(report)]) == 0
    names = {p["name"] for p in json.loads(report.read_text())["passes"]}
    assert ("fuse-skip-layernorm" in names) == (emit != "onnx") and ("fuse-rotary" in names) == (emit != "plugin")
