"""Malformed models, each written as raw bytes by a function of the target folder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _raw_model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "bad", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _x(name="x"):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [2])


def _relu_model() -> onnx.ModelProto:
    return _raw_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_x()], [_x("y")])


def empty(d: Path) -> Path:
    (p := d / "empty.onnx").write_bytes(b"")
    return p


def truncated(d: Path) -> Path:
    data = _relu_model().SerializeToString()
    (p := d / "truncated.onnx").write_bytes(data[: len(data) // 2])
    return p


def random_bytes(d: Path) -> Path:
    (p := d / "random.onnx").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return p


def json_file(d: Path) -> Path:
    (p := d / "model.onnx").write_text(json.dumps({"graph": {"node": []}}))
    return p


def cycle(d: Path) -> Path:
    m = _raw_model([helper.make_node("Add", ["x", "b"], ["a"], name="n1"), helper.make_node("Relu", ["a"], ["b"], name="n2")],
                   [_x()], [_x("a")])
    (p := d / "cycle.onnx").write_bytes(m.SerializeToString())
    return p


def dangling_input(d: Path) -> Path:
    m = _raw_model([helper.make_node("Add", ["x", "ghost"], ["y"], name="add")], [_x()], [_x("y")])
    (p := d / "dangling.onnx").write_bytes(m.SerializeToString())
    return p


def duplicate_outputs(d: Path) -> Path:
    m = _raw_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_x()], [_x("y"), _x("y")])
    (p := d / "dup.onnx").write_bytes(m.SerializeToString())
    return p


def future_opset(d: Path) -> Path:
    m = _relu_model()
    m.opset_import[0].version = 99
    (p := d / "future.onnx").write_bytes(m.SerializeToString())
    return p


def untyped_input(d: Path) -> Path:
    m = _raw_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [helper.make_empty_tensor_value_info("x")], [_x("y")])
    (p := d / "untyped.onnx").write_bytes(m.SerializeToString())
    return p


def empty_op_type(d: Path) -> Path:
    m = _raw_model([helper.make_node("", ["x"], ["y"], name="blank")], [_x()], [_x("y")])
    (p := d / "emptyop.onnx").write_bytes(m.SerializeToString())
    return p


def bad_initializer_size(d: Path) -> Path:
    w = numpy_helper.from_array(np.ones(2, np.float32), "w")
    w.dims[:] = [3]
    m = _raw_model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [_x()], [_x("y")], [w])
    (p := d / "badinit.onnx").write_bytes(m.SerializeToString())
    return p


def missing_external_data(d: Path) -> Path:
    w = numpy_helper.from_array(np.ones(2, np.float32), "w")
    m = _raw_model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [_x()], [_x("y")], [w])
    onnx.external_data_helper.convert_model_to_external_data(m, location="weights.bin", size_threshold=0)
    (p := d / "ext.onnx").write_bytes(m.SerializeToString())
    return p


def negative_input_dim(d: Path) -> Path:
    m = _raw_model([helper.make_node("Relu", ["x"], ["y"], name="relu")],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, -3])], [_x("y")])
    (p := d / "negdim.onnx").write_bytes(m.SerializeToString())
    return p


def negative_initializer_dim(d: Path) -> Path:
    w = numpy_helper.from_array(np.ones(2, np.float32), "w")
    w.dims[:] = [-2]
    m = _raw_model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [_x()], [_x("y")], [w])
    (p := d / "neginit.onnx").write_bytes(m.SerializeToString())
    return p


MALFORMED = {
    "empty": (empty, "file is empty"),
    "truncated": (truncated, "not an ONNX model"),
    "random-bytes": (random_bytes, "not an ONNX model"),
    "json": (json_file, "not an ONNX model"),
    "cycle": (cycle, "cycle"),
    "dangling-input": (dangling_input, "nothing produces"),
    "duplicate-outputs": (duplicate_outputs, "duplicate graph output"),
    "future-opset": (future_opset, "from the future"),
    "untyped-input": (untyped_input, "has no type"),
    "empty-op-type": (empty_op_type, "empty op type"),
    "bad-initializer-size": (bad_initializer_size, "need 12"),
    "missing-external-data": (missing_external_data, "is missing"),
    "negative-input-dim": (negative_input_dim, "negative dimension"),
    "negative-initializer-dim": (negative_initializer_dim, "negative dimension"),
}
