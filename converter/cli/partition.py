"""``surgery partition MODEL -o DIR``: split a model into TensorRT-supported and unsupported partitions."""
from __future__ import annotations

import argparse
from pathlib import Path

from converter.cli.args import add_backend_argument, add_shape_arguments
from converter.runtime.partition_run import partition_model
from converter.trt.backends import select_backend
from surgery.paths import check_outputs, model_files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="ONNX model")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the partitions and manifest.json")
    add_backend_argument(parser)
    add_shape_arguments(parser, "input spec JSON (opt shapes for the classifying build; default: MODEL's .spec.json, else derived)")


def run(args: argparse.Namespace) -> int:
    check_outputs(model_files(Path(args.model)), {}, {"-o": args.output})
    manifest = partition_model(args.model, args.output, select_backend(args.backend), shapes=args)
    by = manifest["classified_by"]
    print(f"{len(manifest['partitions'])} partition(s) of {args.model} (classified by {by['name']} {by['version']})")
    for p in manifest["partitions"]:
        why = f"  ({p['reason']})" if p["reason"] else ""
        print(f"  #{p['id']} {p['backend']:<11} {len(p['nodes']):>4} node(s)  {p['file']}{why}")
    if manifest["profile"]:
        print(f"profile {manifest['profile_source']}")
        for name, (lo, opt, hi) in manifest["profile"].items():
            print(f"  {name}: min {'x'.join(map(str, lo))}, opt {'x'.join(map(str, opt))}, max {'x'.join(map(str, hi))}")
    print(f"manifest {args.output}/manifest.json")
    return 0
