"""inspect ENGINE and bench ENGINE|MODEL: measured where TensorRT can run engines, skipped with TensorRT's
reason elsewhere (never a number); run's latency likewise."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from converter.cli.main import main
from converter.runtime.validate import engine_skip_reason
from converter.trt.backends import select_backend
from converter.trt.bench import BenchOptions, BenchResult
from tests.samples import sample_path


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> tuple[Path, str | None]:
    """A cnn_ts engine and why it cannot run here (None where it can)."""
    path = tmp_path_factory.mktemp("engine") / "cnn.engine"
    assert main(["convert", str(sample_path("cnn_ts")), "-o", str(path)]) == 0
    return path, engine_skip_reason(select_backend("auto"), path.read_bytes())


def _runs(engine: tuple[Path, str | None]) -> Path:
    path, reason = engine
    if reason:
        pytest.skip(f"engines cannot run here: {reason}")
    return path


def _cannot_run(engine: tuple[Path, str | None]) -> tuple[Path, str]:
    path, reason = engine
    if reason is None:
        pytest.skip("engines run here: the skip path is not taken")
    return path, reason


@pytest.mark.trt
def test_inspect_engine_lists_io_and_layers(engine, capsys):
    path = _runs(engine)
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [(t["name"], t["mode"]) for t in info["io"]] == [("x", "input"), ("y", "output")]
    assert info["io"][0]["shape"][1:] == [3, 32, 32] and info["layers"] and all("Name" in layer for layer in info["layers"])


@pytest.mark.trt
def test_inspect_engine_is_skipped_with_tensorrts_reason(engine, capsys):
    path, reason = _cannot_run(engine)
    assert main(["inspect", str(path)]) == 3
    assert capsys.readouterr().out.strip() == f"skipped: {reason}"
    assert main(["inspect", str(path), "--json"]) == 3
    assert json.loads(capsys.readouterr().out) == {"path": str(path), "status": "skipped", "skipped": reason}


@pytest.mark.trt
@pytest.mark.parametrize("graph", [False, True])
def test_bench_engine_measures_percentiles_and_throughput(engine, tmp_path, graph):
    path = _runs(engine)
    out, times, profile = tmp_path / "b.json", tmp_path / "t.json", tmp_path / "p.json"
    args = ["bench", str(path), "--warmup", "50", "--iterations", "20", "--duration", "0.2", "--json", str(out),
            "--export-times", str(times), "--export-profile", str(profile)] + (["--use-cuda-graph"] if graph else [])
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["status"] == "measured" and result["inferences"] >= 20 and result["throughput_qps"] > 0
    for kind in ("gpu_compute_ms", "latency_ms"):
        s = result[kind]
        assert 0 < s["min"] <= s["median"] <= s["p90"] <= s["p95"] <= s["p99"] <= s["max"]
    assert len(json.loads(times.read_text())) == result["inferences"]
    layers = json.loads(profile.read_text())
    assert layers and abs(sum(layer["percent"] for layer in layers) - 100.0) < 1e-6


@pytest.mark.trt
def test_bench_is_skipped_with_tensorrts_reason(engine, tmp_path, capsys):
    path, reason = _cannot_run(engine)
    out = tmp_path / "b.json"
    assert main(["bench", str(path), "--json", str(out)]) == 3
    assert capsys.readouterr().out.strip() == f"skipped: {reason}"
    assert json.loads(out.read_text()) == {"status": "skipped", "skipped": reason}
    # a model is built first, then skipped the same way; --save-engine keeps what was built
    saved = tmp_path / "kept.engine"
    assert main(["bench", str(sample_path("cnn_ts")), "--save-engine", str(saved)]) == 3
    assert saved.stat().st_size > 0 and capsys.readouterr().out.startswith("skipped: ")


@pytest.mark.trt
def test_run_reports_latency_skipped_with_the_reason(engine, tmp_path):
    _, reason = _cannot_run(engine)
    out = tmp_path / "run"
    main(["run", str(sample_path("cnn_ts")), "-o", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert report["engine"]["built"] is True
    assert report["latency"] == {"status": "skipped", "skipped": report["validation"]["engine_vs_original"]["skipped"]}
    assert report["latency"]["skipped"].split(":")[0] == reason.split(":")[0]


def test_bench_statistics():
    result = BenchResult([1.0, 2.0, 3.0, 4.0, 10.0], [2.0] * 5, 0.5, BenchOptions())
    j = result.to_json()
    assert j["gpu_compute_ms"] == pytest.approx({"min": 1.0, "max": 10.0, "mean": 4.0, "median": 3.0, "p90": 7.6,
                                                 "p95": 8.8, "p99": 9.76})
    assert j["throughput_qps"] == 10.0 and j["inferences"] == 5
    assert result.times()[0] == {"computeMs": 1.0, "latencyMs": 2.0}


def test_bench_user_errors(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "missing.engine")]) == 2
    assert main(["bench", str(sample_path("cnn_ts")), "--iterations", "0"]) == 2
    assert main(["bench", str(sample_path("cnn_ts")), "--json", str(sample_path("cnn_ts"))]) == 2
    assert "error:" in capsys.readouterr().err
