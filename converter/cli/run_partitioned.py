"""``surgery run-partitioned DIR``: run the partitions written by ``surgery partition`` in order.

TensorRT partitions run on TensorRT where an engine can run here, else on onnxruntime (the reason is
printed). ``--compare`` also runs the original model on onnxruntime and exits 1 if an output differs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx

from converter.cli.args import add_input_arguments, add_tolerance_arguments
from converter.runtime.numerics import compare, run_ort
from converter.runtime.partition_run import execute_partitions, load_manifest
from converter.runtime.specs import resolve_spec
from converter.runtime.validate import make_feeds
from surgery.paths import check_outputs, model_files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="folder written by `surgery partition`")
    add_input_arguments(parser, "input spec JSON (default: the original model's .spec.json or derived)")
    parser.add_argument("--no-tensorrt", action="store_true", help="run every partition on onnxruntime")
    parser.add_argument("--compare", action="store_true", help="compare with the original model on onnxruntime")
    parser.add_argument("--save", metavar="OUT.npz", help="write the outputs")
    add_tolerance_arguments(parser)


def run(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.folder)
    original = Path(manifest["model"])
    folder_files = {p for p in Path(args.folder).iterdir() if p.is_file()} if Path(args.folder).is_dir() else set()
    check_outputs(folder_files | model_files(original) | ({Path(args.inputs)} if args.inputs else set()),
                  {"--save": args.save})
    reference = onnx.load(str(original), load_external_data=False) if original.is_file() else None
    model_for_spec = reference or onnx.load(str(Path(args.folder) / manifest["partitions"][0]["file"]))
    specs = resolve_spec(model_for_spec, original if reference is not None else None, args.spec)
    feeds = make_feeds([s for s in specs if s.name in manifest["inputs"]], args.inputs, args.seed)
    result = execute_partitions(args.folder, feeds, use_tensorrt=not args.no_tensorrt)
    for r in result.ran_on:
        print(f"  #{r['id']} planned {r['planned']:<11} ran {r['ran']:<11} {r['reason']}")
    if args.save:
        np.savez(args.save, **result.outputs)
    if not args.compare:
        return 0
    if reference is None:
        print(f"cannot compare: the original model {original} is gone")
        return 1
    ref = run_ort(str(original), feeds)
    diffs = [compare(ref[k], result.outputs[k], k, rtol=args.rtol, atol=args.atol) for k in manifest["outputs"]]
    for d in diffs:
        print(f"  {'ok  ' if d.passed else 'FAIL'} {d.describe()}")
    return 0 if all(d.passed for d in diffs) else 1
