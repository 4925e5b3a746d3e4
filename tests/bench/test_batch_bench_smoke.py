"""Smoke test of bench/batch.py: one small sample, --jobs 1 and 2, no Ray."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_batch", ROOT / "bench" / "batch.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.trt
def test_bench_reports_items_per_hour_per_configuration(tmp_path, capsys):
    bench = _load_bench()
    out = tmp_path / "bench.json"
    assert bench.main(["--models", "hostile_topk", "--jobs", "1,2", "--no-ray", "--json", str(out),
                       "--keep", str(tmp_path / "work")]) == 0
    data = json.loads(out.read_text())
    assert data["models"] == ["hostile_topk"] and [c["jobs"] for c in data["configs"]] == [1, 2]
    for config in data["configs"]:
        assert config["items"] == 2 and config["passed"] == 2 and config["items_per_hour"] > 0
        assert config["verdicts"] == {"hostile_topk/fp16": "passed", "hostile_topk/fp32": "passed"}
        assert config["cpu_s"] > 0
    printed = capsys.readouterr().out
    assert "speed-up --jobs 2 vs --jobs 1" in printed and "(same verdicts)" in printed
    assert (tmp_path / "work" / "jobs_2" / "summary.json").is_file()
