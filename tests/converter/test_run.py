"""surgery run: optimize -> check -> convert -> validate on a sample model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from converter.cli.main import main

SAMPLE = Path(__file__).resolve().parents[2] / "sample_models" / "cnn_ts.onnx"


@pytest.mark.trt
@pytest.mark.skipif(not SAMPLE.is_file(), reason="sample_models/cnn_ts.onnx not generated")
def test_run_on_a_sample_writes_all_reports(tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(SAMPLE), "-o", str(out), "--backend", "tensorrt-rtx"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= {"optimize", "check", "engine", "validation"}
    assert (out / "model.opt.onnx").is_file() and (out / "report.html").is_file()
    assert report["check"]["supported"] is True
    assert report["engine"]["built"] is True and Path(report["engine"]["path"]).stat().st_size > 0
    assert report["validation"]["optimized_vs_original"]["status"] == "passed"
    engine_val = report["validation"]["engine_vs_original"]
    assert engine_val["status"] in ("passed", "skipped")
    if engine_val["status"] == "skipped":
        assert engine_val["skipped"]


def test_run_with_static_backend_records_why_no_engine(tmp_path):
    from tests.converter import tiny

    model = tiny.save(tiny.mlp(), tmp_path, "mlp")
    out = tmp_path / "run"
    assert main(["run", model, "-o", str(out), "--backend", "static"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["engine"]["built"] is False and "static" in report["engine"]["reason"]
    assert report["validation"]["engine_vs_original"]["status"] == "skipped"


@pytest.mark.trt
def test_run_on_an_fp16_model_holds_it_to_the_fp16_tolerance(tmp_path):
    """A user's fp16 export: run's validation takes the precision's tolerance and says so (it was fixed at
    the fp32 1e-4/1e-3 before); an explicit --atol/--rtol still wins."""
    half = tmp_path / "half.onnx"
    assert main(["optimize", str(SAMPLE), "-o", str(half), "--precision", "fp16"]) == 0
    out = tmp_path / "run"
    assert main(["run", str(half), "-o", str(out), "--backend", "tensorrt-rtx"]) == 0
    val = json.loads((out / "report.json").read_text())["validation"]["optimized_vs_original"]
    assert val["status"] == "passed" and "(fp16 candidate" in val["tolerance"]
    assert val["rtol"] == 1e-3 and val["atol"] == 1e-4
    out2 = tmp_path / "run2"
    assert main(["run", str(half), "-o", str(out2), "--backend", "tensorrt-rtx", "--rtol", "0.5"]) == 0
    val2 = json.loads((out2 / "report.json").read_text())["validation"]["optimized_vs_original"]
    assert val2["rtol"] == 0.5 and "--rtol given" in val2["tolerance"]
