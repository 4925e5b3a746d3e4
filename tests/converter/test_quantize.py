"""optimize --precision int8|fp8|int8-weight-only: Q/DQ placement, numerics against the original, determinism,
calibration input, the measured-error and exclusion rules, and what TensorRT-RTX builds from the result."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.cli.main import main
from converter.optimize import OptimizeOptions, optimize_file
from converter.runtime.numerics import QUANT_THRESHOLDS, compare, load_spec, quantized_precision, random_feeds, run_ort
from converter.runtime.quantize import QuantizeOptions
from tests.converter.tiny import _model, _vi
from tests.samples import sample_path, spec_path

SAMPLES = {"cnn_ts": 5, "bert_ts": 16}  # Conv/MatMul nodes each sample has
FEW = QuantizeOptions(mode="int8", calibration_samples=4)  # keeps the tests quick


def _optimize(tmp: Path, name: str, mode: str = "int8", **quant) -> tuple[onnx.ModelProto, dict]:
    out = tmp / f"{name}.{mode}.onnx"
    opts = OptimizeOptions(precision=mode, quantize=QuantizeOptions(mode=mode, calibration_samples=4, **quant))
    report = optimize_file(sample_path(name), out, opts)
    return onnx.load(str(out)), report


@pytest.fixture(scope="module")
def int8(tmp_path_factory) -> dict[str, tuple[onnx.ModelProto, dict]]:
    folder = tmp_path_factory.mktemp("int8")
    return {name: _optimize(folder, name) for name in SAMPLES}


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _readers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


# ---- structure ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,quantized", SAMPLES.items())
def test_every_conv_matmul_reads_dq_inputs_and_nothing_else_does(int8, name, quantized):
    model, _ = int8[name]
    producers, readers, inits = _producers(model), _readers(model), _inits(model)
    targets = [n for n in model.graph.node if n.op_type in ("Conv", "MatMul")]
    assert len(targets) == quantized
    for n in targets:
        dq = producers[n.input[0]]
        assert dq.op_type == "DequantizeLinear" and producers[dq.input[0]].op_type == "QuantizeLinear", n.name
    for q in (n for n in model.graph.node if n.op_type == "QuantizeLinear"):  # a Q feeds only quantized nodes
        users = {r.op_type for dq in readers[q.output[0]] for r in readers[dq.output[0]]}
        assert users <= {"Conv", "MatMul"}, (q.name, users)
        assert not inits[q.input[2]].any()  # symmetric: zero point 0
        assert inits[q.input[2]].dtype == np.int8


def test_cnn_counts_and_per_channel_weights(int8):
    model, report = int8["cnn_ts"]
    ops = Counter(n.op_type for n in model.graph.node)
    assert (ops["QuantizeLinear"], ops["DequantizeLinear"]) == (5, 10)
    inits, producers = _inits(model), _producers(model)
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        dq = producers[conv.input[1]]
        weight, scale = inits[dq.input[0]], inits[dq.input[1]]
        assert weight.dtype == np.int8 and np.abs(weight).max() <= 127
        assert scale.shape == (weight.shape[0],)  # one scale per output channel
        assert next(a.i for a in dq.attribute if a.name == "axis") == 0
        assert len(conv.input) < 3 or conv.input[2] in inits and inits[conv.input[2]].dtype == np.float32  # bias float
    concat = next(n for n in model.graph.node if n.op_type == "Concat")
    assert all(producers[i].op_type != "DequantizeLinear" for i in concat.input if i in producers)  # stays float
    record = report["passes"][-1]
    assert record["name"] == "quantize-int8" and record["changed"] == 5
    assert record["stats"]["QuantizeLinear"] == 5 and record["stats"]["DequantizeLinear"] == 10


def test_bert_counts_residuals_and_normalizations_stay_float(int8):
    model, _ = int8["bert_ts"]
    ops = Counter(n.op_type for n in model.graph.node)
    assert (ops["QuantizeLinear"], ops["DequantizeLinear"]) == (16, 28)  # 16 activation pairs, 12 weight DQ
    producers, inits = _producers(model), _inits(model)
    for n in model.graph.node:
        if n.op_type in ("Add", "LayerNormalization", "Softmax"):
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in n.input), n.name
        if n.op_type == "MatMul" and producers[n.input[1]].input[0] in inits:
            dq = producers[n.input[1]]
            assert next(a.i for a in dq.attribute if a.name == "axis") == 1  # [K, N]: per output column
            assert inits[dq.input[1]].shape == (inits[dq.input[0]].shape[1],)


def test_gemm_with_trans_b_is_quantized_per_output_row(tmp_path):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((6, 8)).astype(np.float32), "w")
    model = _model([helper.make_node("Gemm", ["x", "w"], ["y"], name="gemm", transB=1)],
                   [_vi("x", [4, 8])], [_vi("y", [4, 6])], [w])
    src = tmp_path / "gemm.onnx"
    onnx.save(model, str(src))
    optimize_file(src, tmp_path / "q.onnx", OptimizeOptions(precision="int8", quantize=FEW))
    q = onnx.load(str(tmp_path / "q.onnx"))
    dq = _producers(q)[next(n for n in q.graph.node if n.op_type == "Gemm").input[1]]
    assert _inits(q)[dq.input[1]].shape == (6,) and next(a.i for a in dq.attribute if a.name == "axis") == 0


# ---- numerics ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SAMPLES)
def test_validates_against_the_original_within_the_thresholds(int8, name):
    model, report = int8[name]
    validation = report["quantization"]["validation"]
    assert validation["status"] == "passed" and "seeds other than the calibration's" in validation["feeds"]
    t = QUANT_THRESHOLDS["int8"]
    feeds = random_feeds(load_spec(spec_path(name)), seed=77)  # a feed neither calibration nor validation used
    ref, got = run_ort(onnx.load(str(sample_path(name))), feeds), run_ort(model, feeds)
    for out, value in ref.items():
        d = compare(value, got[out], out, rtol=0, atol=0, metrics=t)
        assert d.passed and d.cosine >= 0.99 and d.rel_l2 <= 0.1, d.describe()
        assert d.max_abs > 0  # it is quantized: not bit-equal to the original


@pytest.mark.parametrize("name", SAMPLES)
def test_every_quantized_node_has_a_measured_error(int8, name):
    _, report = int8[name]
    nodes = report["quantization"]["nodes"]
    assert len(nodes) == SAMPLES[name] and all(d["rule"] == "quantized" and 0 < d["error"] < 0.1 for d in nodes.values())


def test_same_inputs_give_byte_identical_output(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _optimize(a, "cnn_ts")
    _optimize(b, "cnn_ts")
    assert (a / "cnn_ts.int8.onnx").read_bytes() == (b / "cnn_ts.int8.onnx").read_bytes()


def test_a_broken_scale_fails_validate(tmp_path, int8):
    model, _ = int8["cnn_ts"]
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    scale = next(t for t in broken.graph.initializer if t.name == "x_scale")
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) / 50, "x_scale"))  # clips the input
    good_path, bad_path = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    onnx.save(model, str(good_path))
    onnx.save(broken, str(bad_path))
    ref = str(sample_path("cnn_ts"))
    assert main(["validate", ref, str(good_path), "--json", str(tmp_path / "g.json")]) == 0
    assert "int8 Q/DQ candidate" in json.loads((tmp_path / "g.json").read_text())["tolerance"]
    assert main(["validate", ref, str(bad_path)]) == 1


# ---- calibration ---------------------------------------------------------------------------------------------

def test_random_calibration_is_said_to_be_meaningless(int8):
    _, report = int8["cnn_ts"]
    assert report["quantization"]["random_calibration"] is True
    assert "meaningless for a real model" in report["quantization"]["calibration"]


def test_calibration_file_with_stacked_samples(tmp_path):
    specs = load_spec(spec_path("cnn_ts"))
    samples = [random_feeds(specs, seed=i)["x"] for i in range(3)]
    npz = tmp_path / "calib.npz"
    np.savez(npz, x=np.stack(samples).astype(np.float64))  # cast to the input's dtype
    _, report = _optimize(tmp_path, "cnn_ts", calibration_data=npz)
    q = report["quantization"]
    assert q["calibration"] == f"{npz} (3 samples)" and q["random_calibration"] is False
    assert q["validation"]["status"] == "passed" and "in-sample" in q["validation"]["feeds"]


def test_bad_calibration_files_are_user_errors(tmp_path, capsys):
    out = tmp_path / "o.onnx"
    np.savez(tmp_path / "rank.npz", x=np.zeros((3,), np.float32))
    np.savez(tmp_path / "name.npz", y=np.zeros((1, 3, 32, 32), np.float32))
    cases = {"rank.npz": "has 1 dims", "name.npz": "missing calibration input(s) x", "none.npz": "no such calibration file"}
    for file, said in cases.items():
        code = main(["optimize", str(sample_path("cnn_ts")), "-o", str(out), "--precision", "int8",
                     "--calibration-data", str(tmp_path / file)])
        err = capsys.readouterr().err
        assert code == 2 and said in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not out.exists()
    assert main(["optimize", str(sample_path("cnn_ts")), "-o", str(out), "--precision", "fp16",
                 "--calibration-data", str(tmp_path / "rank.npz")]) == 2


# ---- rules that keep a node in float -------------------------------------------------------------------------

def test_measured_error_keeps_nodes_float(tmp_path):
    model, report = _optimize(tmp_path, "cnn_ts", max_node_error=1e-9)
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    rows = {r["node"]: r for r in report["precision"]["nodes"]}
    conv = rows["/stem/stem.0/Conv"]
    assert conv["precision"] == "fp32" and conv["rule"] == "measured-error" and conv["error"] > 0


def test_excluded_node_stays_float_and_unknown_names_are_refused(tmp_path, capsys):
    model, report = _optimize(tmp_path, "cnn_ts", exclude=("/head/Conv",))
    head = next(n for n in model.graph.node if n.name == "/head/Conv")
    assert _producers(model)[head.input[0]].op_type != "DequantizeLinear"
    assert report["quantization"]["nodes"]["/head/Conv"]["rule"] == "excluded"
    assert Counter(n.op_type for n in model.graph.node)["QuantizeLinear"] == 4
    code = main(["optimize", str(sample_path("cnn_ts")), "-o", str(tmp_path / "x.onnx"), "--precision", "int8",
                 "--quantize-exclude", "nope"])
    assert code == 2 and "no node named 'nope'" in capsys.readouterr().err


# ---- fp8 and weight-only ---------------------------------------------------------------------------------------

def test_fp8_quantizes_gemms_only(tmp_path):
    bert, report = _optimize(tmp_path, "bert_ts", "fp8")
    assert quantized_precision(bert) == "fp8"
    assert max(o.version for o in bert.opset_import if o.domain in ("", "ai.onnx")) >= 19
    zps = [t for t in bert.graph.initializer if t.name.endswith("_zero_point")]
    assert zps and {t.data_type for t in zps} == {TensorProto.FLOAT8E4M3FN}
    assert report["quantization"]["validation"]["status"] == "passed"
    cnn, cnn_report = _optimize(tmp_path, "cnn_ts", "fp8")
    assert not any(n.op_type == "QuantizeLinear" for n in cnn.graph.node)
    assert {d["rule"] for d in cnn_report["quantization"]["nodes"].values()} == {"fp8-gemm-only"}


def test_int8_weight_only_dequantizes_weights_and_leaves_activations(tmp_path):
    model, report = _optimize(tmp_path, "bert_ts", "int8-weight-only")
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["QuantizeLinear"] == 0 and ops["DequantizeLinear"] == 12
    assert quantized_precision(model) == "int8-weight-only"
    rules = Counter(d["rule"] for d in report["quantization"]["nodes"].values())
    assert rules == {"weight-only": 12, "needs-constant-weight": 4}  # Q.K^T and P.V read no constant
    assert report["quantization"]["validation"]["status"] == "passed"


# ---- --validate-each -------------------------------------------------------------------------------------------

def test_validate_each_holds_the_step_to_its_own_tolerance(tmp_path):
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    assert main(["optimize", str(sample_path("cnn_ts")), "-o", str(out), "--precision", "int8", "--validate-each",
                 "--calibration-samples", "4", "--report", str(rep)]) == 0
    record = json.loads(rep.read_text())["passes"][-1]
    assert record["name"] == "quantize-int8"
    assert any("validated against the original" in n and "cosine >= 0.99" in n for n in record["notes"])


def test_numeric_guard_check_step_rejects_a_broken_quantization(tmp_path, int8):
    from converter.runtime.numerics import PRECISION_TOLERANCES
    from converter.runtime.validate_each import NumericGuard
    from surgery.errors import NumericMismatchError

    model, _ = int8["cnn_ts"]
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    inits = {t.name: t for t in broken.graph.initializer}
    for dq in (n for n in broken.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits):
        scale = inits[dq.input[1]]  # flips the sign of every weight
        scale.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(scale), scale.name))
    guard = NumericGuard(onnx.load(str(sample_path("cnn_ts"))), load_spec(spec_path("cnn_ts")), tmp_path / "dump")
    assert "cosine >= 0.99" in guard.check_step("quantize-int8", model, PRECISION_TOLERANCES["int8"])
    with pytest.raises(NumericMismatchError, match="step 'quantize-int8' changed the outputs"):
        guard.check_step("quantize-int8", broken, PRECISION_TOLERANCES["int8"])
    assert (tmp_path / "dump" / "after-quantize-int8.onnx").is_file()


# ---- classifier outputs: top-1 agreement ---------------------------------------------------------------------

def test_top1_agreement_is_judged_for_classifier_outputs(tmp_path):
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((32, 10)).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["logits"], name="mm2")]
    src = tmp_path / "clf.onnx"
    onnx.save(_model(nodes, [_vi("x", [8, 16])], [_vi("logits", [8, 10])], inits), str(src))
    report = optimize_file(src, tmp_path / "q.onnx", OptimizeOptions(precision="int8", quantize=FEW))
    out = report["quantization"]["validation"]["outputs"][0]
    assert out["top1"] is not None and out["top1"] >= 0.9 and out["passed"]
    ref, cand = np.eye(4), np.eye(4)[[0, 1, 3, 2]]  # two of four rows disagree
    d = compare(ref, cand, "y", rtol=0, atol=0, metrics=QUANT_THRESHOLDS["int8"], top1=True)
    assert d.top1 == 0.5 and not d.passed


# ---- what TensorRT-RTX makes of it -----------------------------------------------------------------------------

@pytest.mark.trt
@pytest.mark.parametrize("name", SAMPLES)
def test_tensorrt_rtx_parses_builds_and_runs_the_quantized_nodes_in_int8(tmp_path, int8, name):
    pytest.importorskip("tensorrt_rtx")
    from converter.trt.backends import select_backend
    from converter.trt.capability import check_model

    model, _ = int8[name]
    path = tmp_path / f"{name}.int8.onnx"
    onnx.save(model, str(path))
    report = check_model(path, select_backend("tensorrt-rtx"), spec_path=spec_path(name))
    assert report.supported and report.build.ok
    qdq = report.qdq
    assert qdq["parsed_layers"] == {"QUANTIZE": qdq["onnx"]["QuantizeLinear"], "DEQUANTIZE": qdq["onnx"]["DequantizeLinear"]}
    assert qdq["quantized_nodes"] == SAMPLES[name] and len(qdq["nodes"]) == SAMPLES[name]
    assert all(v["low_precision_inputs"] and "Int8" in v["input_types"] for v in qdq["nodes"].values())
    assert qdq["standalone_qdq_kernels"] == []
    assert report.to_json()["qdq"]["summary"][0].startswith("parsed:")


@pytest.mark.trt
def test_tensorrt_rtx_builds_fp8_gemms(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    from converter.trt.backends import select_backend
    from converter.trt.capability import check_model

    model, _ = _optimize(tmp_path, "bert_ts", "fp8")
    path = tmp_path / "bert.fp8.onnx"
    onnx.save(model, str(path))
    report = check_model(path, select_backend("tensorrt-rtx"), spec_path=spec_path("bert_ts"))
    assert report.supported and report.qdq["nodes"]
    assert all("FP8" in v["input_types"] for v in report.qdq["nodes"].values())
