"""Plain-words reasons and remedies from a real `surgery check` (TensorRT-RTX backend) for ops the parser
rejects with only "false": integer quantized ops, data-dependent shapes, unregistered plugins."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.trt import remedies, rules
from converter.cli.main import main
from tests.converter import tiny

pytest.importorskip("tensorrt_rtx")
SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"


def _check(path: str | Path, tmp_path: Path) -> dict[str, dict]:
    """Run `surgery check --backend tensorrt-rtx` and return the not-supported nodes by op."""
    out = tmp_path / "report.json"
    assert main(["check", str(path), "--backend", "tensorrt-rtx", "--json", str(out)]) == 1
    return {n["op"]: n for n in json.loads(out.read_text())["nodes"] if n["status"] != "supported"}


def _conv_matmul(tmp_path: Path) -> Path:
    """x[1,3,4,4] -> Conv -> Flatten -> MatMul -> y[1,5] (float weights)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((16, 5)).astype(np.float32), "m")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Flatten", ["c"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "m"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    path = tmp_path / "float.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _assert_plain(node: dict, *remedy_words: str) -> None:
    assert node["reason"] and node["reason"] != "false" and "false" not in node["reason"].split()
    assert node["remedy"] != remedies.NO_REMEDY
    for word in remedy_words:
        assert word in node["remedy"]


def test_integer_quantized_ops_name_qdq(tmp_path):
    quantization = pytest.importorskip("onnxruntime.quantization")
    quantized = tmp_path / "q.onnx"
    quantization.quantize_dynamic(str(_conv_matmul(tmp_path)), str(quantized))  # QOperator: ConvInteger, ...
    bad = _check(quantized, tmp_path)
    assert set(bad) == {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}
    for op, node in bad.items():
        assert f"'{op}' is an integer-arithmetic quantized op" in node["reason"]
        assert "Q/DQ" in node["reason"] and "QuantizeLinear/DequantizeLinear" in node["reason"]
        _assert_plain(node, "QDQ", "QuantFormat.QDQ", "ModelOpt", "surgery partition", "surgery run-partitioned")


def test_unique_is_data_dependent_and_goes_to_partition(tmp_path):
    node = _check(SAMPLES / "hostile_unique.onnx", tmp_path)["Unique"]
    assert "data-dependent shape" in node["reason"]
    _assert_plain(node, "surgery partition", "surgery run-partitioned")


def test_nonzero_names_the_static_pass_and_partition(tmp_path):
    node = _check(tiny.save(tiny.with_nonzero(), tmp_path, "nz"), tmp_path)["NonZero"]
    assert "data-dependent shape" in node["reason"] and "NonZero plugin" in node["reason"]
    _assert_plain(node, "pass rewrite-static-nonzero", "surgery partition")


def test_unregistered_plugin_names_plugins_option(tmp_path):
    node = _check(tiny.save(tiny.with_plugin(), tmp_path, "plug"), tmp_path)["MissingPlugin_TRT"]
    assert node["kind"] == "plugin-not-loaded" and "not in the TensorRT plugin registry" in node["reason"]
    _assert_plain(node, "--plugins", "surgery partition")


def test_bare_false_message_is_never_the_reason():
    assert rules.translate("false", "Frob") == "the parser rejected 'Frob' without saying why (its message: 'false')"
    assert rules.translate("false", "Unique").startswith("the output shape of 'Unique'")
