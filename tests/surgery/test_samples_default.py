"""Issue 2's acceptance on every sample export: the default preset keeps outputs, shrinks or keeps
node counts, converges in one run, and is byte-for-byte deterministic."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import onnx
import pytest

from converter.cli.main import main
from converter.runtime.numerics import load_spec, random_feeds, run_ort
from tests.samples import sample_names, sample_path, spec_path


@pytest.mark.parametrize("name", sample_names())
def test_default_preset_on_sample(name, tmp_path, capsys):
    src, out, again = sample_path(name), tmp_path / "o.onnx", tmp_path / "o2.onnx"
    report_path = tmp_path / "r.json"
    assert main(["optimize", str(src), "-o", str(out), "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["passes"] and all({"name", "changed"} <= set(p) for p in report["passes"])
    original, optimized = onnx.load(src), onnx.load(out)
    assert len(optimized.graph.node) <= len(original.graph.node)

    feeds = random_feeds(load_spec(spec_path(name)), seed=0)
    ref = run_ort(original, feeds)
    got = run_ort(optimized, feeds, outputs=list(ref))
    for k, v in ref.items():
        assert got[k].shape == v.shape
        assert got[k].dtype == v.dtype
        import numpy as np
        np.testing.assert_allclose(got[k], v, rtol=1e-4, atol=1e-5, err_msg=k)

    assert main(["optimize", str(out), "-o", str(again), "--report", str(report_path)]) == 0
    assert json.loads(report_path.read_text())["total_changed"] == 0

    twice = tmp_path / "o3.onnx"
    assert main(["optimize", str(src), "-o", str(twice)]) == 0
    assert twice.read_bytes() == out.read_bytes()


def test_output_identical_across_hash_seeds(tmp_path):
    src = sample_path("bert_ts")
    outputs = []
    for seed in ("0", "12345"):
        out = tmp_path / f"o{seed}.onnx"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-m", "surgery", "optimize", str(src), "-o", str(out)], check=True, env=env,
                       capture_output=True)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
