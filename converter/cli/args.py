"""Argument groups shared by the commands: backend selection, build options, shapes, inputs, tolerances.

Each option is spelled once here, so ``check``, ``convert``, ``run``, ``partition``, ``validate`` and
``run-partitioned`` read the same way; a command module adds only what is its own.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from converter.trt.backends import BACKEND_CHOICES
from converter.trt.build import BuildOptions

_UNITS = {"": 1, "B": 1, "K": 2**10, "KIB": 2**10, "M": 2**20, "MIB": 2**20, "G": 2**30, "GIB": 2**30}


def parse_size(text: str) -> int:
    """'1G', '512M', '1.5M', '1073741824' -> bytes (an argparse ``type``)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise argparse.ArgumentTypeError(f"bad size '{text}' (examples: 1073741824, 512M, 2G)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                        help="auto prefers tensorrt, then tensorrt-rtx, then the static table (default: auto)")


def add_shape_arguments(parser: argparse.ArgumentParser, spec_help: str = "input spec JSON (its shapes are the opt point)") -> None:
    """The shape options of the commands that build, as trtexec and Polygraphy spell them
    (read by ``converter.trt.profiles.choose_profiles``)."""
    parser.add_argument("--input-shapes", metavar="SHAPES",
                        help="build for one point: x:[1,3,224,224] or x:1x3x224x224 (several inputs: comma or space separated)")
    parser.add_argument("--min-shapes", action="append", default=[], metavar="SHAPES",
                        help="profile minimum, same syntax; repeat --min/--opt/--max-shapes for several profiles")
    parser.add_argument("--opt-shapes", action="append", default=[], metavar="SHAPES")
    parser.add_argument("--max-shapes", action="append", default=[], metavar="SHAPES")
    parser.add_argument("--spec", help=spec_help)


def add_plugin_arguments(parser: argparse.ArgumentParser) -> None:
    """What every build takes, the trial build of ``check`` included: plugin libraries and decomposable attention."""
    parser.add_argument("--plugins", action="append", default=[], metavar="LIB.so", help="plugin library to load (repeatable)")
    parser.add_argument("--decomposable-attention", action="store_true",
                        help="let attention fall back to MatMul/Softmax kernels when no fused kernel exists")


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    """Build options shared by ``convert`` and ``run`` (read back by ``build_options``)."""
    add_shape_arguments(parser)
    parser.add_argument("--workspace", type=parse_size, help="workspace memory pool limit (e.g. 1G)")
    parser.add_argument("--builder-optimization-level", type=int, choices=range(0, 6), metavar="0-5")
    parser.add_argument("--timing-cache", help="timing cache file to load (and update)")
    add_plugin_arguments(parser)
    parser.add_argument("--strongly-typed", action="store_true", help="strongly typed network (types from the ONNX model)")
    parser.add_argument("--hardware-compatibility", metavar="LEVEL",
                        help="hardware compatibility level where the backend has it (e.g. ampere_plus, same_compute_capability)")
    parser.add_argument("--version-compatible", action="store_true", help="version-compatible engine where supported")


def build_options(args: argparse.Namespace) -> BuildOptions:
    """Builder settings from ``add_build_arguments``; the profiles are chosen per model (``converter.trt.profiles``)."""
    cache = Path(args.timing_cache) if args.timing_cache else None
    return BuildOptions(workspace=args.workspace, optimization_level=args.builder_optimization_level,
                        timing_cache=cache, save_timing_cache=cache, plugins=list(args.plugins),
                        strongly_typed=args.strongly_typed, hardware_compatibility=args.hardware_compatibility,
                        version_compatible=args.version_compatible, decomposable_attention=args.decomposable_attention)


def add_seed_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed for random inputs (default: 0)")


def add_input_arguments(parser: argparse.ArgumentParser, spec_help: str) -> None:
    """Where the inputs of a comparison come from: a spec, an .npz file, or seeded random values."""
    parser.add_argument("--spec", help=spec_help)
    parser.add_argument("--inputs", metavar="FILE.npz", help="input arrays (default: seeded random from the spec)")
    add_seed_argument(parser)


def add_tolerance_arguments(parser: argparse.ArgumentParser, by_precision: bool = False) -> None:
    """``--atol``/``--rtol``: fixed, or with ``by_precision`` None by default, so the comparison takes the
    candidate's precision's tolerance (fp32 1e-4/1e-3; fp16 and bf16 looser, with the reason reported)."""
    if by_precision:
        parser.add_argument("--atol", type=float, help="absolute tolerance (default: by the candidate's precision)")
        parser.add_argument("--rtol", type=float, help="relative tolerance (default: by the candidate's precision)")
        return
    parser.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance (default: 1e-4)")
    parser.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance (default: 1e-3)")


def add_json_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", dest="json_out", metavar="FILE", help=f"write {what} as JSON")
