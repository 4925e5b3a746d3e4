"""``surgery optimize MODEL -o OUT``: run a preset or pass list and write the result and a report."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from converter.cli.args import parse_size
from converter.cli.progress import StepProgress
from converter.optimize import PRECISIONS, OptimizeOptions, optimize_file
from converter.runtime.quantize import CALIBRATION_METHODS, MODES as QUANT_MODES, QuantizeOptions
from surgery.errors import UserInputError
from surgery.shapes import parse_shapes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="input ONNX model")
    parser.add_argument("-o", "--output", help="output ONNX model (required unless --in-place)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--preset", default="default", help="named pipeline (see `surgery list-passes --presets`)")
    group.add_argument("--passes", help="pipeline, e.g. 'fold-constants,fixpoint(eliminate-noops,cse)'")
    parser.add_argument("--disable", action="append", default=[], metavar="PASS", help="skip a pass (repeatable)")
    parser.add_argument("--input-shapes", nargs="+", metavar="SHAPE",
                        help="fix dynamic input dims: x:[1,3,224,224] or x:1x3x224x224")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="fp16/bf16: finally convert, keeping sensitive islands in fp32 (convert-precision); "
                             "int8/fp8/int8-weight-only: then quantize with Q/DQ pairs (README 'Precision')")
    parser.add_argument("--no-keep-io-types", dest="keep_io_types", action="store_false",
                        help="with --precision fp16/bf16: let graph inputs/outputs change type too")
    quant = parser.add_argument_group("quantization (--precision int8, fp8, int8-weight-only)")
    quant.add_argument("--calibration-data", type=Path, metavar="FILE.npz",
                       help="input feeds to calibrate on: one array per input, samples stacked on a new first axis "
                            "(default: random feeds from the input spec, meaningless scales for a real model)")
    quant.add_argument("--calibration-samples", type=int, default=8, metavar="N",
                       help="random feeds drawn when there is no --calibration-data (default 8)")
    quant.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default="minmax",
                       help="int8 calibration of activation ranges (default minmax; fp8 always uses distribution)")
    quant.add_argument("--quantize-exclude", action="append", default=[], metavar="NODE",
                       help="keep this Conv/MatMul/Gemm in float (repeatable)")
    quant.add_argument("--max-node-error", type=float, default=0.1, metavar="E",
                       help="a node whose output moves by more than this relative L2 with its inputs quantized "
                            "stays float (default 0.1)")
    parser.add_argument("--emit", choices=("onnx", "plugin", "ort"), default="onnx", help="what fusions emit")
    parser.add_argument("--explain", action="append", default=[], metavar="PASS",
                        help="list each candidate site of PASS and why it was or was not rewritten")
    parser.add_argument("--validate-each", action="store_true",
                        help="after each changing pass, compare outputs with the original on onnxruntime")
    parser.add_argument("--spec", type=Path, help="input spec JSON for --validate-each (default: MODEL.spec.json)")
    parser.add_argument("--dump-dir", type=Path, help="where --validate-each saves models around a failing pass")
    parser.add_argument("--external-data", action="store_true", default=None,
                        help="store weights in OUT.data (automatic above 2 GB and for an input with external data)")
    parser.add_argument("--in-place", action="store_true", help="allow overwriting the input model")
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument("--html", type=Path, help="write a self-contained HTML report here (passes, per-node precision)")
    parser.add_argument("--fold-size-threshold", metavar="SIZE", type=parse_size,
                        help="largest tensor fold-constants may create, e.g. 4M or 1G (default 4M)")
    parser.add_argument("--remove-node", action="append", default=[], metavar="NAME",
                        help="with the remove-nodes pass: a node to bypass (repeatable)")
    parser.add_argument("--remove-op", action="append", default=[], metavar="OP",
                        help="with the remove-nodes pass: an op type whose nodes are bypassed (repeatable)")
    parser.add_argument("--plugin-map", type=Path, metavar="FILE.toml",
                        help="map ops or fusion patterns to TensorRT plugins (appends map-plugins; README 'Plugin maps')")


def run(args: argparse.Namespace) -> int:
    output = args.output or (args.model if args.in_place else None)
    if not output:
        raise UserInputError("optimize: -o/--output is required (or --in-place)")
    opts = OptimizeOptions(
        preset=args.preset, passes=args.passes, disable=frozenset(args.disable),
        input_shapes=parse_shapes(args.input_shapes) if args.input_shapes else None, emit=args.emit,
        explain=frozenset(args.explain), validate_each=args.validate_each, spec=args.spec, dump_dir=args.dump_dir,
        external_data=args.external_data, in_place=args.in_place, precision=args.precision,
        keep_io_types=args.keep_io_types, report=args.report, html=args.html,
    )
    if args.precision in QUANT_MODES:
        if args.calibration_samples < 1:
            raise UserInputError("--calibration-samples must be at least 1")
        opts.quantize = QuantizeOptions(
            mode=args.precision, calibration_data=args.calibration_data, calibration_samples=args.calibration_samples,
            calibration_method=args.calibration_method, exclude=tuple(args.quantize_exclude),
            max_node_error=args.max_node_error)
    elif args.calibration_data or args.quantize_exclude:
        raise UserInputError("--calibration-data/--quantize-exclude need --precision int8, fp8 or int8-weight-only")
    if args.fold_size_threshold is not None:
        opts.extra["fold_size_threshold"] = args.fold_size_threshold
    if args.remove_node or args.remove_op:
        opts.extra.update(remove_names=list(args.remove_node), remove_ops=list(args.remove_op))
        if "remove-nodes" not in (args.passes or ""):
            raise UserInputError("--remove-node/--remove-op: add the remove-nodes pass to --passes")
    if args.plugin_map:
        from converter.plugins.map import load_plugin_map

        opts.extra["plugin_map"] = load_plugin_map(args.plugin_map)
    progress = StepProgress()
    try:
        report = optimize_file(args.model, output, opts, hooks=[progress])
    finally:
        progress.done()
    _print_summary(report)
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    if args.html:
        from converter.report_html import optimize_html

        args.html.write_text(optimize_html(report))
    validation = report.get("quantization", {}).get("validation", {})
    if validation.get("status") == "failed":
        print(f"quantized model FAILED validation against the original ({validation['thresholds']}); "
              "it was written for inspection", file=sys.stderr)
        return 1
    return 0


def _print_summary(report: dict) -> None:
    print(f"{report['input']} -> {report['output']}")
    print(f"nodes: {report['nodes_before']} -> {report['nodes_after']}; {report['total_changed']} change(s)")
    print(f"pipeline: {report['pipeline']}")
    for name, flag in report["added_by_options"].items():
        print(f"  {name} added for {flag}")
    width = max((len(r["name"]) for r in report["passes"]), default=4)
    for r in report["passes"]:
        stats = ", ".join(f"{k}={v}" for k, v in r["stats"].items())
        sweep = f" (sweep {r['sweep']})" if r["sweep"] else ""
        print(f"  {r['name']:<{width}} changed={r['changed']:<4}{sweep} {stats}")
        for note in r["notes"]:
            print(f"  {'':<{width}}   note: {note}")
        for name, source in r.get("note_sources", {}).items():
            print(f"  {'':<{width}}     {name}: {source['line']}")
        for site in r.get("sites", []):
            reason = f": {site['reason']}" if site["reason"] else ""
            print(f"  {'':<{width}}   {site['site']}: {site['outcome']}{reason}")
            if site.get("source"):
                print(f"  {'':<{width}}     source: {site['source']['line']}")
    if report.get("precision"):
        from converter.precision_report import render_summary

        for line in render_summary(report["precision"]):
            print(line)
    validation = report.get("quantization", {}).get("validation")
    if validation:
        print(f"quantization validation: {validation['status']} on {validation['feeds']}")
        for o in validation["outputs"]:
            top1 = f" top-1={o['top1']:.3f}" if o["top1"] is not None else ""
            print(f"  {o['name']}: cosine={o['cosine']:.6f} rel L2={o['rel_l2']:.4g}{top1} "
                  f"{'pass' if o['passed'] else 'FAIL'}")
