"""surgery convert: real CPU AOT engines with TensorRT-RTX, profiles, options, failures."""
from __future__ import annotations

import json

import pytest

from converter.cli.main import main
from converter.trt.profiles import make_profiles
from surgery.errors import UserInputError
from tests.converter import tiny


def test_profiles_pair_min_opt_max_and_default_to_opt():
    profiles = make_profiles([{"x": [1, 8]}], [{"x": [4, 8]}], [])
    assert profiles == [{"x": ([1, 8], [4, 8], [4, 8])}]
    two = make_profiles([], [{"x": [1, 8]}, {"x": [8, 8]}], [])
    assert len(two) == 2 and two[1]["x"] == ([8, 8], [8, 8], [8, 8])


def test_profiles_reject_bad_order_and_counts():
    with pytest.raises(UserInputError, match="min <= opt <= max"):
        make_profiles([{"x": [4, 8]}], [{"x": [1, 8]}], [])
    with pytest.raises(UserInputError, match="--opt-shapes given 1"):
        make_profiles([{"x": [1, 8]}, {"x": [1, 8]}], [{"x": [1, 8]}], [])


@pytest.mark.trt
def test_convert_writes_engine_log_and_layers(tmp_path):
    path = tiny.save(tiny.mlp(), tmp_path, "mlp")
    engine = tmp_path / "mlp.engine"
    assert main(["convert", path, "-o", str(engine), "--backend", "tensorrt-rtx", "--workspace", "64M",
                 "--builder-optimization-level", "2", "--timing-cache", str(tmp_path / "t.cache")]) == 0
    assert engine.stat().st_size > 0
    assert (tmp_path / "mlp.engine.build.log").is_file()
    layers = json.loads((tmp_path / "mlp.engine.layers.json").read_text())
    assert layers["layers"] and any(layer["onnx_node"] == "mm1" for layer in layers["layers"])
    assert not (tmp_path / "t.cache").exists()  # TensorRT-RTX ignores timing caches: nothing written (the notes say so)


@pytest.mark.trt
@pytest.mark.parametrize("syntax", ["x:[{}, 8]", "x:{}x8"])
def test_convert_dynamic_shapes_with_both_syntaxes(tmp_path, syntax):
    path = tiny.save(tiny.dynamic_mlp(), tmp_path, "dyn")
    engine = tmp_path / "dyn.engine"
    code = main(["convert", path, "-o", str(engine), "--backend", "tensorrt-rtx",
                 "--min-shapes", syntax.format(1), "--opt-shapes", syntax.format(4), "--max-shapes", syntax.format(16),
                 "--min-shapes", syntax.format(16), "--opt-shapes", syntax.format(32), "--max-shapes", syntax.format(64)])
    assert code == 0 and engine.stat().st_size > 0


@pytest.mark.trt
def test_convert_strongly_typed(tmp_path):
    path = tiny.save(tiny.mlp(), tmp_path, "mlp")
    assert main(["convert", path, "-o", str(tmp_path / "e.engine"), "--backend", "tensorrt-rtx", "--strongly-typed"]) == 0


@pytest.mark.trt
def test_attention_build_failure_is_a_conversion_error_and_decomposable_fixes_it(tmp_path, capsys):
    path = tiny.save(tiny.attention_fp32(), tmp_path, "attn")
    assert main(["convert", path, "-o", str(tmp_path / "a.engine"), "--backend", "tensorrt-rtx"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--decomposable-attention" in err[0] and "a.engine.build.log" in err[0], err
    assert "Attention operation was not supported" in (tmp_path / "a.engine.build.log").read_text()
    assert main(["convert", path, "-o", str(tmp_path / "a.engine"), "--backend", "tensorrt-rtx",
                 "--decomposable-attention"]) == 0
    assert (tmp_path / "a.engine").stat().st_size > 0


@pytest.mark.trt
def test_unsupported_node_conversion_error_names_the_node(tmp_path, capsys):
    path = tiny.save(tiny.with_nonzero(), tmp_path, "nz")
    assert main(["convert", path, "-o", str(tmp_path / "nz.engine"), "--backend", "tensorrt-rtx"]) == 1
    err = capsys.readouterr().err
    assert "nonzero" in err and "NonZero" in err


def test_bad_shape_is_a_user_error(tmp_path):
    path = tiny.save(tiny.mlp(), tmp_path, "mlp")
    assert main(["convert", path, "-o", str(tmp_path / "e"), "--opt-shapes", "x:1xQ"]) == 2


def test_static_backend_cannot_convert(tmp_path, capsys):
    path = tiny.save(tiny.mlp(), tmp_path, "mlp")
    assert main(["convert", path, "-o", str(tmp_path / "e"), "--backend", "static"]) == 2
    assert "needs tensorrt" in capsys.readouterr().err
