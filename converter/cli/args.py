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
    parser.add_argument("--opt-shapes", action="append", default=[], metavar="SHAPES",
                        help="profile point the kernels are chosen for, same syntax")
    parser.add_argument("--max-shapes", action="append", default=[], metavar="SHAPES", help="profile maximum, same syntax")
    parser.add_argument("--spec", help=spec_help)


def add_plugin_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """What every build takes, the trial build of ``check`` included: plugin libraries and decomposable attention."""
    parser.add_argument("--plugins", action="append", default=[], metavar="LIB.so",
                        help="plugin library to load (repeatable; both)")
    parser.add_argument("--decomposable-attention", action="store_true",
                        help="let attention fall back to MatMul/Softmax kernels when no fused kernel exists "
                             "(where the library has IAttention.decomposable)")


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    """Build options shared by ``convert`` and ``run`` (read back by ``build_options``). Each help says
    which backends honour the option; ``convert`` refuses in one line what the library or machine cannot do."""
    add_shape_arguments(parser)
    group = parser.add_argument_group("engine options (both = tensorrt and tensorrt-rtx)")
    group.add_argument("--workspace", type=parse_size, help="workspace memory pool limit, e.g. 1G (both)")
    group.add_argument("--builder-optimization-level", type=int, choices=range(0, 6), metavar="0-5",
                       help="builder effort: higher searches more kernels, builds slower (both)")
    group.add_argument("--timing-cache", action="append", default=[], metavar="FILE",
                       help="timing cache to load; repeat to merge several (then --save-timing-cache says where). "
                            "One alone is updated in place. The report counts the misses (tensorrt; tensorrt-rtx has "
                            "no autotuning and ignores timing caches: the report says so)")
    group.add_argument("--save-timing-cache", metavar="FILE",
                       help="write the (merged) timing cache with this build's new entries here (tensorrt)")
    add_plugin_arguments(group)
    group.add_argument("--strongly-typed", action="store_true",
                       help="strongly typed network: tensor types come from the ONNX model (both)")
    group.add_argument("--refittable", action="store_true",
                       help="an engine whose weights `surgery refit` can replace later (both; tensorrt-rtx 1.7 needs a "
                            "CUDA driver to build it)")
    group.add_argument("--strip-weights", action="store_true",
                       help="a weight-stripped plan, refit from the ONNX model before it runs; with --refittable the "
                            "weights may differ, else they must be the same (both; tensorrt-rtx 1.7 needs a CUDA driver)")
    group.add_argument("--tactic-sources", metavar="LIST", type=lambda v: [] if v.lower() == "none" else [t for t in v.split(",") if t],
                       help="comma-separated tactic sources to allow, or 'none' (both; the names differ: the error lists "
                            "this library's)")
    group.add_argument("--save-tactics", metavar="FILE",
                       help="record the tactics the build chooses (Polygraphy's tactic replay file; tensorrt with an "
                            "algorithm selector, i.e. up to 10.x; not tensorrt-rtx)")
    group.add_argument("--load-tactics", metavar="FILE",
                       help="replay recorded tactics so the build chooses the same kernels on the same machine "
                            "(as --save-tactics)")
    group.add_argument("--weight-streaming", action="store_true",
                       help="let the engine stream weights from host memory when they exceed the GPU's; the budget is "
                            "set where it runs (validate --weight-streaming-budget) (both; tensorrt wants --strongly-typed)")
    group.add_argument("--hardware-compatibility", metavar="LEVEL",
                       help="ampere_plus: runs on any Ampere-or-newer GPU (tensorrt builds it on one; tensorrt-rtx on the "
                            "CPU); same_compute_capability (both)")
    group.add_argument("--version-compatible", action="store_true",
                       help="an engine later TensorRT versions run; embeds the lean runtime library, which must be "
                            "installed (both where the library has it)")
    group.add_argument("--exclude-lean-runtime", action="store_true",
                       help="with --version-compatible: leave the lean runtime out of the engine (both)")


def build_options(args: argparse.Namespace) -> BuildOptions:
    """Builder settings from ``add_build_arguments``; the profiles are chosen per model (``converter.trt.profiles``)."""
    caches = [Path(c) for c in args.timing_cache]
    save = Path(args.save_timing_cache) if args.save_timing_cache else caches[0] if len(caches) == 1 else None
    path = lambda value: Path(value) if value else None  # noqa: E731
    return BuildOptions(workspace=args.workspace, optimization_level=args.builder_optimization_level,
                        timing_caches=caches, save_timing_cache=save, plugins=list(args.plugins),
                        strongly_typed=args.strongly_typed, hardware_compatibility=args.hardware_compatibility,
                        version_compatible=args.version_compatible, exclude_lean_runtime=args.exclude_lean_runtime,
                        decomposable_attention=args.decomposable_attention, refittable=args.refittable,
                        strip_weights=args.strip_weights, tactic_sources=args.tactic_sources,
                        save_tactics=path(args.save_tactics), load_tactics=path(args.load_tactics),
                        weight_streaming=args.weight_streaming)


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
