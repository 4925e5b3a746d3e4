"""Build profiles: derived ranges consistent with the graph, range builds, user shapes, the run's spec."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import helper as h, numpy_helper as nh

from converter.cli.main import main
from converter.trt.profiles import _declared_dims, derive_profile, first_inconsistency, graph_inputs
from tests.samples import SAMPLES

trt = pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx is needed for real builds")


def _dynamic_side_cnn(tmp_path):
    """cnn_ts with symbolic image sides: a stride-2 stage, a 2x upsample and a skip Concat (sides must be even)."""
    m = onnx.load(SAMPLES / "cnn_ts.onnx")
    for d in m.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.Clear()
        d.dim_param = "side"
    del m.graph.value_info[:]
    for d in m.graph.output[0].type.tensor_type.shape.dim[2:]:
        d.Clear()
        d.dim_param = "side"
    onnx.save(m, path := tmp_path / "cnn_side.onnx")
    return m, path


def _if_rank_model() -> onnx.ModelProto:
    """y = x flattened when the batch is 1, else x: the If's branch ranks differ unless the batch is fixed."""
    then_g = h.make_graph([h.make_node("Reshape", ["x", "flat"], ["t"])], "then", [], [h.make_tensor_value_info("t", 1, ["n"])])
    else_g = h.make_graph([h.make_node("Identity", ["x"], ["e"])], "else", [], [h.make_tensor_value_info("e", 1, ["b", 4])])
    nodes = [h.make_node("Shape", ["x"], ["s"]), h.make_node("Gather", ["s", "zero"], ["b"], axis=0),
             h.make_node("Equal", ["b", "one"], ["c"]), h.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", 1, ["batch", 4])], [h.make_tensor_value_info("y", 1, ["n"])],
                     [nh.from_array(np.array([-1], np.int64), "flat"), nh.from_array(np.array(0, np.int64), "zero"),
                      nh.from_array(np.array(1, np.int64), "one")])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_derived_sides_survive_down_and_up_sampling(tmp_path, capsys):
    m, path = _dynamic_side_cnn(tmp_path)
    inputs = graph_inputs(m)
    declared = {vi.name: _declared_dims(vi) for vi in inputs}
    assert first_inconsistency(m, inputs, declared, {"batch": (1, 1, 1), "side": (1, 1, 1)}) is not None  # the old default
    profile, notes = derive_profile(m)
    assert profile == {"x": ([1, 3, 224, 224], [1, 3, 224, 224], [4, 3, 224, 224])}
    assert any("fixed at 224" in n for n in notes)
    assert main(["check", str(path), "--json", str(tmp_path / "c.json")]) == 0
    build = json.loads((tmp_path / "c.json").read_text())["build"]
    assert build["ok"] is True and build["profile"]["shapes"]["x"]["max"] == [4, 3, 224, 224]
    assert build["profile"]["source"] == "derived from the model"
    # the shapes the old default used do not build: the derived profile is what made the verdict right
    assert main(["check", str(path), "--input-shapes", "x:1x3x1x1"]) == 1


def test_range_build_failure_is_reported_as_profile(tmp_path, capsys):
    onnx.save(_if_rank_model(), path := tmp_path / "if_rank.onnx")
    assert main(["check", str(path), "--json", str(tmp_path / "c.json")]) == 1
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["supported"] is False
    assert report["build"]["kind"] == "profile" and "equal ranks" in report["build"]["error"]
    assert "--min/--opt/--max-shapes" in report["build"]["error"]
    assert report["build"]["profile"]["shapes"]["x"] == {"min": [1, 4], "opt": [1, 4], "max": [4, 4]}
    assert main(["check", str(path), "--input-shapes", "x:2x4"]) == 0


@pytest.mark.parametrize("args,words", [
    (["--input-shapes", "nope:1x3x32x32"], "not an input"),
    (["--input-shapes", "x:1x3x32"], "rank"),
    (["--input-shapes", "x:1x3x33x32"], "fixed at 32"),
    (["--input-shapes", "x:1x3x32x32", "--max-shapes", "x:2x3x32x32"], "not both"),
    (["--min-shapes", "x:4x3x32x32", "--opt-shapes", "x:1x3x32x32"], "min <= opt <= max"),
])
def test_bad_shapes_are_one_line_user_errors(capsys, args, words):
    for command in (["check"], ["convert", "-o", "/tmp/never.engine"]):
        assert main([*command[:1], str(SAMPLES / "cnn_ts.onnx"), *command[1:], *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err


def test_run_builds_for_the_original_spec(tmp_path, capsys):
    for suffix in (".onnx", ".spec.json"):
        shutil.copy(SAMPLES / f"cnn_ts{suffix}", tmp_path / f"m{suffix}")
    spec = json.loads((tmp_path / "m.spec.json").read_text())
    spec["inputs"][0]["shape"] = [2, 3, 32, 32]
    (tmp_path / "m.spec.json").write_text(json.dumps(spec))
    main(["run", str(tmp_path / "m.onnx"), "-o", str(out := tmp_path / "out")])
    report = json.loads((out / "report.json").read_text())
    assert report["check"]["build"]["profile"]["shapes"]["x"]["opt"] == [2, 3, 32, 32]
    assert report["engine"]["built"] is True
    assert any("x=1x3x32x32..2x3x32x32..4x3x32x32" in n for n in report["engine"]["notes"])
