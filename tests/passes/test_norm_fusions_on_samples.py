"""Norm fusions on the sample models: fused + native counts must equal the manifest's block counts."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from surgery import PassContext, PassManager, load_model, parse_pipeline, to_graph, to_model
from converter.runtime.numerics import load_spec, random_feeds, run_ort

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"
MANIFEST = SAMPLES / "manifest.json"
PIPELINE = "infer-shapes,fold-constants,remove-dead-nodes,fuse-layernorm,fuse-rmsnorm,fuse-groupnorm"
FUSED_OP = {"layernorm": "LayerNormalization", "rmsnorm": "RMSNormalization", "groupnorm": "GroupNormalization"}


def _entries():
    if not MANIFEST.exists():
        return []
    entries = json.loads(MANIFEST.read_text())
    return [pytest.param(e, id=e["name"]) for e in entries
            if any(e["blocks"].get(k, 0) for k in FUSED_OP) and (SAMPLES / e["file"]).exists()]


def _fuse(entry, emit: str = "onnx"):
    loaded = load_model(SAMPLES / entry["file"])
    graph = to_graph(loaded)
    report = PassManager(parse_pipeline(PIPELINE)).run(graph, PassContext(options={"emit": emit}))
    return loaded.model, to_model(graph, like=loaded.model), report


@pytest.mark.parametrize("entry", _entries())
def test_fused_counts_match_manifest_and_outputs_agree(entry):
    original, fused, report = _fuse(entry)
    counts = Counter(n.op_type for n in fused.graph.node)
    for block, op in FUSED_OP.items():
        assert counts[op] == entry["blocks"][block], f"{entry['name']}: {op} {counts[op]} != manifest {block}"
    feeds = random_feeds(load_spec(SAMPLES / f"{entry['name']}.spec.json"), seed=0)
    ref = run_ort(original, feeds)
    got = run_ort(fused, feeds, outputs=list(ref))
    for name, value in ref.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-4, err_msg=f"{entry['name']}:{name}")


@pytest.mark.trt
@pytest.mark.parametrize("name", ["bert_ts_op14", "llama_ts", "unet_ts"])
def test_fused_sample_parses_with_tensorrt(name):
    trt = pytest.importorskip("tensorrt_rtx")
    entry = next((e.values[0] for e in _entries() if e.values[0]["name"] == name), None)
    if entry is None:
        pytest.skip(f"sample {name} not present")
    _, fused, report = _fuse(entry)
    assert sum(report.changes_by_pass().get(p, 0) for p in ("fuse-layernorm", "fuse-rmsnorm", "fuse-groupnorm")) > 0
    logger = trt.Logger(trt.Logger.ERROR)
    network = trt.Builder(logger).create_network(0)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse(fused.SerializeToString())
    assert ok, [parser.get_error(i).desc() for i in range(parser.num_errors)]
