"""`surgery check` parses in a child process: a parser crash becomes a finding on the node that crashes."""
from __future__ import annotations

import json
import os

import onnx
import pytest
from onnx import TensorProto, helper

from converter.cli.main import main
from converter.trt.isolate import ChildCrash, call_in_child, checkpoint


def topk_with_float_k() -> onnx.ModelProto:
    """Relu, Relu -> TopK whose K is a computed float [2,4] tensor (tensorrt_rtx 1.7's parser segfaults) -> Add."""
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu_x"),
             helper.make_node("Relu", ["kin"], ["k"], name="relu_k"),
             helper.make_node("TopK", ["a", "k"], ["v", "i"], name="topk"),
             helper.make_node("Add", ["v", "v"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "topk_float_k", [vi("x", TensorProto.FLOAT, [2, 4]), vi("kin", TensorProto.FLOAT, [2, 4])],
                              [vi("y", TensorProto.FLOAT, [2, 4]), vi("i", TensorProto.INT64, [2, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _add(a: int, b: int) -> int:
    return a + b


def _refuse(text: str) -> None:
    raise ValueError(text)


def _abort_after(mark: str) -> None:
    checkpoint(mark)
    os.abort()


def test_call_in_child_returns_and_raises_like_a_local_call():
    assert call_in_child(_add, 2, 3) == 5
    with pytest.raises(ValueError, match="no thanks"):
        call_in_child(_refuse, "no thanks")


def test_a_dead_child_is_a_crash_carrying_its_last_checkpoint():
    with pytest.raises(ChildCrash) as info:
        call_in_child(_abort_after, "parsing node 3")
    assert (info.value.how, info.value.signal, info.value.checkpoint) == ("signal 6", 6, "parsing node 3")


@pytest.mark.trt
def test_a_parser_crash_is_a_finding_on_the_crashing_node(tmp_path, capsys):
    pytest.importorskip("tensorrt_rtx")
    path, out = tmp_path / "topk.onnx", tmp_path / "r.json"
    onnx.save(topk_with_float_k(), path)
    assert main(["check", str(path), "--backend", "tensorrt-rtx", "--json", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.err == "" and "Traceback" not in captured.out
    problem_lines = [line for line in captured.out.splitlines() if "TensorRT parser crashes" in line]
    assert len(problem_lines) == 1 and "signal 11" in problem_lines[0]
    report = json.loads(out.read_text())
    status = {n["name"]: (n["status"], n["kind"]) for n in report["nodes"]}
    # the nodes before TopK and the Add after it (parsed once TopK is cut out) are classified as usual
    assert status == {"relu_x": ("supported", "ok"), "relu_k": ("supported", "ok"), "topk": ("unsupported", "crash"),
                      "add": ("supported", "ok")}
    assert [g["kind"] for g in report["unsupported"]] == ["crash"] and report["build"]["attempted"] is False
    assert "onnxruntime" in report["unsupported"][0]["remedies"][0]
