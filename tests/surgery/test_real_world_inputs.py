"""Valid models in awkward forms are accepted and repaired; outputs never replace inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from converter.cli.main import main
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


@pytest.mark.parametrize("key,value", [("offset", "-4"), ("offset", "abc"), ("length", "1.5"), ("length", "8"), ("length", "99999")])
def test_bad_external_data_entry_is_one_line(tmp_path, capsys, key, value):
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], inits=[w])
    onnx.save(m, src := tmp_path / "m.onnx", save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    m = onnx.load(src, load_external_data=False)
    entry = next(e for e in m.graph.initializer[0].external_data if e.key == key) if key in {
        e.key for e in m.graph.initializer[0].external_data} else m.graph.initializer[0].external_data.add(key=key)
    entry.value = value
    onnx.save(m, src)
    capsys.readouterr()
    assert main(["inspect", str(src)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'w'" in err[0], err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs a /proc file system, where no file can be created")
def test_unwritable_output_folder_fails_in_one_line(tmp_path, capsys):
    onnx.save(_relu_then_neg([0, 1]), src := tmp_path / "m.onnx")
    capsys.readouterr()
    assert main(["optimize", str(src), "-o", "/proc/o.onnx"]) == 1
    assert main(["check", str(src), "--backend", "static", "--json", "/proc/c.json"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("failed: ") and "/proc/" in line for line in err), err


@pytest.mark.parametrize("command", [["inspect"], ["optimize", "-o", "o.onnx"], ["check", "--backend", "static", "--json", "c.json"]])
def test_name_not_utf8_is_one_line(tmp_path, capsys, monkeypatch, command):
    nodes = [helper.make_node("Relu", ["x"], ["rAAAA"], name="reluAAAA"), helper.make_node("Neg", ["rAAAA"], ["y"], name="neg")]
    (tmp_path / "m.onnx").write_bytes(_model(nodes).SerializeToString().replace(b"AAAA", b"\xff\xfe\xfd\xfc"))
    monkeypatch.chdir(tmp_path)
    assert main([command[0], "m.onnx", *command[1:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not valid UTF-8" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize("where", ["initializer", "input"])
def test_element_type_not_in_datatype_is_one_line(tmp_path, capsys, where):
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], inits=[w])
    if where == "initializer":
        m.graph.initializer[0].data_type = 999
    else:
        m.graph.input[0].type.tensor_type.elem_type = 999
    onnx.save(m, src := tmp_path / "m.onnx")
    capsys.readouterr()
    assert main(["optimize", str(src), "-o", str(tmp_path / "o.onnx")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "o.onnx").exists()


SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"


def test_extract_across_lstm_with_omitted_optional_input(tmp_path):
    src = SAMPLES / "lstm_ts.onnx"
    boundary = ["/lstm/Transpose_output_0", "/lstm/Slice_output_0", "/lstm/Slice_1_output_0"]
    assert main(["extract", str(src), "--inputs", ",".join(boundary), "--outputs", "/lstm/LSTM_output_0",
                 "-o", str(out := tmp_path / "lstm.onnx")]) == 0
    cut = onnx.load(out)
    assert [n.op_type for n in cut.graph.node] == ["LSTM"] and [i.name for i in cut.graph.input] == boundary
    full = onnx.load(src)
    full.graph.output.add().name = "/lstm/LSTM_output_0"
    for name in boundary:
        full.graph.output.add().name = name
    import onnxruntime as ort

    feeds = {"x": np.random.default_rng(0).standard_normal([d.dim_value or 2 for d in full.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)}
    ref = dict(zip([o.name for o in full.graph.output], ort.InferenceSession(full.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)))
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {n: ref[n] for n in boundary})[0]
    np.testing.assert_allclose(got, ref["/lstm/LSTM_output_0"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("preset", ["default", "trt"])
def test_ort_quantized_lstm_contrib_op_is_accepted(tmp_path, preset):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(SAMPLES / "lstm_ts.onnx"), str(src := tmp_path / "q.onnx"), weight_type=QuantType.QInt8)
    quantized = onnx.load(src)
    assert ("com.microsoft", "DynamicQuantizeLSTM") in {(n.domain, n.op_type) for n in quantized.graph.node}
    assert main(["optimize", str(src), "--preset", preset, "-o", str(out := tmp_path / "o.onnx")]) == 0
    optimized = onnx.load(out)
    assert sum(n.op_type == "DynamicQuantizeLSTM" for n in optimized.graph.node) == 2
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32)}
    assert_same_outputs(quantized, optimized, feeds=feeds)
