from __future__ import annotations

import onnx
import pytest

from converter.cli.main import main
from surgery import load_model, save_model, to_graph, to_model
from surgery.io import assign_names
from tests.builders import shape_arith_model
from tests.helpers import assert_same_outputs


def _save_external(model: onnx.ModelProto, folder, name="m.onnx"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    return path


def test_external_data_stays_on_disk_at_load(tmp_path):
    path = _save_external(shape_arith_model(), tmp_path / "src")
    loaded = load_model(path)
    assert loaded.has_external_data
    assert all(not t.raw_data for t in loaded.model.graph.initializer)


def test_optimize_external_model_into_another_folder_runs_there(tmp_path, capsys):
    src = _save_external(shape_arith_model(), tmp_path / "src")
    out = tmp_path / "elsewhere" / "opt.onnx"
    out.parent.mkdir()
    assert main(["optimize", str(src), "-o", str(out), "--external-data"]) == 0
    assert (out.parent / "opt.onnx.data").is_file()
    (tmp_path / "src" / "weights.bin").unlink()  # the copy must not point back at the source folder
    assert_same_outputs(shape_arith_model(), onnx.load(out))


def test_save_keeps_external_data_by_default_and_inlines_when_asked(tmp_path):
    src = _save_external(shape_arith_model(), tmp_path / "src")
    loaded = load_model(src)
    model = to_model(to_graph(loaded), like=loaded.model)
    kept = save_model(model, tmp_path / "kept.onnx", source_dir=loaded.base_dir)
    assert (tmp_path / "kept.onnx.data").is_file()
    out = save_model(model, tmp_path / "inline.onnx", source_dir=loaded.base_dir, external=False)
    inline = onnx.load(out, load_external_data=False)
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in inline.graph.initializer)
    assert_same_outputs(shape_arith_model(), inline)
    assert_same_outputs(shape_arith_model(), onnx.load(kept))


def test_lazy_external_constants_can_be_folded(tmp_path, monkeypatch):
    src = _save_external(shape_arith_model(), tmp_path / "src")
    monkeypatch.chdir(tmp_path)  # values must resolve against the model folder, not the cwd
    out = tmp_path / "o.onnx"
    assert main(["optimize", str(src), "-o", str(out)]) == 0
    assert_same_outputs(shape_arith_model(), onnx.load(out))


def test_saved_ir_version_is_readable_by_onnxruntime(tmp_path):
    model = shape_arith_model()
    model.ir_version = 14
    out = save_model(to_model(to_graph(model)), tmp_path / "o.onnx")
    assert onnx.load(out).ir_version <= 10


def test_unnamed_and_duplicate_nodes_get_deterministic_names():
    model = shape_arith_model()
    model.graph.node[0].name = ""
    model.graph.node[2].name = "concat"  # duplicates node 3's name
    assert assign_names(model.graph) == 2
    names = [n.name for n in model.graph.node]
    assert names[0] == "Shape_0" and len(set(names)) == len(names)
    again = shape_arith_model()
    again.graph.node[0].name = ""
    again.graph.node[2].name = "concat"
    assign_names(again.graph)
    assert [n.name for n in again.graph.node] == names


def test_save_refuses_to_overwrite_protected_input(tmp_path):
    from surgery import UserInputError

    path = tmp_path / "m.onnx"
    onnx.save(shape_arith_model(), path)
    with pytest.raises(UserInputError, match="overwrite"):
        save_model(shape_arith_model(), path, protect=path)
