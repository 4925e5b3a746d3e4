"""fp16/bf16 candidates validate on a CPU-only onnxruntime: bf16 through a float32 upcast, with tolerances
chosen from the candidate's precision; a broken bf16 candidate still fails."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.cli.main import main
from converter.runtime.numerics import low_precision, ort_refusal, run_ort, upcast_to_float32
from tests.converter import tiny
from tests.samples import sample_path

CASES = [("cnn_ts", "bf16"), ("cnn_ts", "fp16"), ("bert_ts", "bf16"), ("bert_ts", "fp16")]


@pytest.fixture(scope="module")
def candidates(tmp_path_factory) -> dict[tuple[str, str], tuple[Path, str]]:
    """``optimize --precision P --validate-each`` of each case: the output path and what the command printed."""
    folder = tmp_path_factory.mktemp("low_precision")
    return {case: _optimize(folder, *case) for case in CASES}


def _optimize(folder: Path, name: str, precision: str) -> tuple[Path, str]:
    import contextlib
    import io

    out = folder / f"{name}_{precision}.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["optimize", str(sample_path(name)), "--precision", precision, "--validate-each", "-o", str(out)])
    assert code == 0, printed.getvalue()
    return out, printed.getvalue()


def _validate(tmp_path: Path, reference: Path, candidate: Path, *extra: str) -> tuple[int, dict]:
    report = tmp_path / "v.json"
    code = main(["validate", str(reference), str(candidate), "--json", str(report), *extra])
    return code, json.loads(report.read_text())


@pytest.mark.parametrize("name,precision", CASES)
def test_optimize_validate_each_says_validated(candidates, name, precision):
    out, printed = candidates[name, precision]
    assert low_precision(onnx.load(str(out))) == precision
    assert "validated against the original on onnxruntime" in printed
    assert f"({precision} candidate:" in printed and "*max|ref|" in printed
    assert ("upcast to float32" in printed) == (precision == "bf16")  # onnxruntime runs fp16, not bf16


@pytest.mark.parametrize("name,precision", CASES)
def test_validate_original_and_candidate_passes(candidates, tmp_path, capsys, name, precision):
    out, _ = candidates[name, precision]
    code, data = _validate(tmp_path, sample_path(name), out)
    printed = capsys.readouterr().out
    assert code == 0 and data["status"] == "passed", printed
    assert data["rtol"] == {"fp16": 1e-3, "bf16": 1e-2}[precision]
    assert f"({precision} candidate:" in data["tolerance"]
    if precision == "bf16":
        assert "upcast to float32" in data["upcast"] and "rounded to bf16 and back" in data["upcast"]
        assert "note      candidate upcast to float32" in printed
    else:
        assert data["upcast"] == ""


def _doubled_weight(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with the largest float initializer multiplied by 2."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    floats = [t for t in out.graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.BFLOAT16)]
    target = max(floats, key=lambda t: int(np.prod(t.dims)))
    doubled = numpy_helper.to_array(target).astype(np.float32) * 2
    target.CopyFrom(helper.make_tensor(target.name, target.data_type, doubled.shape, doubled.ravel().tolist()))
    return out


@pytest.mark.parametrize("name", ["cnn_ts", "bert_ts"])
def test_broken_bf16_candidate_fails(candidates, tmp_path, name):
    out, _ = candidates[name, "bf16"]
    broken = tmp_path / "broken.onnx"
    onnx.save(_doubled_weight(onnx.load(str(out))), str(broken))
    code, data = _validate(tmp_path, sample_path(name), broken)
    assert code == 1 and data["status"] == "failed" and data["upcast"]


def test_given_tolerances_replace_the_precision_default(candidates, tmp_path):
    out, _ = candidates["bert_ts", "bf16"]
    code, data = _validate(tmp_path, sample_path("bert_ts"), out, "--atol", "1e-6", "--rtol", "0")
    assert code == 1 and data["tolerance"].startswith("atol=1e-06 rtol=0 (--atol and --rtol given")


def _bf16_mlp() -> onnx.ModelProto:
    """tiny.mlp with bf16 initializers, bf16 compute and float32 I/O (Casts at both ends)."""
    model = tiny.mlp()
    for t in model.graph.initializer:
        values = numpy_helper.to_array(t)
        t.CopyFrom(helper.make_tensor(t.name, TensorProto.BFLOAT16, values.shape, values.ravel().tolist()))
    graph = model.graph
    for node in graph.node:
        node.input[:] = ["x_bf16" if i == "x" else i for i in node.input]
        node.output[:] = ["y_bf16" if o == "y" else o for o in node.output]
    graph.node.insert(0, helper.make_node("Cast", ["x"], ["x_bf16"], to=TensorProto.BFLOAT16, name="cast_in"))
    graph.node.append(helper.make_node("Cast", ["y_bf16"], ["y"], to=TensorProto.FLOAT, name="cast_out"))
    return model


def test_upcast_keeps_weights_and_rounds_activations():
    model = _bf16_mlp()
    assert low_precision(model) == "bf16" and ort_refusal(model)
    upcast, counts = upcast_to_float32(model)
    assert ort_refusal(upcast) is None and counts["initializers"] == 3 and counts["rounded tensors"] >= 4
    for before, after in zip(model.graph.initializer, upcast.graph.initializer):
        assert after.data_type == TensorProto.FLOAT
        np.testing.assert_array_equal(numpy_helper.to_array(before).astype(np.float32), numpy_helper.to_array(after))
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)}
    exact = run_ort(tiny.mlp(), feeds)["y"]
    got = run_ort(upcast, feeds)["y"]
    assert not np.array_equal(got, exact)  # bf16 rounding is kept, not undone
    np.testing.assert_allclose(got, exact, rtol=5e-2, atol=5e-2 * np.abs(exact).max())


def test_hand_made_bf16_model_validates_and_its_broken_twin_fails(tmp_path):
    ref = tiny.save(tiny.mlp(), tmp_path, "ref")
    good = tiny.save(_bf16_mlp(), tmp_path, "bf16")
    bad = tiny.save(_doubled_weight(_bf16_mlp()), tmp_path, "bf16_broken")
    code, data = _validate(tmp_path, Path(ref), Path(good))
    assert code == 0 and "3 initializers" in data["upcast"]
    assert _validate(tmp_path, Path(ref), Path(bad))[0] == 1
