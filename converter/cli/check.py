"""``surgery check MODEL``: what TensorRT can and cannot take, node by node.

Exit 0 when every node is supported and the engine builds, 1 otherwise, 2 on user error.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from converter.cli.args import add_backend_argument, add_json_argument, add_plugin_arguments, add_shape_arguments
from converter.trt.backends import select_backend
from converter.trt.capability import CapabilityReport, check_model
from converter.trt.profiles import describe_profile
from surgery.paths import check_outputs, model_files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="ONNX model")
    add_backend_argument(parser)
    parser.add_argument("--static-target", choices=("tensorrt", "tensorrt-rtx"), default="tensorrt-rtx",
                        help="which library the static table answers for (default: tensorrt-rtx)")
    parser.add_argument("--no-build", action="store_true", help="skip the engine build after a clean parse")
    add_shape_arguments(parser, "input spec JSON (opt shapes for the build; default: MODEL's .spec.json, else derived)")
    add_plugin_arguments(parser)
    add_json_argument(parser, "the report")
    parser.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    parser.add_argument("--save-partitions", metavar="DIR", help="save each partition as an ONNX model")
    parser.add_argument("--all-nodes", action="store_true", help="list supported nodes too")
    parser.add_argument("--no-reduce", action="store_true",
                        help="do not reduce a build failure that names no node to a minimal failing subgraph")


def run(args: argparse.Namespace) -> int:
    check_outputs(model_files(Path(args.model)), {"--json": args.json_out, "--html": args.html},
                  {"--save-partitions": args.save_partitions})
    backend = select_backend(args.backend)
    report = check_model(args.model, backend, build=not args.no_build, spec_path=args.spec, plugins=args.plugins,
                         decomposable_attention=args.decomposable_attention,
                         static_target=args.static_target, save_dir=args.save_partitions, shapes=args,
                         reduce=not args.no_reduce)
    print(render_table(report, all_nodes=args.all_nodes))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report.to_json(), indent=1))
    if args.html:
        from converter.report_html import capability_html

        Path(args.html).write_text(capability_html(report))
    return 0 if report.supported else 1


def render_table(report: CapabilityReport, all_nodes: bool = False) -> str:
    """A plain-text summary, verdict first (supported, build, profile, problems by kind), then nodes and partitions."""
    from converter.report_html import build_text, verdict_lines

    b = report.backend
    counts: dict[str, int] = {}
    for n in report.nodes:
        counts[n.status] = counts.get(n.status, 0) + 1
    lines = verdict_lines(report.to_json())
    lines += ["", f"model   {report.model}", f"backend {b['name']} {b['version']}",
              "nodes   " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))]
    shown = [n for n in report.nodes if all_nodes or n.status != "supported"]
    if shown:
        w_name = min(max(len(n.name) for n in shown), 40)
        w_op = max(len(n.op) for n in shown)
        lines.append("")
        lines.append(f"{'node':<{w_name}}  {'op':<{w_op}}  {'status':<11}  reason / remedy")
        for n in shown:
            lines.append(f"{n.name[:40]:<{w_name}}  {n.op:<{w_op}}  {n.status:<11}  {n.reason}")
            if n.remedy:
                lines.append(f"{'':<{w_name}}  {'':<{w_op}}  {'':<11}  remedy: {n.remedy}")
            if n.source is not None:
                lines.append(f"{'':<{w_name}}  {'':<{w_op}}  {'':<11}  source: {n.source.line()}")
    lines.append("")
    lines.append(f"partitions {len(report.partitions)}")
    for p in report.partitions:
        lines.append(f"  #{p.id} {p.status:<11} {len(p.nodes):>4} node(s)  in: {', '.join(p.inputs[:4])}"
                     f"{' ...' if len(p.inputs) > 4 else ''}  out: {', '.join(p.outputs[:4])}{' ...' if len(p.outputs) > 4 else ''}")
    if report.qdq is not None:
        lines.append("")
        lines += [f"Q/DQ    {line}" for line in report.qdq["summary"]]
    bo = report.build
    if bo.reduced:
        kept = [n["name"] for n in bo.reduced.get("nodes", [])]
        lines.append(f"reduced the failing build to {len(kept)} node(s) in {bo.reduced['probes']} probe(s): {', '.join(kept)}"
                     if kept else f"could not reduce the failing build: {bo.reduced.get('error', '')}")
    recap = f"build {build_text(bo.to_json())}" + (f"; profile {describe_profile(bo.profile)}" if bo.profile else "")
    lines.append(f"result  {'SUPPORTED' if report.supported else 'NOT SUPPORTED'}  ({recap})")
    return "\n".join(lines)
