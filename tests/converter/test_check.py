"""surgery check: node statuses, partitions, JSON/HTML output, static table vs TensorRT-RTX."""
from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from converter.trt.backends import select_backend
from converter.trt.capability import check_model
from converter.cli.main import main
from converter.runtime.numerics import random_feeds, run_ort, spec_from_model
from tests.converter import tiny

SAMPLES = sorted(glob.glob(str(Path(__file__).resolve().parents[2] / "sample_models" / "*.onnx")))


def _json(tmp_path, name, *extra):
    path = tiny.save(tiny.TINY[name](), tmp_path, name)
    out = tmp_path / f"{name}.json"
    code = main(["check", path, "--json", str(out), *extra])
    return code, json.loads(out.read_text())


@pytest.mark.parametrize("backend", ["static", pytest.param("tensorrt-rtx", marks=pytest.mark.trt)])
def test_supported_model_exits_0_with_json_keys(tmp_path, backend):
    code, data = _json(tmp_path, "mlp", "--backend", backend)
    assert code == 0
    assert set(data) >= {"backend", "supported", "nodes", "partitions", "build"}
    assert data["backend"]["name"] == backend and data["backend"]["version"]
    assert data["supported"] is True
    assert {n["status"] for n in data["nodes"]} == {"supported"}
    assert set(data["nodes"][0]) >= {"name", "op", "status", "reason", "remedy"}
    assert [p["status"] for p in data["partitions"]] == ["supported"]
    assert set(data["partitions"][0]) >= {"id", "status", "nodes", "inputs", "outputs"}
    assert set(data["build"]) >= {"attempted", "ok", "error"}
    if backend == "tensorrt-rtx":
        profile = data["build"].pop("profile")
        assert data["build"] == {"attempted": True, "ok": True, "kind": "", "error": "", "nodes": []}
        assert profile == {"source": "derived from the model", "shapes": {"x": {"min": [2, 8], "opt": [2, 8], "max": [2, 8]}}}


@pytest.mark.parametrize("backend", ["static", pytest.param("tensorrt-rtx", marks=pytest.mark.trt)])
def test_nonzero_is_unsupported_with_three_partitions(tmp_path, backend):
    code, data = _json(tmp_path, "with_nonzero", "--backend", backend, "--save-partitions", str(tmp_path / "parts"))
    assert code == 1 and data["supported"] is False
    status = {n["name"]: n["status"] for n in data["nodes"]}
    assert status == {"relu1": "supported", "nonzero": "unsupported", "cast": "supported", "relu2": "supported"}
    bad = next(n for n in data["nodes"] if n["name"] == "nonzero")
    assert "NonZero" in bad["reason"] and bad["remedy"]
    assert [(p["status"], p["nodes"]) for p in data["partitions"]] == [
        ("supported", ["relu1"]), ("unsupported", ["nonzero"]), ("supported", ["cast", "relu2"])]
    assert data["build"]["attempted"] is False


@pytest.mark.trt
def test_saved_partitions_are_valid_and_run_in_onnxruntime(tmp_path):
    path = tiny.save(tiny.with_nonzero(), tmp_path, "nz")
    report = check_model(path, select_backend("tensorrt-rtx"), save_dir=tmp_path / "parts")
    files = sorted((tmp_path / "parts").glob("*.onnx"))
    assert len(files) == len(report.partitions) == 3
    for f in files:
        model = onnx.load(str(f))
        onnx.checker.check_model(model, full_check=True)
        feeds = random_feeds(spec_from_model(model, dim_default=2), seed=0)
        outs = run_ort(model, feeds)
        assert outs and all(isinstance(v, np.ndarray) for v in outs.values())


@pytest.mark.parametrize("backend", ["static", pytest.param("tensorrt-rtx", marks=pytest.mark.trt)])
def test_unknown_op_is_unsupported(tmp_path, backend):
    code, data = _json(tmp_path, "with_unknown_op", "--backend", backend)
    assert code == 1
    frob = next(n for n in data["nodes"] if n["name"] == "frob")
    assert (frob["status"], frob["kind"]) == ("unsupported", "unsupported-op")
    assert frob["remedy"] == "no known remedy"
    assert [n["status"] for n in data["nodes"] if n["name"] != "frob"] == ["supported", "supported"]


@pytest.mark.parametrize("backend", ["static", pytest.param("tensorrt-rtx", marks=pytest.mark.trt)])
def test_foreign_domain_op_with_onnx_name_is_flagged(tmp_path, backend):
    code, data = _json(tmp_path, "with_foreign_layernorm", "--backend", backend)
    assert code == 1
    ln = next(n for n in data["nodes"] if n["name"] == "ms_ln")
    assert ln["kind"] == "foreign-domain" and "com.microsoft" in ln["reason"]


@pytest.mark.trt
@pytest.mark.parametrize("op,version,fields,kind", [
    ("MissingPlugin_TRT", "1", {}, "plugin-not-loaded"),
    ("ROIAlign_TRT", "1", {}, "plugin-not-loaded"),  # registered only as version 2
    ("ROIAlign_TRT", "2", {"bogus_field": 3}, "plugin-field-mismatch"),
])
def test_plugin_nodes_are_diagnosed(tmp_path, op, version, fields, kind):
    path = tiny.save(tiny.with_plugin(op, version, **fields), tmp_path, "plugin")
    report = check_model(path, select_backend("tensorrt-rtx"), build=False)
    node = next(n for n in report.nodes if n.name == "plugin")
    assert (node.status, node.kind) == ("unsupported", kind), node.reason
    assert "--plugins" in node.remedy or kind == "plugin-field-mismatch"


@pytest.mark.trt
def test_attention_fp32_head8_parses_but_fails_to_build(tmp_path):
    code, data = _json(tmp_path, "attention_fp32", "--backend", "tensorrt-rtx")
    assert code == 1 and data["supported"] is False
    assert data["build"]["attempted"] is True and data["build"]["ok"] is False
    assert data["build"]["nodes"] == ["attention"]
    node = data["nodes"][0]
    assert (node["status"], node["kind"]) == ("unsupported", "build-failure")
    assert "decomposable" in node["remedy"]


def _agreement(path: str) -> list[tuple[str, str, str]]:
    rtx = check_model(path, select_backend("tensorrt-rtx"), build=False)
    static = check_model(path, select_backend("static"), static_target="tensorrt-rtx")
    assert [n.name for n in rtx.nodes] == [n.name for n in static.nodes]
    return [(a.name, a.status, b.status) for a, b in zip(rtx.nodes, static.nodes)
            if (a.status, a.kind) != (b.status, b.kind)]


@pytest.mark.trt
@pytest.mark.parametrize("name", sorted(tiny.TINY))
def test_static_agrees_with_rtx_on_tiny_models(tmp_path, name):
    assert _agreement(tiny.save(tiny.TINY[name](), tmp_path, name)) == []


@pytest.mark.trt
@pytest.mark.skipif(not SAMPLES, reason="no sample models generated yet")
@pytest.mark.parametrize("path", SAMPLES, ids=[Path(p).stem for p in SAMPLES])
def test_static_agrees_with_rtx_on_sample_models(path):
    assert _agreement(path) == []


def test_html_report_is_self_contained(tmp_path):
    path = tiny.save(tiny.with_nonzero(), tmp_path, "nz")
    out = tmp_path / "r.html"
    assert main(["check", path, "--backend", "static", "--html", str(out)]) == 1
    text = out.read_text()
    assert "<svg" in text and "nonzero" in text
    assert "<script" not in text and "<link" not in text and 'src="http' not in text


def test_missing_model_is_a_user_error(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.onnx"), "--backend", "static"]) == 2
    assert "no such file" in capsys.readouterr().err


class _AbortWhenUnpickled:
    """Unpickling this calls os.abort: a stand-in for TensorRT dying inside the check's child process."""

    def __reduce__(self):
        import os

        return os.abort, ()


@pytest.mark.trt
def test_a_crash_in_the_probe_build_becomes_a_finding():
    from converter.trt.build import BuildOptions, probe_build

    ok, error, layers = probe_build(select_backend("tensorrt-rtx"), b"", BuildOptions(plugins=[_AbortWhenUnpickled()]))
    assert (ok, layers) == (False, []) and "crashed (signal 6)" in error
