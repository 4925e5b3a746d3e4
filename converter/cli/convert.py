"""``surgery convert MODEL -o ENGINE``: build a TensorRT engine (a CPU AOT engine with TensorRT-RTX)."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from converter.trt.backends import select_backend
from converter.cli.check import add_backend_argument
from converter.trt.profiles import add_shape_arguments, profiles_for
from converter.trt.build import BuildOptions, build_engine
from surgery.errors import UserInputError
from surgery.io import load_model
from surgery.paths import check_outputs, model_files

_UNITS = {"": 1, "B": 1, "K": 2**10, "KIB": 2**10, "M": 2**20, "MIB": 2**20, "G": 2**30, "GIB": 2**30}


def parse_size(text: str) -> int:
    """'1G', '512M', '1073741824' -> bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise UserInputError(f"bad size '{text}' (examples: 1073741824, 512M, 2G)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    """Build options shared by ``convert`` and ``run``."""
    add_shape_arguments(parser)
    parser.add_argument("--workspace", type=parse_size, help="workspace memory pool limit (e.g. 1G)")
    parser.add_argument("--builder-optimization-level", type=int, choices=range(0, 6), metavar="0-5")
    parser.add_argument("--timing-cache", help="timing cache file to load (and update)")
    parser.add_argument("--plugins", action="append", default=[], metavar="LIB.so", help="plugin library (repeatable)")
    parser.add_argument("--strongly-typed", action="store_true", help="strongly typed network (types from the ONNX model)")
    parser.add_argument("--hardware-compatibility", metavar="LEVEL",
                        help="hardware compatibility level where the backend has it (e.g. ampere_plus, same_compute_capability)")
    parser.add_argument("--version-compatible", action="store_true", help="version-compatible engine where supported")
    parser.add_argument("--decomposable-attention", action="store_true",
                        help="let attention fall back to MatMul/Softmax kernels when no fused kernel exists")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="ONNX model")
    parser.add_argument("-o", "--output", required=True, help="engine file to write")
    add_backend_argument(parser)
    add_build_arguments(parser)
    parser.add_argument("--json", dest="json_out", metavar="FILE", help="write a build summary as JSON")


def options_from_args(args: argparse.Namespace) -> BuildOptions:
    """Builder settings; the profiles are chosen per model (``converter.trt.profiles``)."""
    cache = Path(args.timing_cache) if args.timing_cache else None
    return BuildOptions(workspace=args.workspace, optimization_level=args.builder_optimization_level,
                        timing_cache=cache, save_timing_cache=cache, plugins=list(args.plugins),
                        strongly_typed=args.strongly_typed, hardware_compatibility=args.hardware_compatibility,
                        version_compatible=args.version_compatible, decomposable_attention=args.decomposable_attention)


def run(args: argparse.Namespace) -> int:
    backend = select_backend(args.backend)
    if backend.module is None:
        raise UserInputError("convert needs tensorrt or tensorrt_rtx (pip install '.[rtx]'); none is importable")
    loaded = load_model(args.model)
    engine = Path(args.output)
    check_outputs(model_files(loaded.path, loaded.model),
                  {"-o": engine, "engine build log": engine.with_name(engine.name + ".build.log"),
                   "engine layer table": engine.with_name(engine.name + ".layers.json"), "--json": args.json_out})
    if args.timing_cache:  # read and rewritten: it may exist, it must not be an input or another output
        check_outputs(model_files(loaded.path, loaded.model) | {engine.resolve()}, {"--timing-cache": args.timing_cache})
    options = options_from_args(args)
    choice = profiles_for(loaded.model, args.model, args)
    result = build_engine(loaded, Path(args.output), backend, options, choice)
    print(f"engine  {result.engine} ({result.size} bytes, {result.seconds:.2f} s) with {backend.name} {backend.version}")
    print(f"log     {result.log}\nlayers  {result.layers}")
    for note in result.notes:
        print(f"note    {note}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result.to_json(), indent=1))
    return 0
