"""``surgery refit ENGINE MODEL.onnx -o ENGINE2``: new weights for a refittable or weight-stripped engine.

The model must have the engine's graph (the same initializers, sizes and types); its weights replace
the engine's. Exit 0 written, 1 the refit failed (the first weight that does not match is named; an
engine this machine cannot deserialize says why), 2 user error.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from converter.cli.args import add_backend_argument
from converter.trt.backends import select_backend
from converter.trt.refit import refit_engine
from surgery.errors import UserInputError
from surgery.paths import check_outputs, model_files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("engine", help="engine built with convert --refittable or --strip-weights")
    parser.add_argument("model", help="ONNX model with the engine's graph and the new weights")
    parser.add_argument("-o", "--output", required=True, help="refitted engine to write")
    add_backend_argument(parser)


def run(args: argparse.Namespace) -> int:
    engine, model = Path(args.engine), Path(args.model)
    for path in (engine, model):
        if not path.is_file():
            raise UserInputError(f"{path}: no such file")
    check_outputs(model_files(model) | {engine.resolve()}, {"-o": args.output})
    backend = select_backend(args.backend)
    if backend.module is None:
        raise UserInputError("refit needs tensorrt or tensorrt_rtx (pip install '.[rtx]'); none is importable")
    result = refit_engine(backend, engine, model, Path(args.output))
    print(f"engine  {result.engine} ({result.size} bytes): {result.weights} weights refit from {model} "
          f"with {backend.name} {backend.version}")
    return 0
