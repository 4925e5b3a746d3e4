"""Fast smoke test of bench/fusion.py: ours only, one small model, few runs, no peers."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("onnxruntime")


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_fusion", ROOT / "bench" / "fusion.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_feeds_match_surgery_numerics():
    from converter.runtime.numerics import load_spec, random_feeds

    fusion = _load_bench()
    path = ROOT / "sample_models" / "unet_ts.spec.json"
    ours = fusion.random_feeds(fusion.load_spec(path), seed=0)
    ref = random_feeds(load_spec(path), seed=0)
    assert ours.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(ours[k], ref[k])
    assert fusion.random_feeds(fusion.load_spec(path), batch=3)["sample"].shape[0] == 3


def test_bench_cpu_and_optimized_dir(tmp_path, capsys):
    fusion = _load_bench()
    opt = tmp_path / "opt"
    assert fusion.main(["--models", "bert_ts_op14", "--export-optimized", str(opt)]) == 0
    assert (opt / "bert_ts_op14.onnx").is_file() and (opt / "bert_ts_op14.ort.onnx").is_file()
    out = tmp_path / "r.json"
    # the --cuda path minus CUDA: optimized models from a folder, no optimizer run
    assert fusion.main(["--models", "bert_ts_op14", "--skip-peers", "--optimized-dir", str(opt),
                        "--runs", "3", "--warmup", "1", "--batch", "2", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    (entry,) = data["models"]
    assert entry["native"] == {"layernorm": 0, "rmsnorm": 0, "gelu": 0, "attention": 0, "groupnorm": 0}
    # fp32 attention stays decomposed under the trt preset (no dedicated TensorRT kernel)
    assert entry["tools"]["ours"]["counts"] == {"layernorm": 5, "rmsnorm": 0, "gelu": 2, "attention": 0, "groupnorm": 0}
    lat = entry["latency"]
    assert set(lat) == {"original", "ours", "ours-ort"}
    assert all(v["maxdiff"] < 1e-4 and v["median_ms"] > 0 for v in lat.values())
    text = capsys.readouterr().out
    assert "| bert_ts_op14 | attention |" in text and "not checked (peers skipped)" in text
