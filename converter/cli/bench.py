"""``surgery bench ENGINE|MODEL``: latency percentiles and throughput, as trtexec measures them.

A MODEL (.onnx) is built first (the options of ``convert``; ``--save-engine`` keeps the engine). Exit
0 measured, 2 user error, 3 skipped: the engine cannot run here (TensorRT's reason is printed, never
a number).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from converter.cli.args import add_backend_argument, add_build_arguments, build_options
from converter.runtime.numerics import InputSpec
from converter.runtime.specs import resolve_spec
from converter.runtime.validate import EngineSkipped, make_feeds
from converter.trt.backends import Backend, require_library, select_backend
from converter.trt.bench import BenchOptions, BenchResult, bench_engine
from converter.trt.build import build_engine
from converter.trt.profiles import profiles_for
from surgery.errors import UserInputError
from surgery.io import load_model
from surgery.paths import check_outputs, model_files

EXIT_SKIPPED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="ENGINE|MODEL", help="a TensorRT engine, or an ONNX model to build first")
    add_backend_argument(parser)
    add_build_arguments(parser)  # for a MODEL; --input-shapes etc. also pick an engine's input shapes
    parser.add_argument("--save-engine", metavar="FILE", help="for a MODEL: keep the engine built for the run here")
    parser.add_argument("--inputs", metavar="FILE.npz", help="input arrays (default: seeded random from the spec)")
    parser.add_argument("--seed", type=int, default=0, help="seed for random inputs (default: 0)")
    parser.add_argument("--warmup", type=float, default=200.0, metavar="MS", help="warm-up time in ms (default 200)")
    parser.add_argument("--iterations", type=int, default=10, metavar="N", help="at least N timed inferences (default 10)")
    parser.add_argument("--duration", type=float, default=3.0, metavar="S", help="and at least S seconds (default 3)")
    parser.add_argument("--use-cuda-graph", action="store_true", help="capture the inference in a CUDA graph and replay it")
    parser.add_argument("--export-times", metavar="FILE", help="write per-inference times (JSON)")
    parser.add_argument("--dump-profile", action="store_true", help="a separate profiling run: per-layer times")
    parser.add_argument("--export-profile", metavar="FILE", help="write the per-layer profile (JSON); implies --dump-profile")
    parser.add_argument("--json", dest="json_out", metavar="FILE", help="write the measurement as JSON")


def run(args: argparse.Namespace) -> int:
    target = Path(args.target)
    if not target.is_file():
        raise UserInputError(f"{target}: no such file")
    if args.iterations < 1 or args.duration < 0 or args.warmup < 0:
        raise UserInputError("--iterations must be >= 1, --duration and --warmup >= 0")
    is_model = target.suffix.lower() == ".onnx"
    inputs = model_files(target) | {Path(p).resolve() for p in (args.spec, args.inputs) if p}
    check_outputs(inputs, {"--json": args.json_out, "--export-times": args.export_times,
                           "--export-profile": args.export_profile, "--save-engine": args.save_engine})
    backend = select_backend(args.backend)
    require_library(backend, "bench")
    options = BenchOptions(warmup_ms=args.warmup, iterations=args.iterations, duration_s=args.duration,
                           cuda_graph=args.use_cuda_graph, profile_iterations=10 if (args.dump_profile or args.export_profile) else 0)
    with tempfile.TemporaryDirectory() as tmp:
        data, specs = _engine_and_specs(args, target, is_model, backend, Path(tmp))
        feeds = make_feeds(specs, args.inputs, args.seed) if specs is not None else None
        try:
            result = bench_engine(backend, data, feeds, options)
        except EngineSkipped as exc:
            print(f"skipped: {exc}")
            if args.json_out:
                Path(args.json_out).write_text(json.dumps({"status": "skipped", "skipped": str(exc)}, indent=1))
            return EXIT_SKIPPED
    print(render(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result.to_json(), indent=1))
    if args.export_times:
        Path(args.export_times).write_text(json.dumps(result.times(), indent=1))
    if args.export_profile:
        Path(args.export_profile).write_text(json.dumps(result.layers, indent=1))
    return 0


def _engine_and_specs(args: argparse.Namespace, target: Path, is_model: bool, backend: Backend,
                      tmp: Path) -> tuple[bytes, list[InputSpec] | None]:
    """The serialized engine, and the input specs (None: let ``bench_engine`` take the engine's opt shapes)."""
    if not is_model:
        return target.read_bytes(), (resolve_spec_file(args) if args.spec or args.inputs else None)
    loaded = load_model(target)
    choice = profiles_for(loaded.model, target, args)
    engine_path = Path(args.save_engine) if args.save_engine else tmp / "model.engine"
    build_engine(loaded, engine_path, backend, build_options(args), choice)
    return engine_path.read_bytes(), choice.opt_specs(resolve_spec(loaded.model, target, args.spec))


def resolve_spec_file(args: argparse.Namespace) -> list[InputSpec]:
    """An engine's inputs from --spec (or, with --inputs alone, the arrays' own names and shapes)."""
    from converter.runtime.numerics import load_spec

    if args.spec:
        return load_spec(args.spec)
    with np.load(args.inputs) as data:
        return [InputSpec(k, tuple(data[k].shape), str(data[k].dtype)) for k in data.files]


def render(result: BenchResult) -> str:
    j: dict[str, Any] = result.to_json()

    def row(label: str, s: dict[str, float]) -> str:
        return (f"{label:<16} min {s['min']:.4f}  mean {s['mean']:.4f}  median {s['median']:.4f}  p90 {s['p90']:.4f}  "
                f"p95 {s['p95']:.4f}  p99 {s['p99']:.4f}  max {s['max']:.4f} ms")

    lines = [f"inferences       {j['inferences']} in {j['wall_s']:.3f} s"
             f"{' (CUDA graph)' if result.options.cuda_graph else ''}",
             f"throughput       {j['throughput_qps']:.2f} qps",
             row("GPU compute", j["gpu_compute_ms"]), row("latency (host)", j["latency_ms"])]
    for layer in result.layers[:20]:
        lines.append(f"  {layer['avg_ms']:9.4f} ms  {layer['percent']:5.1f}%  {layer['name']}")
    return "\n".join(lines)

