"""convert's engine options: refittable / weight-stripped engines and `surgery refit`, timing caches (merge,
misses, a library that ignores them), tactic sources and replay, weight streaming, compatibility pre-checks.

Real TensorRT-RTX builds where this machine allows them (a few, each about a second); what needs a GPU
(deserializing, refitting, running) is written against the API and skips here with the library's reason.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.cli.main import main
from converter.trt import engine_options
from converter.trt.backends import Backend
from converter.trt.build import BuildOptions
from converter.trt.engine_options import TimingCacheStep, options_used, preflight
from converter.trt.refit import first_weight_mismatch, model_weights
from surgery.errors import UserInputError
from tests.converter import tiny


def wide_mlp(seed: int = 0, width: int = 256) -> onnx.ModelProto:
    """x[4,W] -> MatMul(W x W) -> Add -> Relu -> MatMul(W x 16): about 0.3 MB of weights, so stripping them shows."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((width, 16)).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Add", ["h", "b1"], ["hb"], name="add1"),
             helper.make_node("Relu", ["hb"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, "wide_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _convert(tmp_path: Path, name: str, *options: str, model: onnx.ModelProto | None = None) -> tuple[int, dict]:
    src = tmp_path / f"{name}.onnx"
    if not src.exists():
        onnx.save(model if model is not None else tiny.mlp(), src)
    out = tmp_path / f"{name}.engine"
    rc = main(["convert", str(src), "-o", str(out), "--backend", "tensorrt-rtx", "--json", str(tmp_path / f"{name}.json"),
               *options])
    summary = json.loads((tmp_path / f"{name}.json").read_text()) if rc == 0 else {}
    return rc, summary


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# ---- refittable and weight-stripped engines --------------------------------------------------------------


@pytest.fixture(scope="module")
def stripped(tmp_path_factory):
    """A weight-stripped build of wide_mlp on TensorRT-RTX: (exit code, summary, stderr, folder)."""
    pytest.importorskip("tensorrt_rtx")
    folder = tmp_path_factory.mktemp("strip")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc, summary = _convert(folder, "stripped", "--strip-weights", model=wide_mlp())
    return rc, summary, err.getvalue().strip(), folder


@pytest.mark.trt
def test_stripped_plan_is_much_smaller_than_the_full_one(stripped):
    rc, summary, err, folder = stripped
    if rc != 0:
        pytest.skip(f"TensorRT-RTX cannot build a weight-stripped engine on this machine: {err}")
    full_rc, full = _convert(folder, "stripped_full", model=wide_mlp())
    assert full_rc == 0
    assert summary["bytes"] * 4 < full["bytes"], (summary["bytes"], full["bytes"])  # the 0.3 MB of weights are gone
    assert summary["options"] == {"--strip-weights": True}
    assert any("surgery refit" in n for n in summary["notes"])


@pytest.mark.trt
def test_a_refit_build_this_machine_cannot_make_fails_in_one_line(stripped):
    rc, _, err, _ = stripped
    if rc == 0:
        pytest.skip("this machine builds weight-stripped engines")
    assert rc == 1 and "\n" not in err and "Traceback" not in err
    assert "CUDA driver" in err and "full log:" in err  # TensorRT-RTX's JIT needs the driver for refittable weights


# ---- surgery refit ---------------------------------------------------------------------------------------


def test_first_weight_mismatch_names_the_first_weight_in_model_order():
    model = model_weights(tiny.mlp())
    engine = {"w1": ("FLOAT", 64), "b1": ("FLOAT", 8), "w2": ("FLOAT", 32)}
    assert first_weight_mismatch(engine, model) is None
    other = model_weights(_resized_w2())
    assert first_weight_mismatch(engine, other) == "weight 'w2': the engine holds 32 values, the model's initializer 48 (shape [8, 6])"
    assert "is no initializer" in first_weight_mismatch({**engine, "extra": ("FLOAT", 4)}, model)
    assert "HALF values" in first_weight_mismatch({**engine, "b1": ("HALF", 8)}, model)


def _resized_w2() -> onnx.ModelProto:
    m = tiny.mlp()
    w2 = next(t for t in m.graph.initializer if t.name == "w2")
    w2.CopyFrom(numpy_helper.from_array(np.ones((8, 6), np.float32), "w2"))
    return m


@pytest.fixture(scope="module")
def plain_engine(tmp_path_factory):
    """An engine of tiny.mlp built with several options at once, and its summary."""
    pytest.importorskip("tensorrt_rtx")
    folder = tmp_path_factory.mktemp("plain")
    cache = folder / "shared.cache"
    rc, summary = _convert(folder, "mlp", "--timing-cache", str(cache), "--tactic-sources", "jit_convolutions",
                           "--weight-streaming", "--hardware-compatibility", "ampere_plus")
    assert rc == 0
    return folder, summary


@pytest.mark.trt
def test_refit_of_an_engine_this_machine_cannot_deserialize_is_one_line(plain_engine, capsys):
    folder, summary = plain_engine
    rc = main(["refit", summary["path"], str(folder / "mlp.onnx"), "-o", str(folder / "refit.engine"),
               "--backend", "tensorrt-rtx"])
    if rc == 0:
        pytest.skip("this machine deserializes engines (the GPU refit test covers it)")
    err = _one_line_error(capsys)
    assert rc == 1 and "cannot deserialize the engine on this machine" in err
    assert not (folder / "refit.engine").exists()


@pytest.mark.trt
def test_refit_replaces_the_weights_and_names_a_mismatch(tmp_path, capsys):
    """Where an engine can run: refit a refittable engine of mlp(seed 0) with mlp(seed 1) and validate it."""
    pytest.importorskip("tensorrt_rtx")
    onnx.save(tiny.mlp(seed=0), tmp_path / "old.onnx")
    onnx.save(tiny.mlp(seed=1), tmp_path / "new.onnx")
    onnx.save(_resized_w2(), tmp_path / "other.onnx")
    if main(["convert", str(tmp_path / "old.onnx"), "-o", str(tmp_path / "old.engine"), "--backend", "tensorrt-rtx",
             "--refittable"]) != 0:
        pytest.skip(f"no refittable engine on this machine: {capsys.readouterr().err.strip()}")
    rc = main(["refit", str(tmp_path / "old.engine"), str(tmp_path / "new.onnx"), "-o", str(tmp_path / "new.engine"),
               "--backend", "tensorrt-rtx"])
    if rc != 0:
        pytest.skip(f"cannot refit here: {capsys.readouterr().err.strip()}")
    assert main(["validate", str(tmp_path / "new.onnx"), str(tmp_path / "new.engine"), "--backend", "tensorrt-rtx"]) == 0
    assert main(["refit", str(tmp_path / "old.engine"), str(tmp_path / "other.onnx"), "-o", str(tmp_path / "x.engine"),
                 "--backend", "tensorrt-rtx"]) == 1
    assert "weight 'w2'" in _one_line_error(capsys)


@pytest.mark.trt
def test_refit_refuses_to_overwrite_its_inputs(tmp_path, capsys):
    onnx.save(tiny.mlp(), tmp_path / "m.onnx")
    (tmp_path / "m.engine").write_bytes(b"\x00engine")
    assert main(["refit", str(tmp_path / "m.engine"), str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.engine")]) == 2
    assert "would overwrite an input" in _one_line_error(capsys)


# ---- timing caches ---------------------------------------------------------------------------------------


class _Cache:
    """A stand-in for trt.ITimingCache: keys, combine (refusing another 'device'), serialize."""

    def __init__(self, data: bytes) -> None:
        device, _, keys = data.decode().partition(":") if data else ("dev0", "", "")
        self.device, self.entries = device, set(filter(None, keys.split(",")))

    def combine(self, other: _Cache, ignore_mismatch: bool) -> bool:
        if other.device != self.device and not ignore_mismatch:
            return False
        self.entries |= other.entries
        return True

    def queryKeys(self) -> list[str]:  # TensorRT's name
        return sorted(self.entries)

    def serialize(self) -> bytes:
        return f"{self.device}:{','.join(sorted(self.entries))}".encode()


class _Config:
    def __init__(self, warn: str = "") -> None:
        self.cache, self.warn = None, warn

    def create_timing_cache(self, data: bytes) -> _Cache:
        return _Cache(data)

    def set_timing_cache(self, cache: _Cache, ignore_mismatch: bool) -> None:
        if self.warn:
            warnings.warn(self.warn, DeprecationWarning)
        self.cache = cache

    def get_timing_cache(self) -> _Cache:
        return self.cache


def test_timing_caches_are_merged_and_the_misses_counted(tmp_path):
    a, b, foreign, out = tmp_path / "a.cache", tmp_path / "b.cache", tmp_path / "f.cache", tmp_path / "out.cache"
    a.write_bytes(b"dev0:k1,k2")
    b.write_bytes(b"dev0:k2,k3")
    foreign.write_bytes(b"dev9:k8")
    step = TimingCacheStep([a, b, foreign, tmp_path / "new.cache"], out)
    config = _Config()
    step(None, None, config)
    config.cache.entries |= {"k4", "k5"}  # the build timed two layers the caches did not have
    notes = step.finish()
    assert notes[-1] == (f"timing cache: 3 entries loaded ({a}, {b}, {foreign}, {tmp_path / 'new.cache'}); 2 miss(es): "
                         f"entries this build had to time, the rest came from the cache; saved 5 entries (19 bytes) to {out}")
    assert f"timing cache {tmp_path / 'new.cache'} does not exist yet; starting empty" in notes
    assert f"timing cache {foreign} not merged: made by another TensorRT version or device" in notes
    assert out.read_bytes() == b"dev0:k1,k2,k3,k4,k5"
    again = TimingCacheStep([out], out)  # a second build that needs nothing new
    config = _Config()
    again(None, None, config)
    assert again.finish()[-1].endswith(f"every timing this build needed was in the cache; saved 5 entries (19 bytes) to {out}")


def test_a_library_that_ignores_timing_caches_is_named_and_nothing_is_saved(tmp_path):
    out = tmp_path / "out.cache"
    step = TimingCacheStep([tmp_path / "a.cache"], out)
    step(None, None, _Config(warn="Use Deprecated in TensorRT-RTX 1.2. Timing cache operations are no-ops in TensorRT-RTX. instead."))
    assert step.finish() == [('timing cache: ignored by this library ("Timing cache operations are no-ops in TensorRT-RTX"); '
                              f"{tmp_path / 'a.cache'} not used, nothing saved")]
    assert not out.exists()


@pytest.mark.trt
def test_the_report_lists_the_options_and_says_the_timing_cache_was_ignored(plain_engine):
    folder, summary = plain_engine
    assert summary["options"] == {"--timing-cache": [str(folder / "shared.cache")], "--tactic-sources": ["jit_convolutions"],
                                  "--hardware-compatibility": "ampere_plus", "--weight-streaming": True}
    ignored = [n for n in summary["notes"] if n.startswith("timing cache:")]
    assert ignored == [('timing cache: ignored by this library ("Timing cache operations are no-ops in TensorRT-RTX"); '
                        f"{folder / 'shared.cache'} not used, nothing saved")]
    assert not (folder / "shared.cache").exists()
    assert "hardware compatibility ampere_plus: the engine runs on any Ampere-or-newer GPU" in summary["notes"]


@pytest.mark.trt
def test_several_timing_caches_need_an_output(tmp_path, capsys):
    onnx.save(tiny.mlp(), tmp_path / "m.onnx")
    rc = main(["convert", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.engine"), "--backend", "tensorrt-rtx",
               "--timing-cache", str(tmp_path / "a"), "--timing-cache", str(tmp_path / "b")])
    assert rc == 2 and "--save-timing-cache" in _one_line_error(capsys)


@pytest.mark.trt
def test_a_second_build_with_the_saved_cache_has_no_misses(tmp_path):
    """Full TensorRT (which times tactics) only: the cache a build saves serves the same build again."""
    pytest.importorskip("tensorrt", reason="full TensorRT (a GPU builder) is not installed here")
    onnx.save(tiny.mlp(), tmp_path / "m.onnx")
    cache = tmp_path / "t.cache"
    for name in ("first", "second"):
        assert main(["convert", str(tmp_path / "m.onnx"), "-o", str(tmp_path / f"{name}.engine"), "--backend", "tensorrt",
                     "--timing-cache", str(cache), "--json", str(tmp_path / f"{name}.json")]) == 0
    notes = json.loads((tmp_path / "second.json").read_text())["notes"]
    assert any("every timing this build needed was in the cache" in n for n in notes)


# ---- tactics, compatibility, weight streaming: one-line pre-checks ---------------------------------------


def _rtx() -> Backend:
    from converter.trt.backends import select_backend

    pytest.importorskip("tensorrt_rtx")
    return select_backend("tensorrt-rtx")


@pytest.mark.trt
@pytest.mark.parametrize("options, words", [
    (BuildOptions(save_tactics=Path("t.json")), "--save-tactics: tensorrt-rtx"),
    (BuildOptions(tactic_sources=["cublas"]), "'cublas' is no tactic source of tensorrt_rtx (it has: edge_mask_convolutions, jit_convolutions"),
    (BuildOptions(exclude_lean_runtime=True), "--exclude-lean-runtime applies to version-compatible engines"),
    (BuildOptions(hardware_compatibility="volta_plus"), "has no level 'volta_plus' (it has: ampere_plus, same_compute_capability)"),
])
def test_preflight_refuses_in_one_line(options, words):
    with pytest.raises(UserInputError) as info:
        preflight(_rtx(), options)
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.trt
def test_version_compatible_names_the_missing_lean_runtime(tmp_path, capsys):
    backend = _rtx()
    if engine_options.lean_runtime_problem(backend.module) is None:
        pytest.skip("the lean runtime is installed here")
    onnx.save(tiny.mlp(), tmp_path / "m.onnx")
    assert main(["convert", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.engine"), "--backend", "tensorrt-rtx",
                 "--version-compatible"]) == 2
    err = _one_line_error(capsys)
    assert "libnvinfer_lean.so.1" in err and "--exclude-lean-runtime" in err
    assert not (tmp_path / "m.engine").exists()


@pytest.mark.trt
def test_version_compatible_without_the_lean_runtime_builds(tmp_path):
    rc, summary = _convert(tmp_path, "vc", "--version-compatible", "--exclude-lean-runtime")
    assert rc == 0 and summary["options"] == {"--version-compatible": True, "--exclude-lean-runtime": True}
    assert any("needs libnvinfer_lean.so.1" in n for n in summary["notes"])


@pytest.mark.parametrize("found, words", [((7, 5), "GPU 0 has compute capability 7.5"),
                                          ("no CUDA driver (libcuda.so.1) on this machine", "no CUDA driver")])
def test_ampere_plus_on_a_gpu_builder_needs_an_ampere_gpu(monkeypatch, found, words):
    levels = SimpleNamespace(AMPERE_PLUS=1, __members__={"NONE": 0, "AMPERE_PLUS": 1})
    gpu_builder = Backend("tensorrt", "10.x", SimpleNamespace(HardwareCompatibilityLevel=levels), {})
    monkeypatch.setattr(engine_options, "gpu_compute_capability", lambda: found)
    with pytest.raises(UserInputError, match="Ampere-or-newer GPU") as info:
        engine_options._hardware_check(gpu_builder, "ampere_plus")
    assert words in str(info.value)
    monkeypatch.setattr(engine_options, "gpu_compute_capability", lambda: (9, 0))
    assert engine_options._hardware_check(gpu_builder, "ampere_plus")


def test_options_used_names_what_a_build_was_given():
    cache = Path("a.cache")
    options = BuildOptions(timing_caches=[cache], save_timing_cache=cache, refittable=True, tactic_sources=[],
                           workspace=1 << 30)
    assert options_used(options) == {"--workspace": 1 << 30, "--timing-cache": ["a.cache"], "--refittable": True,
                                     "--tactic-sources": "none"}


def test_weight_streaming_budget_applies_to_engines_only(tmp_path, capsys):
    onnx.save(tiny.mlp(), tmp_path / "m.onnx")
    assert main(["validate", str(tmp_path / "m.onnx"), str(tmp_path / "m.onnx"), "--weight-streaming-budget", "1G"]) == 2
    assert "applies to engine candidates" in _one_line_error(capsys)
