"""Valid models in awkward forms are accepted and repaired; outputs never replace inputs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from converter.cli import main
from tests.helpers import assert_same_outputs


def _model(nodes, dims=("N", 4), ir=8, inits=()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, list(dims))],
                          [helper.make_tensor_value_info("y", 1, list(dims))], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = ir
    return m


def _relu_then_neg(order):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Neg", ["r"], ["y"], name="neg")]
    return _model([nodes[i] for i in order])


def test_unsorted_nodes_are_sorted(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(_relu_then_neg([1, 0]), src)
    assert main(["optimize", str(src), "-o", str(tmp_path / "o.onnx"), "--report", str(tmp_path / "r.json")]) == 0
    out = onnx.load(tmp_path / "o.onnx")
    assert [n.op_type for n in out.graph.node] == ["Relu", "Neg"]
    assert_same_outputs(_relu_then_neg([0, 1]), out)
    assert "topological" in (tmp_path / "r.json").read_text()


def test_minus_one_dim_becomes_symbolic(tmp_path):
    src = tmp_path / "m.onnx"
    m = _relu_then_neg([0, 1])
    m.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    onnx.save(m, src)
    assert main(["optimize", str(src), "-o", str(tmp_path / "o.onnx")]) == 0
    dim = onnx.load(tmp_path / "o.onnx").graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "x_dim0" and not dim.HasField("dim_value")


def test_ref_attr_outside_function_is_refused(tmp_path, capsys):
    node = helper.make_node("Softmax", ["x"], ["y"], name="sm")
    attr = onnx.AttributeProto(name="axis", ref_attr_name="ax", type=onnx.AttributeProto.INT)
    node.attribute.append(attr)
    onnx.save(_model([node]), src := tmp_path / "m.onnx")
    assert main(["optimize", str(src), "-o", str(tmp_path / "o.onnx")]) == 2
    assert "outside a function body" in capsys.readouterr().err
    assert not (tmp_path / "o.onnx").exists()


def test_sparse_initializer_is_stored_dense(tmp_path):
    values = numpy_helper.from_array(np.array([2.0, 3.0], np.float32), "w")
    sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(np.array([1, 3], np.int64)), [4])
    m = _model([helper.make_node("Add", ["x", "w"], ["y"], name="add")])
    m.graph.sparse_initializer.append(sparse)
    onnx.save(m, src := tmp_path / "m.onnx")
    assert main(["optimize", str(src), "-o", str(tmp_path / "o.onnx")]) == 0
    out = onnx.load(tmp_path / "o.onnx")
    x = np.ones((2, 4), np.float32)
    assert_same_outputs(m, out, feeds={"x": x})


@pytest.mark.parametrize("flag", ["--report", "-o"])
def test_output_onto_input_is_refused_and_input_kept(tmp_path, capsys, flag):
    onnx.save(_relu_then_neg([0, 1]), src := tmp_path / "m.onnx")
    before = src.read_bytes()
    args = ["optimize", str(src), "-o", str(tmp_path / "o.onnx"), "--report", str(src)] if flag == "--report" \
        else ["optimize", str(src), "-o", str(src)]
    assert main(args) == 2
    assert src.read_bytes() == before and not (tmp_path / "o.onnx").exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_output_onto_input_external_data_is_refused(tmp_path, capsys):
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], inits=[w])
    onnx.save(m, src := tmp_path / "m.onnx", save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    data = (tmp_path / "m.onnx.data").read_bytes()
    assert main(["optimize", str(src), "-o", str(tmp_path / "m.onnx.data")]) == 2
    assert main(["check", str(src), "--backend", "static", "--json", str(tmp_path / "m.onnx.data")]) == 2
    assert (tmp_path / "m.onnx.data").read_bytes() == data


def test_report_in_missing_folder_writes_nothing(tmp_path):
    onnx.save(_relu_then_neg([0, 1]), src := tmp_path / "m.onnx")
    assert main(["optimize", str(src), "-o", str(tmp_path / "o.onnx"), "--report", str(tmp_path / "no" / "r.json")]) == 2
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("pipeline", ["fixpoint()", ",,", "fixpoint(fixpoint(cse))", "cse(", "fixpoint(cse)cse"])
def test_malformed_pipelines_are_user_errors(tmp_path, capsys, pipeline):
    onnx.save(_relu_then_neg([0, 1]), src := tmp_path / "m.onnx")
    assert main(["optimize", str(src), "-o", str(tmp_path / "o.onnx"), "--passes", pipeline]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_huge_dim_does_not_allocate(tmp_path):
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("ConstantOfShape", ["s"], ["c"], name="cos",
                              value=numpy_helper.from_array(np.array([1], np.float32))),
             helper.make_node("Add", ["x", "c"], ["y"], name="add")]
    onnx.save(_model(nodes, dims=(2**40,)), src := tmp_path / "m.onnx")
    assert main(["optimize", str(src), "-o", str(tmp_path / "o.onnx")]) == 0
    assert [n.op_type for n in onnx.load(tmp_path / "o.onnx").graph.node] == ["ConstantOfShape", "Add"]
