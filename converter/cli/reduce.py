"""``surgery reduce MODEL -o OUT``: cut a failing model down to a minimal subgraph that fails the same way.

Modes: ``parse`` (TensorRT's ONNX parser rejects it), ``build`` (it does not parse or the engine build
fails; the default), ``accuracy`` (its outputs differ from ``--reference`` on onnxruntime, or, without
``--reference``, a TensorRT engine of it differs from onnxruntime). Writes OUT (the reduced model) and
a JSON report (``--json``, default OUT with the suffix ``.reduce.json``): the nodes kept, with their
source lines, and the failure message. Exit 0 reduced, 1 nothing to reduce or the work failed, 2 user
error, 3 skipped (an engine cannot run here; the reason is printed).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from converter.cli.args import add_backend_argument, add_plugin_arguments, add_seed_argument, add_shape_arguments
from converter.reduce import ReduceResult, reduce_model
from converter.reduce.probes import AccuracyProbe, EngineSkipped, Probe, engine_runner
from converter.reduce.reducer import first_divergent, observed_values, reduce_trt_failure, tensor_values
from converter.runtime.specs import resolve_spec
from converter.runtime.validate import choose_tolerance, make_feeds
from converter.trt.backends import require_library, select_backend
from converter.trt.profiles import profiles_for
from surgery.errors import UserInputError
from surgery.io import LoadedModel, load_model, save_model
from surgery.paths import check_outputs, model_files
from surgery.provenance import source_map

EXIT_SKIPPED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the failing ONNX model")
    parser.add_argument("-o", "--output", required=True, help="where to write the reduced model")
    parser.add_argument("--mode", choices=("build", "parse", "accuracy"), default="build",
                        help="what failure to keep: an engine build (or parse) failure, a parse failure, an output mismatch")
    parser.add_argument("--reference", metavar="REF",
                        help="accuracy: the model MODEL should match on onnxruntime (without it: a TensorRT engine "
                             "of MODEL against onnxruntime, where engines run)")
    parser.add_argument("--fail-regex", metavar="REGEX",
                        help="keep cuts whose failure message matches REGEX (default: the same message as the whole "
                             "model's, names and numbers aside)")
    add_backend_argument(parser)
    add_shape_arguments(parser, "input spec JSON (default: MODEL's .spec.json, else derived)")
    parser.add_argument("--inputs", metavar="FILE.npz", help="accuracy: input arrays (default: seeded random from the spec)")
    add_seed_argument(parser)
    parser.add_argument("--atol", type=float, help="accuracy: absolute tolerance (default: as validate's)")
    parser.add_argument("--rtol", type=float, help="accuracy: relative tolerance (default: as validate's)")
    add_plugin_arguments(parser)
    parser.add_argument("--json", dest="json_out", metavar="FILE", help="the report (default: OUT with suffix .reduce.json)")


def run(args: argparse.Namespace) -> int:
    loaded = load_model(args.model)
    reference = load_model(args.reference) if args.reference else None
    if reference is not None and args.mode != "accuracy":
        raise UserInputError("--reference is for --mode accuracy")
    out = Path(args.output)
    report_path = Path(args.json_out) if args.json_out else out.with_suffix(".reduce.json")
    inputs = model_files(loaded.path, loaded.model) | (model_files(reference.path, reference.model) if reference else set())
    check_outputs(inputs | {Path(p).resolve() for p in (args.spec, args.inputs) if p}, {"-o": out, "--json": report_path})
    progress = _Progress()
    try:
        result = _reduce(args, loaded, reference, progress)
    except EngineSkipped as exc:
        progress.done()
        print(f"skipped: {exc}")
        return EXIT_SKIPPED
    finally:
        progress.done()
    save_model(result.model, out, source_dir=loaded.base_dir, protect=loaded.path)
    report = {"model": str(loaded.path), "output": str(out), **result.to_json()}
    report_path.write_text(json.dumps(report, indent=1) + "\n")
    print(render(result, out, report_path))
    return 0


def _reduce(args: argparse.Namespace, loaded: LoadedModel, reference: LoadedModel | None, progress: "_Progress") -> ReduceResult:
    model = loaded.model
    if args.mode == "accuracy":
        ref_model = reference.model if reference is not None else model
        specs = resolve_spec(ref_model, (reference or loaded).path, args.spec)
        feeds = make_feeds(specs, args.inputs, args.seed)
        shapes = {name: list(np.shape(value)) for name, value in feeds.items()}
        tolerance = choose_tolerance(model, args.atol, args.rtol)
        expected = tensor_values(ref_model, feeds)
        if reference is not None:
            probe: Probe = AccuracyProbe(expected, tolerance)
            seeds = first_divergent(model, expected, feeds, tolerance)
            values, note = observed_values(model, feeds)  # types the cuts; onnxruntime may refuse the candidate
            if note:
                print(f"note: {note}", file=sys.stderr)
        else:
            backend = select_backend(args.backend)
            require_library(backend, "reduce --mode accuracy without --reference")
            probe, seeds, values = AccuracyProbe(expected, tolerance, mode="accuracy (engine)", run=engine_runner(backend)), [], expected
        return reduce_model(model, probe, shapes, values=values, fail_regex=args.fail_regex, seeds=seeds,
                            on_probe=progress)
    backend = select_backend(args.backend)
    trt = require_library(backend, f"reduce --mode {args.mode}")
    from converter.trt.capability import load_plugins

    load_plugins(trt, args.plugins)
    choice = profiles_for(model, loaded.path, args)
    specs = choice.opt_specs(resolve_spec(model, loaded.path, args.spec))
    return reduce_trt_failure(trt, model, str(loaded.path), args.mode, specs, seed=args.seed,
                              decomposable_attention=args.decomposable_attention, fail_regex=args.fail_regex,
                              on_probe=progress)


class _Progress:
    """``[probe N] K nodes: fails`` on one rewritten stderr line (nothing when stderr is not a terminal)."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.shown = False

    def __call__(self, count: int, nodes: int, failed: bool) -> None:
        if self.enabled:
            self.shown = True
            print(f"\r\033[K[probe {count}] {nodes} node(s): {'fails' if failed else 'passes'}", end="", file=sys.stderr,
                  flush=True)

    def done(self) -> None:
        if self.shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
            self.shown = False


def render(result: ReduceResult, out: Path, report: Path) -> str:
    sources = source_map(result.model)
    lines = [f"reduced {result.nodes_before} -> {len(result.model.graph.node)} node(s) in {result.probes} probe(s) "
             f"({result.mode}; shapes {', '.join(f'{k}=' + 'x'.join(map(str, v)) for k, v in result.shapes.items()) or 'static'})"]
    width = max((len(n.name) for n in result.model.graph.node), default=4)
    for node in result.model.graph.node:
        line = sources.line(node.name)
        lines.append(f"  {node.name:<{width}}  {node.op_type}" + (f"  source: {line}" if line else ""))
    lines.append(f"failure ({result.failure.kind}): {result.reproduced.message.splitlines()[0][:400]}")
    lines += [f"note: {note}" for note in result.notes]
    lines.append(f"wrote {out} and {report}")
    return "\n".join(lines)
