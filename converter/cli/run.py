"""``surgery run MODEL -o DIR``: optimize -> check -> convert -> validate, with report.json and report.html."""
from __future__ import annotations

import argparse
from pathlib import Path

from converter.cli.args import add_backend_argument, add_build_arguments, add_seed_argument, add_tolerance_arguments, build_options
from converter.cli.progress import StepProgress
from converter.pipeline import RunOptions, run_pipeline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="ONNX model")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for model.opt.onnx, engine and reports")
    parser.add_argument("--preset", help="optimization preset (default: trt if defined, else default)")
    add_backend_argument(parser)
    add_build_arguments(parser)
    add_tolerance_arguments(parser, by_precision=True)
    add_seed_argument(parser)


def run(args: argparse.Namespace) -> int:
    opts = RunOptions(backend=args.backend, preset=args.preset, spec=Path(args.spec) if args.spec else None,
                      build=build_options(args), shapes=args, atol=args.atol, rtol=args.rtol, seed=args.seed)
    progress = StepProgress()
    try:
        result = run_pipeline(args.model, args.output, opts, hooks=[progress])
    finally:
        progress.done()
    r = result.report
    opt = r["optimize"]
    print(f"optimize   {opt['preset']}: {opt['nodes_before']} -> {opt['nodes_after']} nodes")
    for note in opt.get("notes", []):
        print(f"note       {note}")
    print(f"check      {r['backend']['name']} {r['backend']['version']}: "
          f"{'supported' if r['check']['supported'] else 'NOT supported'}")
    eng = r["engine"]
    print(f"engine     {eng['path'] + ' (' + str(eng['bytes']) + ' bytes)' if eng.get('built') else 'not built: ' + eng.get('reason', '')}")
    for name, val in r["validation"].items():
        extra = f" ({val['skipped']})" if val.get("skipped") else ""
        print(f"validate   {name}: {val['status']}{extra}")
    lat = r["latency"]
    print(f"latency    " + (f"skipped ({lat['skipped']})" if lat["status"] == "skipped" else
                            f"median {lat['gpu_compute_ms']['median']:.4f} ms GPU, p99 {lat['gpu_compute_ms']['p99']:.4f} ms, "
                            f"{lat['throughput_qps']:.1f} qps"))
    print(f"report     {Path(args.output) / 'report.json'}, {Path(args.output) / 'report.html'}")
    return 0 if result.ok else 1
