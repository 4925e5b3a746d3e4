"""Do optimized text models still honour every attention mask? Compares each candidate with the raw export.

Usage (onnxruntime CPU)::

    python bench/mask_semantics.py RAW.onnx CANDIDATE.onnx [CANDIDATE.onnx ...] [--seq 128]

Feeds the same random ``input_ids`` with four ``attention_mask`` patterns: all ones, right-padded, left-padded
and with holes (every third position masked), and prints the max abs difference of the first output per
candidate and pattern. An optimizer that turns the mask into per-row lengths (right padding assumed) is
exact on the first two and wrong on the last two.
"""
from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort

PATTERNS = ("all-ones", "right-padded", "left-padded", "holes")


def mask(kind: str, batch: int, seq: int) -> np.ndarray:
    m = np.ones((batch, seq), np.int64)
    if kind == "right-padded":
        m[:, seq * 3 // 4:] = 0
    elif kind == "left-padded":
        m[:, :seq // 4] = 0
    elif kind == "holes":
        m[:, ::3] = 0
    return m


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("raw")
    p.add_argument("candidates", nargs="+")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--vocab", type=int, default=1000)
    args = p.parse_args()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = [ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
                for path in [args.raw, *args.candidates]]
    ids = np.random.default_rng(0).integers(0, args.vocab, (args.batch, args.seq)).astype(np.int64)
    print(f"{'mask':<14}" + "".join(f"{c[-40:]:>42}" for c in args.candidates))
    for kind in PATTERNS:
        feeds = {"input_ids": ids, "attention_mask": mask(kind, args.batch, args.seq)}
        ref, *outs = (s.run(None, feeds)[0].astype(np.float32) for s in sessions)
        print(f"{kind:<14}" + "".join(f"{np.abs(o - ref).max():>42.1e}" for o in outs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
