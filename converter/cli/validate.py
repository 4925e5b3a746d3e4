"""``surgery validate REFERENCE CANDIDATE``: compare outputs (ONNX on onnxruntime, engines with TrtRunner).

Exit 0 all outputs within tolerance, 1 a mismatch, 2 user error, 3 skipped (the engine cannot run
here; the reason is printed — this is never reported as a pass).
Without --atol/--rtol the tolerance follows the candidate's precision (fp32, fp16, bf16); a candidate
onnxruntime cannot run at its precision (bf16) is compared through its float32 upcast. A Q/DQ candidate
(int8, fp8, int8 weight-only) is judged by cosine, relative L2 and top-1 agreement of each output.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import onnx

from converter.cli.args import add_backend_argument, add_input_arguments, add_json_argument, parse_size
from converter.runtime.specs import resolve_spec
from converter.runtime.validate import ValidationReport, make_feeds, render_histogram, validate_engine, validate_onnx
from converter.trt.backends import select_backend
from surgery.errors import UserInputError
from surgery.io import LoadedModel, load_model
from surgery.paths import check_outputs, model_files

EXIT_SKIPPED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reference", help="reference ONNX model")
    parser.add_argument("candidate", help="candidate: an .onnx model or a TensorRT engine file")
    add_backend_argument(parser)
    add_input_arguments(parser, "input spec JSON (default: REFERENCE's .spec.json or derived)")
    parser.add_argument("--atol", type=float, help="absolute tolerance (default: 1e-4 for fp32 candidates; fp16/bf16: "
                                                   "1e-3/1e-2 of each output's largest magnitude)")
    parser.add_argument("--rtol", type=float, help="relative tolerance (default: 1e-3 for fp32 and fp16, 1e-2 for bf16)")
    parser.add_argument("--mark-all", action="store_true",
                        help="also compare every intermediate tensor both models share and name the first divergent node")
    parser.add_argument("--weight-streaming-budget", metavar="SIZE|auto",
                        type=lambda v: -1 if v == "auto" else parse_size(v),
                        help="GPU memory for the weights of an engine built with convert --weight-streaming (e.g. 2G; "
                             "auto: TensorRT chooses); the rest streams from host memory")
    add_json_argument(parser, "the comparison")


def is_onnx(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".onnx"


def run(args: argparse.Namespace) -> int:
    ref = load_model(args.reference)
    if not Path(args.candidate).is_file():
        raise UserInputError(f"{args.candidate}: no such file")
    cand_proto = _parsed_onnx(Path(args.candidate))
    inputs = model_files(ref.path, ref.model) | model_files(Path(args.candidate), cand_proto) | {
        Path(p).resolve() for p in (args.inputs, args.spec) if p}
    check_outputs(inputs, {"--json": args.json_out})
    specs = resolve_spec(ref.model, args.reference, args.spec)
    feeds = make_feeds(specs, args.inputs, args.seed)
    names = (str(args.reference), str(args.candidate))
    if is_onnx(args.candidate) or cand_proto is not None:
        if args.weight_streaming_budget is not None:
            raise UserInputError("--weight-streaming-budget applies to engine candidates, not ONNX models")
        cand = load_model(args.candidate)
        _check_same_interface(ref.model, cand.model, args.candidate)
        report = validate_onnx(_inlined(ref), _inlined(cand), feeds, atol=args.atol, rtol=args.rtol,
                               mark_all=args.mark_all, names=names)
    else:
        _check_engine_file(Path(args.candidate))
        if args.mark_all:
            raise UserInputError("--mark-all needs an ONNX candidate (engine outputs are fixed at build time)")
        report = validate_engine(_inlined(ref), Path(args.candidate), select_backend(args.backend), feeds,
                                 atol=args.atol, rtol=args.rtol, names=names,
                                 weight_streaming_budget=args.weight_streaming_budget)
    print(render(report))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report.to_json(), indent=1))
    if report.skipped:
        return EXIT_SKIPPED
    return 0 if report.passed else 1


def _parsed_onnx(path: Path) -> onnx.ModelProto | None:
    """The candidate as an ONNX model whatever its suffix, or None (an engine, or not a model)."""
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:
        return None
    return model if model.HasField("graph") and len(model.graph.node) > 0 else None


def _check_engine_file(path: Path) -> None:
    """A TensorRT engine is binary: a text file (JSON, a spec, a log) named as the candidate is a mistake."""
    head = path.read_bytes()[:4096]
    if not head:
        raise UserInputError(f"{path}: file is empty, expected an ONNX model or a TensorRT engine")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        raise UserInputError(f"{path}: a text file, not an ONNX model or a TensorRT engine")


def _graph_inputs(model: onnx.ModelProto) -> set[str]:
    inits = {t.name for t in model.graph.initializer}
    return {i.name for i in model.graph.input if i.name not in inits}


def _check_same_interface(reference: onnx.ModelProto, candidate: onnx.ModelProto, name: str) -> None:
    extra = sorted(_graph_inputs(candidate) - _graph_inputs(reference))
    if extra:
        raise UserInputError(f"{name}: input(s) {', '.join(extra[:4])} are not inputs of the reference; "
                             "validate compares two versions of one model")
    missing = sorted({o.name for o in reference.graph.output} - {o.name for o in candidate.graph.output})
    if missing:
        raise UserInputError(f"{name}: lacks the reference's output(s) {', '.join(missing[:4])}")


def _inlined(loaded: LoadedModel) -> onnx.ModelProto:
    """The model with its external weights read in (onnxruntime gets serialized bytes, not a path)."""
    return onnx.load(str(loaded.path)) if loaded.has_external_data else loaded.model


def render(report: ValidationReport) -> str:
    lines = [f"reference {report.reference}", f"candidate {report.candidate}", f"tolerance {report.tolerance}"]
    if report.upcast:
        lines.append(f"note      candidate {report.upcast}")
    if report.skipped:
        lines.append(f"skipped: {report.skipped}")
        return "\n".join(lines)
    for o in report.outputs:
        d = o.diff
        lines.append(f"{'PASS' if d.passed else 'FAIL'}  {d.name}  max|d|={d.max_abs:.3g}  mean|d|={d.mean_abs:.3g}  "
                     f"max rel={d.max_rel:.3g}  cosine={d.cosine:.6f}  rel L2={d.rel_l2:.3g}"
                     + (f"  top-1={d.top1:.3f}" if d.top1 is not None else ""))
        if o.histogram:
            lines.append(render_histogram(o.histogram))
    if report.intermediates_compared:
        lines.append(f"intermediates compared: {report.intermediates_compared}")
    if report.first_divergence:
        fd = report.first_divergence
        lines.append(f"first divergence: node '{fd['node']}' ({fd['op']}), tensor {fd['detail']}")
        if fd.get("source"):
            lines.append(f"                  source: {fd['source']['line']}")
    lines.append(f"result {report.status.upper()}")
    return "\n".join(lines)
