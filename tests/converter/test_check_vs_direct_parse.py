"""`surgery check --backend tensorrt-rtx` agrees node for node with a direct TensorRT-RTX parse, and
`surgery run` on the BERT-like sample produces every artifact with a passing validation."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from converter.trt.backends import select_backend
from converter.trt.capability import check_model
from converter.cli.main import main
from tests.samples import sample_names, sample_path, spec_path


def _direct_parse(path: Path) -> tuple[bool, set[str]]:
    import tensorrt_rtx as trt

    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    ok = bool(parser.parse_from_file(str(path)))
    nodes = onnx.load(path).graph.node
    named = {nodes[e.node()].name for e in (parser.get_error(i) for i in range(parser.num_errors)) if 0 <= e.node() < len(nodes)}
    return ok, named


@pytest.mark.trt
@pytest.mark.parametrize("name", sample_names())
def test_check_agrees_with_direct_parse(name):
    pytest.importorskip("tensorrt_rtx")
    ok, named = _direct_parse(sample_path(name))
    report = check_model(sample_path(name), select_backend("tensorrt-rtx"), build=False, spec_path=spec_path(name))
    unsupported = {n.name for n in report.nodes if n.status != "supported"}
    if ok:
        assert unsupported == set()
    else:
        assert unsupported and named <= unsupported


@pytest.mark.trt
def test_run_on_bert_sample_end_to_end(tmp_path, capsys):
    out = tmp_path / "bert"
    assert main(["run", str(sample_path("bert_ts_op14")), "-o", str(out), "--backend", "tensorrt-rtx"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= {"optimize", "check", "engine", "validation"}
    fused = {p["name"]: p["changed"] for p in report["optimize"]["passes"] if p["name"].startswith("fuse-")}
    assert fused["fuse-layernorm"] == 5 and fused["fuse-gelu"] == 2 and fused["fuse-attention"] == 0  # fp32: kept decomposed
    assert report["check"]["supported"] is True
    assert report["engine"]["built"] is True and (out / "model.engine").stat().st_size > 0
    assert report["validation"]["optimized_vs_original"]["status"] == "passed"
    assert report["validation"]["engine_vs_original"]["status"] in ("passed", "skipped")


def _direct_build(path: Path, profile: dict) -> bool:
    """Parse and build with TensorRT-RTX's own API over ``profile`` (dynamic inputs only), default settings."""
    import tensorrt_rtx as trt

    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        return False
    config = builder.create_builder_config()
    prof = builder.create_optimization_profile()
    dynamic = [network.get_input(i) for i in range(network.num_inputs) if any(d < 0 for d in network.get_input(i).shape)]
    for tensor in dynamic:
        prof.set_shape(tensor.name, *profile[tensor.name])
    if dynamic:
        config.add_optimization_profile(prof)
    try:
        return builder.build_serialized_network(network, config) is not None
    except Exception:
        return False


@pytest.mark.trt
@pytest.mark.parametrize("name", sample_names())
def test_check_build_agrees_with_direct_build_over_the_profile(name):
    pytest.importorskip("tensorrt_rtx")
    report = check_model(sample_path(name), select_backend("tensorrt-rtx"), spec_path=spec_path(name))
    if not report.build.attempted:
        pytest.skip(f"check did not build: {report.build.error}")
    assert report.build.profile, "the report names the profile it built for"
    assert report.build.ok == _direct_build(sample_path(name), report.build.profile)
