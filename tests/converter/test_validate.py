"""surgery validate: ONNX candidates on onnxruntime, --mark-all divergence, engines (skipped here)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from converter.trt.backends import select_backend
from converter.cli.main import main
from converter.runtime.validate import engine_skip_reason
from tests.converter import tiny


def _perturbed(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, init in enumerate(out.graph.initializer):
        if init.name == name:
            arr = numpy_helper.to_array(init).copy()
            arr.flat[0] += 1.0
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(arr, name))
    return out


def test_identical_models_pass(tmp_path):
    ref = tiny.save(tiny.mlp(), tmp_path, "ref")
    out = tmp_path / "v.json"
    assert main(["validate", ref, ref, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["status"] == "passed"
    o = data["outputs"][0]
    assert o["max_abs"] == 0 and o["cosine"] == pytest.approx(1.0) and o["histogram"]


def test_perturbed_weight_fails_and_mark_all_names_its_consumer(tmp_path, capsys):
    ref = tiny.save(tiny.mlp(), tmp_path, "ref")
    cand = tiny.save(_perturbed(tiny.mlp(), "b1"), tmp_path, "cand")
    out = tmp_path / "v.json"
    assert main(["validate", ref, cand, "--mark-all", "--json", str(out)]) == 1
    data = json.loads(out.read_text())
    assert data["status"] == "failed"
    assert data["first_divergence"]["node"] == "add1"  # the node consuming b1
    assert data["intermediates_compared"] == 3
    assert "first divergence: node 'add1'" in capsys.readouterr().out


def test_inputs_npz_and_tolerances(tmp_path):
    ref = tiny.save(tiny.mlp(), tmp_path, "ref")
    cand = tiny.save(_perturbed(tiny.mlp(), "w2"), tmp_path, "cand")
    np.savez(tmp_path / "in.npz", x=np.zeros((2, 8), np.float32))
    # with x = 0 the first row of w2 is multiplied by relu(b1) -> differs only where b1 > 0
    code = main(["validate", ref, cand, "--inputs", str(tmp_path / "in.npz"), "--atol", "10", "--rtol", "0"])
    assert code == 0
    assert main(["validate", ref, cand, "--inputs", str(tmp_path / "missing.npz")]) == 2


@pytest.mark.trt
def test_engine_candidate_is_skipped_with_a_reason_not_passed(tmp_path, capsys):
    ref = tiny.save(tiny.mlp(), tmp_path, "ref")
    engine = tmp_path / "mlp.engine"
    assert main(["convert", ref, "-o", str(engine), "--backend", "tensorrt-rtx"]) == 0
    backend = select_backend("tensorrt-rtx")
    if engine_skip_reason(backend, engine.read_bytes()) is None:
        pytest.skip("this machine can run the engine; covered by test_engine_candidate_runs")
    capsys.readouterr()
    assert main(["validate", ref, str(engine), "--backend", "tensorrt-rtx"]) == 3
    assert "skipped:" in capsys.readouterr().out


@pytest.mark.trt
@pytest.mark.engine
def test_engine_candidate_runs(tmp_path):
    ref = tiny.save(tiny.mlp(), tmp_path, "ref")
    engine = tmp_path / "mlp.engine"
    assert main(["convert", ref, "-o", str(engine)]) == 0
    reason = engine_skip_reason(select_backend("auto"), engine.read_bytes())
    if reason:
        pytest.skip(f"no runnable TensorRT engine here: {reason}")
    assert main(["validate", ref, str(engine), "--atol", "1e-3", "--rtol", "1e-3"]) == 0


def test_float32_candidate_gets_the_default_tolerance_and_says_why(tmp_path, capsys):
    ref = tiny.save(tiny.mlp(), tmp_path, "ref")
    out = tmp_path / "v.json"
    assert main(["validate", ref, ref, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert (data["atol"], data["rtol"], data["upcast"]) == (1e-4, 1e-3, "")
    assert "tolerance atol=0.0001 rtol=0.001 (float32 candidate: the defaults)" in capsys.readouterr().out


def test_fp16_candidate_gets_an_fp16_tolerance(tmp_path):
    from tests.helpers import apply_pass

    ref = tiny.save(tiny.mlp(), tmp_path, "ref")
    fp16, _ = apply_pass(tiny.mlp(), "convert-precision", ctx_options={"precision": "fp16"})
    cand = tiny.save(fp16, tmp_path, "fp16")
    out = tmp_path / "v.json"
    assert main(["validate", ref, cand, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["rtol"] == 1e-3 and data["tolerance"].startswith("atol=max(0.0001, 0.001*max|ref|)")
    assert data["outputs"][0]["atol"] >= 1e-4 and data["upcast"] == ""
