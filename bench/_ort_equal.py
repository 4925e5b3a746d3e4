"""Compare one model's onnxruntime CPU outputs with a reference; run by the peers' python.

Usage::

    PEERS_PYTHON bench/_ort_equal.py MODEL SPEC REF_NPZ

If REF_NPZ does not exist, MODEL's outputs on the spec's inputs (seed 0) are written there. Otherwise they
are compared, output by output in graph order, with ``|got - ref| <= 1e-3 + 1e-3 * |ref|``. Prints one JSON
line last: ``{"ok": bool, "max_abs": float, "error": str}``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

ATOL = RTOL = 1e-3


def feeds_from_spec(spec: dict) -> dict[str, np.ndarray]:
    """The same draws as ``sample_models/generate.py:feeds_from_spec`` (seed 0)."""
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in spec["inputs"]:
        dtype = np.dtype(inp["dtype"])
        if np.issubdtype(dtype, np.integer):
            feeds[inp["name"]] = rng.integers(inp["low"], inp["high"], size=inp["shape"]).astype(dtype)
        else:
            feeds[inp["name"]] = rng.standard_normal(inp["shape"]).astype(dtype)
    return feeds


def run(model: str, spec: dict) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]).run(None, feeds_from_spec(spec))


def compare(got: list[np.ndarray], ref: list[np.ndarray]) -> dict:
    if len(got) != len(ref):
        return {"ok": False, "max_abs": float("nan"), "error": f"{len(got)} outputs, reference has {len(ref)}"}
    worst, ok = 0.0, True
    for g, r in zip(got, ref):
        if g.shape != r.shape:
            return {"ok": False, "max_abs": float("nan"), "error": f"shape {list(g.shape)} != {list(r.shape)}"}
        diff = np.abs(g.astype(np.float64) - r.astype(np.float64))
        worst = max(worst, float(diff.max(initial=0.0)))
        ok = ok and bool(np.all(diff <= ATOL + RTOL * np.abs(r)))
    return {"ok": ok, "max_abs": worst, "error": ""}


def main(argv: list[str]) -> int:
    model, spec_path, ref_path = argv
    spec = json.loads(Path(spec_path).read_text())
    try:
        got = run(model, spec)
        if not Path(ref_path).exists():
            np.savez(ref_path, *got)
            result = {"ok": True, "max_abs": 0.0, "error": ""}
        else:
            with np.load(ref_path) as ref:
                result = compare(got, [ref[f"arr_{i}"] for i in range(len(ref.files))])
    except Exception as exc:  # noqa: BLE001 - a model onnxruntime cannot run is a result
        result = {"ok": False, "max_abs": float("nan"), "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
