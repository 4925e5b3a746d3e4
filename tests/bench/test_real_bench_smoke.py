"""Smoke test of ``bench/pipeline.py --real`` (floor and surgery only) and of its ORT-equal check."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("external", [False, True])
def test_real_mode_on_a_sample_export(tmp_path, capsys, external):
    exports = tmp_path / "exports"
    exports.mkdir()
    shutil.copy(ROOT / "sample_models" / "bert_ts.spec.json", exports / "bert_ts.spec.json")
    onnx.save_model(onnx.load(ROOT / "sample_models" / "bert_ts.onnx"), exports / "bert_ts.onnx",
                    save_as_external_data=external, location="bert_ts.onnx.data")
    (exports / "bert_ts.bench.json").write_text(json.dumps(
        {"family": "bert", "exporter": "torchscript", "opset": 17, "ort_model_type": "bert", "num_heads": 2,
         "hidden_size": 32}))
    out = tmp_path / "real.json"
    assert _load("pipeline").main(["--real", str(exports), "--skip-peers", "--runs", "1", "--json", str(out),
                                   "--peers-python", sys.executable]) == 0
    floor, ours = json.loads(out.read_text())
    assert floor["external"] is ours["external"] is external
    assert (floor["tool"], ours["tool"]) == ("floor(load+save)", "surgery --preset trt")
    assert floor["ort_equal"] and floor["max_abs"] == 0.0 and floor["nodes"] == 286
    # the sample's two erf GELUs are fused, and the output still matches the original on onnxruntime
    assert ours["fusions"]["Gelu"] == 2 and ours["nodes"] < floor["nodes"]
    assert ours["ort_equal"] and ours["max_abs"] < 1e-4
    printed = capsys.readouterr().out
    assert "targets: time" in printed and ("external data" in printed) is external


def test_ort_equal_compare_uses_atol_plus_rtol():
    compare = _load("_ort_equal").compare
    ref = [np.array([1.0, 100.0], dtype=np.float32)]
    inside = compare([np.array([1.0015, 100.09], dtype=np.float32)], ref)   # 1e-3 + 1e-3 * |ref|
    outside = compare([np.array([1.0025, 100.0], dtype=np.float32)], ref)
    assert inside["ok"] and abs(inside["max_abs"] - 0.09) < 1e-4
    assert not outside["ok"] and abs(outside["max_abs"] - 0.0025) < 1e-5
    assert compare([np.zeros(3, np.float32)], [np.zeros(2, np.float32)])["error"] == "shape [3] != [2]"
