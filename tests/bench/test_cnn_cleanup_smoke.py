"""Smoke test of bench/cnn_cleanup.py: ours only (no onnxslim), a sample and a zoo model from onnx's tests."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_cnn_cleanup", ROOT / "bench" / "cnn_cleanup.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_rows_for_a_sample_and_a_zoo_model(tmp_path, capsys):
    bench = _load_bench()
    if bench.zoo_dir() is None:
        pytest.skip("this onnx package ships no backend-test zoo models")
    out = tmp_path / "rows.json"
    assert bench.main(["--models", "cnn_ts,light_shufflenet", "--skip-peers", "--json", str(out)]) == 0
    rows = {r["model"]: r for r in json.loads(out.read_text())}
    assert rows["cnn_ts"]["folded"] == 0 and rows["cnn_ts"]["ours"] == rows["cnn_ts"]["no_folds"]
    shuffle = rows["light_shufflenet"]
    # 49 Conv -> BatchNormalization pairs, grouped Convs among them, all folded
    assert shuffle["folded"] == 49 and shuffle["ours"] == shuffle["no_folds"] - 49
    assert shuffle["random_weights"] and shuffle["max_rel_diff"] < 1e-5
    assert "light_shufflenet" in capsys.readouterr().out


def test_an_unknown_model_is_one_line():
    with pytest.raises(SystemExit, match="unknown model"):
        _load_bench().main(["--models", "nope", "--skip-peers"])
