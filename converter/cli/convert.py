"""``surgery convert MODEL -o ENGINE``: build a TensorRT engine (a CPU AOT engine with TensorRT-RTX)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from converter.cli.args import add_backend_argument, add_build_arguments, add_json_argument, build_options
from converter.trt.backends import select_backend
from converter.trt.build import build_engine
from converter.trt.profiles import profiles_for
from surgery.errors import UserInputError
from surgery.io import load_model
from surgery.paths import check_outputs, model_files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="ONNX model")
    parser.add_argument("-o", "--output", required=True, help="engine file to write")
    add_backend_argument(parser)
    add_build_arguments(parser)
    add_json_argument(parser, "a build summary")


def run(args: argparse.Namespace) -> int:
    backend = select_backend(args.backend)
    if backend.module is None:
        raise UserInputError("convert needs tensorrt or tensorrt_rtx (pip install '.[rtx]'); none is importable")
    loaded = load_model(args.model)
    engine = Path(args.output)
    options = build_options(args)
    inputs = model_files(loaded.path, loaded.model) | {Path(c).resolve() for c in options.timing_caches if c != options.save_timing_cache}
    inputs |= {options.load_tactics.resolve()} if options.load_tactics else set()
    check_outputs(inputs, {"-o": engine, "engine build log": engine.with_name(engine.name + ".build.log"),
                           "engine layer table": engine.with_name(engine.name + ".layers.json"), "--json": args.json_out,
                           "--save-timing-cache": options.save_timing_cache, "--save-tactics": options.save_tactics})
    choice = profiles_for(loaded.model, args.model, args)
    result = build_engine(loaded, Path(args.output), backend, options, choice)
    print(f"engine  {result.engine} ({result.size} bytes, {result.seconds:.2f} s) with {backend.name} {backend.version}")
    print(f"log     {result.log}\nlayers  {result.layers}")
    if result.options:
        print("options " + " ".join(flag if value is True else f"{flag} {' '.join(value) if isinstance(value, list) else value}"
                                    for flag, value in result.options.items()))
    for note in result.notes:
        print(f"note    {note}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result.to_json(), indent=1))
    return 0
