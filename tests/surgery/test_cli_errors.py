"""User mistakes end with one line on stderr, exit 2, no traceback, no output written, input untouched."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from converter.cli.main import main
from tests.builders import shape_arith_model
from tests.hostile import MALFORMED


def _one_line_error(capsys, expected: str) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert expected in err


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_models_are_rejected(kind, tmp_path, capsys):
    make, expected = MALFORMED[kind]
    src = make(tmp_path)
    before = src.read_bytes()
    out = tmp_path / "out" / "o.onnx"
    out.parent.mkdir()
    assert main(["optimize", str(src), "-o", str(out)]) == 2
    _one_line_error(capsys, expected)
    assert not out.exists() and os.listdir(out.parent) == []
    assert src.read_bytes() == before


@pytest.fixture
def good_model(tmp_path) -> Path:
    import onnx

    path = tmp_path / "m.onnx"
    onnx.save(shape_arith_model(), path)
    return path


@pytest.mark.parametrize("args, expected", [
    (["--input-shapes", "x:2xq"], "bad shape"),
    (["--input-shapes", "nope:[2,8]"], "nope"),
    (["--passes", "no-such-pass"], "unknown pass"),
    (["--preset", "nope"], "unknown preset"),
    (["--disable", "nope"], "unknown pass"),
])
def test_bad_arguments(good_model, tmp_path, capsys, args, expected):
    out = tmp_path / "o.onnx"
    assert main(["optimize", str(good_model), "-o", str(out), *args]) == 2
    _one_line_error(capsys, expected)
    assert not out.exists()


def test_missing_path(tmp_path, capsys):
    assert main(["optimize", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "o.onnx")]) == 2
    _one_line_error(capsys, "no such file")


def test_directory_instead_of_file(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    _one_line_error(capsys, "is a directory")


def test_output_equal_to_input(good_model, capsys):
    before = good_model.read_bytes()
    assert main(["optimize", str(good_model), "-o", str(good_model)]) == 2
    _one_line_error(capsys, "overwrite the input")
    assert good_model.read_bytes() == before


def test_unwritable_or_missing_output_folder(good_model, tmp_path, capsys):
    assert main(["optimize", str(good_model), "-o", str(tmp_path / "no" / "such" / "o.onnx")]) == 2
    _one_line_error(capsys, "does not exist")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="runs as root: root writes into a 0o500 folder, so the error cannot happen")
def test_unwritable_output_folder(good_model, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert main(["optimize", str(good_model), "-o", str(folder / "o.onnx")]) == 2
        _one_line_error(capsys, "not writable")
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("external", [False, True])
def test_pass_failing_midway_leaves_no_partial_output(good_model, tmp_path, capsys, monkeypatch, external):
    """A pass that raises after editing part of the graph: exit 1, no output, no temp files, input intact."""
    from surgery.registry import list_passes

    victim = next(cls for cls in list_passes() if cls.name == "remove-dead-nodes")  # runs after two changing passes

    def explode(self, graph, ctx):
        graph.nodes.pop()  # half-done work must never reach the disk
        raise RuntimeError("boom mid-way")

    monkeypatch.setattr(victim, "run", explode)
    before = good_model.read_bytes()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = ["optimize", str(good_model), "-o", str(out_dir / "o.onnx")] + (["--external-data"] if external else [])
    assert main(args) == 1
    _one_line_error(capsys, "remove-dead-nodes")
    assert os.listdir(out_dir) == []
    assert good_model.read_bytes() == before


def test_unknown_command_and_missing_argument(capsys):
    assert main(["frobnicate"]) == 2
    _one_line_error(capsys, "invalid choice")
    assert main(["optimize"]) == 2
    _one_line_error(capsys, "required")


def test_python_dash_m_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "surgery", "inspect", str(tmp_path / "missing.onnx")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'missing.onnx'}: no such file"
