"""surgery partition / run-partitioned: partitions in a valid order whose chained run equals the model."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from converter.trt.backends import select_backend
from converter.cli.main import main
from converter.runtime.partition_run import execute_partitions, partition_model, run_partitioned
from converter.runtime.numerics import load_spec, random_feeds, run_ort
from tests.builders import const, make_model, tensor
from tests.samples import sample_path, spec_path

pytest.importorskip("tensorrt_rtx")


def _rtx():
    return select_backend("tensorrt-rtx")


def _unknown_op_model() -> onnx.ModelProto:
    """y = Relu(BiasGelu(Relu(x), b) + 1): com.microsoft:BiasGelu has a CPU kernel in onnxruntime but no
    TensorRT importer or plugin."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="pre"),
             helper.make_node("BiasGelu", ["r", "b"], ["w"], name="biasgelu", domain="com.microsoft"),
             helper.make_node("Add", ["w", "one"], ["z"], name="add"),
             helper.make_node("Relu", ["z"], ["y"], name="post")]
    graph = helper.make_graph(nodes, "unknown", [tensor("x", [2, 4])], [tensor("y", [2, 4])],
                              [const("one", np.float32(1.0)), const("b", np.linspace(-1, 1, 4).astype(np.float32))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model


def _cyclic_model() -> onnx.ModelProto:
    """Relu → a; NonZero(a) (unsupported) → Cast → ReduceSum → s; y = a + s. The supported nodes form one
    weakly connected component that both feeds and consumes the NonZero partition."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("NonZero", ["a"], ["nz"], name="nonzero"),
             helper.make_node("Cast", ["nz"], ["nzf"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["nzf"], ["s"], name="rsum", keepdims=0),
             helper.make_node("Add", ["a", "s"], ["y"], name="add")]
    return make_model(nodes, [tensor("x", [6])], [tensor("y", [6])])


def _check(model_path, folder, feeds):
    manifest = partition_model(model_path, folder, _rtx())
    produced = set(manifest["inputs"])
    for p in manifest["partitions"]:
        assert set(p["inputs"]) <= produced, f"partition {p['id']} runs before its inputs exist"
        produced |= set(p["outputs"])
    ref = run_ort(str(model_path), feeds)
    got = run_partitioned(folder, feeds, backend=_rtx())
    assert set(got) == set(ref)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)
    return manifest


def test_hostile_unique_sample(tmp_path):
    feeds = random_feeds(load_spec(spec_path("hostile_unique")), seed=0)
    manifest = _check(sample_path("hostile_unique"), tmp_path / "parts", feeds)
    assert [p["backend"] for p in manifest["partitions"]] == ["onnxruntime", "tensorrt"]
    assert manifest["partitions"][0]["nodes"] and (tmp_path / "parts" / manifest["partitions"][0]["file"]).is_file()


def test_unknown_op(tmp_path):
    model = _unknown_op_model()
    onnx.save(model, tmp_path / "m.onnx")
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)}
    manifest = _check(tmp_path / "m.onnx", tmp_path / "parts", feeds)
    assert [(p["nodes"], p["backend"]) for p in manifest["partitions"]] == [
        (["pre"], "tensorrt"), (["biasgelu"], "onnxruntime"), (["add", "post"], "tensorrt")]


def test_cyclic_components_are_split_into_an_order(tmp_path):
    onnx.save(_cyclic_model(), tmp_path / "m.onnx")
    feeds = {"x": np.array([1, -1, 2, 0, -3, 4], np.float32)}
    manifest = _check(tmp_path / "m.onnx", tmp_path / "parts", feeds)
    assert [(p["nodes"], p["backend"]) for p in manifest["partitions"]] == [
        (["relu"], "tensorrt"), (["nonzero"], "onnxruntime"), (["cast", "rsum", "add"], "tensorrt")]


def test_tensorrt_fallback_states_reason(tmp_path):
    feeds = random_feeds(load_spec(spec_path("hostile_unique")), seed=0)
    partition_model(sample_path("hostile_unique"), tmp_path / "parts", _rtx())
    run = execute_partitions(tmp_path / "parts", feeds, backend=_rtx())
    trt_parts = [r for r in run.ran_on if r["planned"] == "tensorrt"]
    assert trt_parts
    for r in trt_parts:  # no engine runs in this workplace; where one does, it ran on TensorRT
        assert r["ran"] == "tensorrt" or r["reason"].startswith("fallback: ")
    off = execute_partitions(tmp_path / "parts", feeds, use_tensorrt=False)
    assert all(r["ran"] == "onnxruntime" for r in off.ran_on)


def test_cli_partition_and_run(tmp_path, capsys):
    folder = tmp_path / "parts"
    assert main(["partition", str(sample_path("hostile_unique")), "-o", str(folder), "--backend", "tensorrt-rtx"]) == 0
    assert json.loads((folder / "manifest.json").read_text())["partitions"]
    assert main(["run-partitioned", str(folder), "--compare", "--no-tensorrt", "--save", str(tmp_path / "o.npz")]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and (tmp_path / "o.npz").is_file()


def test_cli_run_partitioned_without_manifest(tmp_path, capsys):
    assert main(["run-partitioned", str(tmp_path)]) == 2


def test_cli_partition_takes_the_shape_options(tmp_path, capsys):
    """The classifying build runs over the profile the user gives, and the manifest records it."""
    folder = tmp_path / "parts"
    assert main(["partition", str(sample_path("cnn_ts")), "-o", str(folder), "--backend", "tensorrt-rtx",
                 "--min-shapes", "x:1x3x32x32", "--opt-shapes", "x:2x3x32x32", "--max-shapes", "x:3x3x32x32"]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["profile_source"] == "--min/--opt/--max-shapes"
    assert manifest["profile"] == {"x": [[1, 3, 32, 32], [2, 3, 32, 32], [3, 3, 32, 32]]}
    assert "x: min 1x3x32x32, opt 2x3x32x32, max 3x3x32x32" in capsys.readouterr().out
    assert main(["partition", str(sample_path("cnn_ts")), "-o", str(tmp_path / "p2"), "--input-shapes", "nope:8"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "p2" / "manifest.json").exists()
