"""``surgery run``: optimize -> check -> convert -> validate, with one JSON and one HTML report.

Writes DIR/model.opt.onnx, DIR/model.engine (where a TensorRT library is present and the model is
supported), DIR/report.json (keys optimize, check, engine, validation) and DIR/report.html.
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import onnx

from converter.trt.backends import select_backend
from converter.trt.capability import CapabilityReport, check_model
from converter.optimize import OptimizeOptions, optimize_file
from converter.trt.profiles import profiles_for
from converter.report_html import run_html
from converter.runtime.specs import resolve_spec
from converter.trt.build import BuildOptions, build_engine
from converter.runtime.validate import make_feeds, validate_engine, validate_onnx
from surgery.errors import ConversionError
from surgery.io import load_model
from surgery.paths import check_outputs, model_files
from surgery.pass_manager import PassHook
from surgery.registry import list_presets

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    backend: str = "auto"
    preset: str | None = None
    emit: str = "onnx"
    precision: str | None = None  # "fp16" / "bf16": the optimized model is converted (convert-precision)
    spec: Path | None = None
    build: BuildOptions = field(default_factory=BuildOptions)
    shapes: argparse.Namespace | None = None  # --input-shapes / --min/--opt/--max-shapes
    atol: float | None = None  # None: the optimized model's precision decides (fp32 1e-4, fp16/bf16 looser)
    rtol: float | None = None
    seed: int = 0


@dataclass
class RunResult:
    report: dict[str, Any]
    capability: CapabilityReport | None
    ok: bool


def _full(loaded: Any) -> onnx.ModelProto:
    return onnx.load(str(loaded.path)) if loaded.has_external_data else loaded.model


def run_pipeline(model_path: str | Path, out_dir: str | Path, opts: RunOptions, hooks: Sequence[PassHook] = ()) -> RunResult:
    """Run the four stages; every stage's outcome (or why it did not run) lands in the report."""
    return run_after_optimize(model_path, out_dir, opts, run_optimize(model_path, out_dir, opts, hooks))


def run_optimize(model_path: str | Path, out_dir: str | Path, opts: RunOptions, hooks: Sequence[PassHook] = ()) -> dict[str, Any]:
    """The first stage (CPU only): DIR/model.opt.onnx; returns the optimize report ``run_after_optimize`` takes."""
    out = Path(out_dir)
    written = ("model.opt.onnx", "model.opt.onnx.data", "model.engine", "model.engine.build.log",
               "model.engine.layers.json", "report.json", "report.html")
    check_outputs(model_files(Path(model_path)), {f"-o/{name}": out / name for name in written if out.is_dir()},
                  {"-o": out})
    out.mkdir(exist_ok=True)
    preset = opts.preset or ("trt" if "trt" in list_presets() else "default")
    opt_path = out / "model.opt.onnx"
    optimize = optimize_file(model_path, opt_path, OptimizeOptions(preset=preset, spec=opts.spec, emit=opts.emit,
                                                                          precision=opts.precision), hooks=hooks)
    optimize["preset"] = preset
    return optimize


def run_after_optimize(model_path: str | Path, out_dir: str | Path, opts: RunOptions, optimize: dict[str, Any]) -> RunResult:
    """check -> convert -> validate of DIR/model.opt.onnx (the stages a GPU serves), and the reports."""
    out = Path(out_dir)
    opt_path = out / "model.opt.onnx"
    backend = select_backend(opts.backend)
    spec_path = opts.spec or _sibling_spec(model_path)
    capability = check_model(opt_path, backend, spec_path=spec_path, shapes=opts.shapes, spec_for=model_path)
    if _only_attention_build_failures(capability) and not opts.build.decomposable_attention:
        # fp32 (or small-head) attention has no dedicated kernel; TensorRT can decompose it instead
        capability = check_model(opt_path, backend, spec_path=spec_path, decomposable_attention=True,
                                 shapes=opts.shapes, spec_for=model_path)
        if capability.supported:
            opts.build.decomposable_attention = True
            optimize.setdefault("notes", []).append(
                "attention has no dedicated TensorRT kernel for this dtype/head size: built with decomposable attention")
    engine = _convert(opt_path, out / "model.engine", backend, capability, opts, spec_path)

    original = load_model(model_path)
    specs = resolve_spec(original.model, model_path, opts.spec)
    feeds = make_feeds(specs, None, opts.seed)
    ref = _full(original)
    names = (str(model_path), str(opt_path))
    validation = {"optimized_vs_original": validate_onnx(ref, _full(load_model(opt_path)), feeds, atol=opts.atol,
                                                         rtol=opts.rtol, names=names).to_json()}
    if engine.get("built"):
        validation["engine_vs_original"] = validate_engine(ref, Path(engine["path"]), backend, feeds, atol=opts.atol,
                                                           rtol=opts.rtol, names=(str(model_path), engine["path"]),
                                                           built_from=load_model(opt_path).model).to_json()
    else:
        validation["engine_vs_original"] = {"status": "skipped", "skipped": f"no engine: {engine.get('reason', '')}",
                                            "outputs": []}
    ok = (validation["optimized_vs_original"]["status"] == "passed" and capability.supported
          and validation["engine_vs_original"]["status"] != "failed" and engine.get("error") is None)
    latency = _latency(engine, backend, feeds)
    report = _assemble_report(model_path, backend.describe(), optimize, capability.to_json(), engine, validation, ok,
                              latency)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.html").write_text(run_html(report, capability))
    return RunResult(report, capability, ok)


def _assemble_report(model_path: str | Path, backend: dict[str, str], optimize: dict[str, Any], check: dict[str, Any],
                     engine: dict[str, Any], validation: dict[str, Any], ok: bool, latency: dict[str, Any]) -> dict[str, Any]:
    """report.json, verdict first: ok, supported, the check's build (with its profile), the engine, problem nodes
    by kind, the validations and the latency; then the details (model, backend, optimize, the full check)."""
    return {"ok": ok, "supported": check["supported"], "build": check["build"], "engine": engine,
            "unsupported": check["unsupported"], "validation": validation, "latency": latency,
            "model": str(model_path), "backend": backend, "optimize": optimize, "check": check}


def _only_attention_build_failures(capability: CapabilityReport) -> bool:
    failed = [n for n in capability.nodes if n.status != "supported"]
    return bool(failed) and all(n.kind == "build-failure" and n.op == "Attention" for n in failed)


def _latency(engine: dict[str, Any], backend: Any, feeds: dict[str, Any]) -> dict[str, Any]:
    """A short ``surgery bench`` of the engine (1 s after 200 ms of warm-up), or why there is none."""
    from converter.runtime.validate import EngineSkipped
    from converter.trt.bench import BenchOptions, bench_engine

    if not engine.get("built"):
        return {"status": "skipped", "skipped": f"no engine: {engine.get('reason', '')}"}
    try:
        result = bench_engine(backend, Path(engine["path"]).read_bytes(), feeds, BenchOptions(duration_s=1.0))
    except EngineSkipped as exc:
        return {"status": "skipped", "skipped": str(exc)}
    return result.to_json()


def _sibling_spec(model_path: str | Path) -> Path | None:
    cand = Path(model_path).with_suffix(".spec.json")
    return cand if cand.is_file() else None


def _convert(opt_path: Path, engine_path: Path, backend: Any, capability: CapabilityReport, opts: RunOptions,
             spec_path: Path | None) -> dict[str, Any]:
    if not backend.is_library:
        return {"built": False, "reason": "no TensorRT library installed (static backend)"}
    if not capability.supported:
        return {"built": False, "reason": "the check found unsupported nodes or a failed build"}
    loaded = load_model(opt_path)
    # the original's spec, not one next to the optimized model (there is none): the check built for the same profile
    args = argparse.Namespace(**vars(opts.shapes or argparse.Namespace()))
    args.spec = spec_path
    choice = profiles_for(loaded.model, opt_path, args)
    try:
        result = build_engine(loaded, engine_path, backend, opts.build, choice)
    except ConversionError as exc:
        return {"built": False, "reason": "build failed", "error": str(exc)}
    return {"built": True, **result.to_json()}
