"""Seeded mutants of our samples through every command, as a user would run them.

Each mutant (see ``tests/fuzz.py``) goes through ``inspect``, ``optimize`` (both presets),
``check --json`` and ``extract`` in a fresh process. Whatever the damage, a run must either
succeed or refuse in one stderr line with exit 1 or 2, never leave its input changed, never leave
a partial output or a temporary file behind, and an optimized model must compute what the
mutant computed wherever onnxruntime can run the mutant.
"""
from __future__ import annotations

import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.corpus import mismatch, run
from tests.fuzz import MODEL, MUTATIONS, snapshot, stderr_problems, surgery

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = {"cnn_ts": "/mid/mid.2/Mul_output_0", "lstm_ts": "/lstm/Slice_1_output_0", "bert_ts": "/m/Mul_1_output_0"}
SEED = 20261202
# onnxruntime 1.32 keeps a session-id file in the temporary folder on purpose; it is not ours to remove.
ONNXRUNTIME_OWN = {".ses"}


def _feeds(path: Path) -> dict[str, np.ndarray] | None:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None
    rng = np.random.default_rng(0)
    feeds = {}
    for vi in model.graph.input:
        tt = vi.type.tensor_type
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        except Exception:
            return None
        shape = [d.dim_value if 0 < d.dim_value < 64 else 1 for d in tt.shape.dim]
        feeds[vi.name] = (rng.integers(0, 2, shape) if dtype.kind in "iu" else rng.standard_normal(shape)).astype(dtype)
    return feeds


def _reference(path: Path) -> tuple[dict, dict] | None:
    """Inputs and outputs of the mutant on onnxruntime, or None where onnxruntime refuses it."""
    feeds = _feeds(path)
    if feeds is None:
        return None
    try:
        return feeds, run(path, feeds)
    except Exception:
        return None


def _commands(sample: str) -> list[tuple[list[str], str | None]]:
    first_input = onnx.load(str(ROOT / "sample_models" / f"{sample}.onnx")).graph.input[0].name
    return [
        (["inspect", MODEL], None),
        (["optimize", MODEL, "-o", "out/default.onnx"], "out/default.onnx"),
        (["optimize", MODEL, "--preset", "trt", "-o", "out/trt.onnx"], "out/trt.onnx"),
        (["check", MODEL, "--json", "out/check.json"], None),
        (["extract", MODEL, "--inputs", first_input, "--outputs", SAMPLES[sample], "-o", "out/extract.onnx"], None),
    ]


def _fuzz_one(sample: str, mutation: str, work: Path) -> list[str]:
    """Every rule broken by every command on one mutant, as readable lines."""
    work.mkdir(parents=True)
    model = onnx.load(str(ROOT / "sample_models" / f"{sample}.onnx"))
    rng = random.Random(f"{SEED}/{sample}/{mutation}")
    MUTATIONS[mutation](model, rng, work)
    before = snapshot(work)
    reference = _reference(work / MODEL)
    failures = []
    for args, optimized in _commands(sample):
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        rc, _, stderr = surgery(args, work)
        what = f"{sample}/{mutation}: surgery {' '.join(args)} -> {rc}"
        failures += [f"{what}: {p}" for p in stderr_problems(rc, stderr)]
        if leftovers := sorted(set(snapshot(work / "tmp")) - ONNXRUNTIME_OWN):
            failures.append(f"{what}: left temporary files {leftovers}")
        after = {k: v for k, v in snapshot(work).items() if not k.startswith(("out/", "tmp/"))}
        if after != before:
            failures.append(f"{what}: input folder changed")
        left = sorted(snapshot(out))
        allowed = ["check.json"] if args[0] == "check" and rc == 1 else []
        if rc != 0 and [f for f in left if f not in allowed]:
            failures.append(f"{what}: failed but left {left}")
        if rc == 0 and optimized and reference is not None:
            feeds, expected = reference
            try:
                got = run(work / optimized, feeds)
            except Exception as exc:
                failures.append(f"{what}: onnxruntime runs the mutant but not the output: {str(exc).splitlines()[0][:200]}")
                continue
            if got.keys() != expected.keys():
                failures.append(f"{what}: outputs {sorted(got)} vs {sorted(expected)}")
            for name in expected.keys() & got.keys():
                if why := mismatch(expected[name], got[name]):
                    failures.append(f"{what}: output {name} changed: {why}")
    return failures


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_mutants_fail_cleanly_or_keep_their_results(sample, tmp_path):
    with ThreadPoolExecutor(2) as pool:
        results = pool.map(lambda m: _fuzz_one(sample, m, tmp_path / m), sorted(MUTATIONS))
        failures = [line for lines in results for line in lines]
    assert not failures, "\n".join(failures)
