"""Optimize a model file: load, run a pass pipeline, save atomically, build the report."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import onnx
from onnx import external_data_helper as ext

from converter.precision_report import precision_report
from passes import presets
from surgery.errors import UserInputError
from surgery.io import load_model, save_graph, save_model, to_graph, to_model, weightless_model
from surgery.paths import check_outputs, model_files
from converter.runtime.numerics import PRECISION_TOLERANCES, InputSpec, load_spec, spec_from_model
from converter.runtime.quantize import MODES as QUANT_MODES, QuantizeOptions
from surgery.pass_base import Pass, PassContext, PassResult
from surgery.provenance import SourceMap, source_map
from surgery.pass_manager import PassHook, PassManager
from surgery.registry import list_passes, parse_pipeline, preset_pipeline
from converter.runtime.validate_each import NumericGuard

LOW_FLOAT_MODES = ("fp16", "bf16")  # convert-precision, a pass
PRECISIONS = LOW_FLOAT_MODES + QUANT_MODES  # --precision; the quantization modes run after the pipeline


@dataclass
class OptimizeOptions:
    preset: str = "default"
    passes: str | None = None
    disable: frozenset[str] = frozenset()
    input_shapes: dict[str, list[int]] | None = None
    emit: str = "onnx"
    explain: frozenset[str] = frozenset()
    validate_each: bool = False
    spec: Path | None = None
    dump_dir: Path | None = None
    external_data: bool | None = None
    in_place: bool = False
    precision: str | None = None  # "fp16"/"bf16": append convert-precision; "int8"/"fp8"/"int8-weight-only": quantize
    keep_io_types: bool = True
    quantize: QuantizeOptions | None = None  # calibration etc. for the quantization modes (default settings if None)
    extra: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None  # checked with the other outputs before any work; written by the caller
    html: Path | None = None  # likewise


def pipeline_spec(opts: OptimizeOptions) -> tuple[str, dict[str, str]]:
    """The pipeline to run and the passes the options added to it, each with the flag that implies it.

    A preset offers what ``--emit`` can do (fusions that cannot emit it are left out); a ``--passes``
    pipeline is taken as written and refused if a pass in it cannot honour ``--emit``.
    """
    spec = opts.passes if opts.passes else preset_pipeline(opts.preset, opts.emit)
    added: dict[str, str] = {}
    if opts.input_shapes and presets.SHAPES_PASS not in spec.split(","):
        spec, added[presets.SHAPES_PASS] = f"{presets.SHAPES_PASS},{spec}", "--input-shapes"
    if opts.precision in LOW_FLOAT_MODES and presets.PRECISION_PASS not in spec.split(","):
        spec, added[presets.PRECISION_PASS] = f"{spec},{presets.PRECISION_PASS}", "--precision"
    if opts.extra.get("plugin_map") is not None and presets.PLUGIN_MAP_PASS not in spec.split(","):
        spec, added[presets.PLUGIN_MAP_PASS] = f"{spec},{presets.PLUGIN_MAP_PASS}", "--plugin-map"
    return spec, added


def input_specs(model: onnx.ModelProto, model_path: Path, opts: OptimizeOptions) -> list[InputSpec]:
    """The spec for seeded inputs: --spec, else ``<model>.spec.json`` beside it, else from the model."""
    candidate = opts.spec or model_path.with_suffix(".spec.json")
    if opts.spec is not None or candidate.is_file():
        return load_spec(candidate)
    specs = spec_from_model(model)
    if opts.input_shapes:
        specs = [InputSpec(s.name, tuple(opts.input_shapes.get(s.name, s.shape)), s.dtype) for s in specs]
    return specs


def optimize_file(src: str | Path, dst: str | Path, opts: OptimizeOptions, hooks: Sequence[PassHook] = ()) -> dict[str, Any]:
    """Optimize ``src`` into ``dst``; returns the JSON-ready report. Nothing is written on failure.
    ``hooks`` see every pass (the CLI's progress line is one)."""
    # --validate-each runs the original on onnxruntime, which needs its weights in memory
    loaded = load_model(src, lazy_weights=not opts.validate_each)
    dst = Path(dst)
    inputs = model_files(loaded.path, loaded.model)
    if not opts.in_place and dst.resolve() in inputs:
        what = "the input model" if dst.resolve() == loaded.path else "an external-data file of the input"
        raise UserInputError(f"{dst}: output would overwrite {what} (use --in-place to allow it)")
    external = opts.external_data or loaded.has_external_data or None  # external data in, external data out
    data_file = dst.with_name(dst.name + ".data") if external else None
    quant = _quantize_options(opts)
    if quant is not None and quant.calibration_data is not None:
        inputs = inputs | {Path(quant.calibration_data).resolve()}
    check_outputs(inputs, {"-o": dst, "-o's external data": data_file, "--report": opts.report, "--html": opts.html},
                  {"--dump-dir": opts.dump_dir if opts.validate_each else None},
                  allow_overwrite=inputs if opts.in_place else ())
    spec, added = pipeline_spec(opts)
    steps = parse_pipeline(spec, opts.disable, emit=opts.emit)
    unknown = sorted(set(opts.explain) - {p.name for p in list_passes()})
    if unknown:
        raise UserInputError(f"--explain: unknown pass '{unknown[0]}' (see `surgery list-passes`)")
    if opts.validate_each or opts.spec is not None or quant is not None:
        specs = input_specs(loaded.model, loaded.path, opts)  # a bad --spec is a user error before any work
    options = {"emit": opts.emit, **opts.extra}
    if opts.preset == "trt":  # its output must build with plain TensorRT settings (see fuse-attention)
        options.setdefault("attention_kernels", "tensorrt")
    if opts.input_shapes:
        options["input_shapes"] = opts.input_shapes
    if opts.precision in LOW_FLOAT_MODES:
        options.update(precision=opts.precision, keep_io_types=opts.keep_io_types)
    ctx = PassContext(options=options, explain=opts.explain)
    hooks = list(hooks)
    kept = _KeptInFp32()
    hooks.append(kept)
    guard = None
    if opts.validate_each:
        dump = opts.dump_dir or dst.parent / f"{dst.stem}.validate-each"
        guard = NumericGuard(loaded.model, specs, dump, source_dir=loaded.base_dir)
        hooks.append(guard)
    nodes_before = len(loaded.model.graph.node)
    graph = to_graph(loaded)
    report = PassManager(steps, hooks=hooks).run(graph, ctx)
    for index, note in (guard.notes if guard else {}).items():  # how a low-precision pass was validated
        report.passes[index].notes.append(note)
    pipeline = report.to_json()
    extra: dict[str, Any] = {}
    protect = None if opts.in_place else loaded.path
    if quant is not None:  # quantization calibrates the whole model on onnxruntime: it needs the weights in memory
        model, extra = _quantize(to_model(graph, like=loaded.model), loaded, quant, specs, guard)
        pipeline["passes"].append(extra.pop("record"))
        pipeline["total_changed"] += pipeline["passes"][-1]["changed"]
        save_model(model, dst, source_dir=loaded.base_dir, external=external, protect=protect)
        nodes_after = len(model.graph.node)
    else:
        if opts.precision:
            extra["precision"] = precision_report(to_model(graph, like=loaded.model), opts.precision, kept_fp32=kept.sites)
        save_graph(graph, dst, like=loaded.model, source_dir=loaded.base_dir, external=external,
                   protect=protect, keep_external=loaded.external_names)
        nodes_after = len(graph.nodes)
    # sites and notes name the input's nodes and the ones the passes made (those carry their sources' metadata)
    made = source_map(weightless_model(graph, like=loaded.model)).sources
    add_sources(pipeline["passes"], SourceMap({**made, **source_map(loaded.model).sources}))
    return {
        "input": str(loaded.path),
        "output": str(dst.resolve()),
        "pipeline": spec,
        "added_by_options": added,
        "emit": opts.emit,
        "load_notes": loaded.notes,
        "nodes_before": nodes_before,
        "nodes_after": nodes_after,
        **pipeline,
        **extra,
    }


def _quantize_options(opts: OptimizeOptions) -> QuantizeOptions | None:
    """The quantization settings when --precision is a quantization mode, else None (refusing stray settings)."""
    if opts.precision not in QUANT_MODES:
        if opts.quantize is not None:
            raise UserInputError("--calibration-data and the other quantization options need --precision int8, fp8 "
                                 "or int8-weight-only")
        return None
    if opts.quantize is None:
        return QuantizeOptions(mode=opts.precision)
    return replace(opts.quantize, mode=opts.precision)


class _KeptInFp32(PassHook):
    """Collects convert-precision's site for every node it kept in fp32 (node -> reason), for the precision report."""

    def __init__(self) -> None:
        self.sites: dict[str, str] = {}

    def after(self, step: Pass, graph: Any, ctx: PassContext, result: PassResult) -> None:
        if step.name == presets.PRECISION_PASS:
            self.sites.update({s["site"]: s["reason"] for s in result.sites if s.get("outcome") == "kept-fp32"})


def _inlined(model: onnx.ModelProto, base_dir: Path) -> onnx.ModelProto:
    """``model`` with external weights read in (onnxruntime is handed bytes, not a path)."""
    if not any(ext.uses_external_data(t) for t in model.graph.initializer):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    ext.load_external_data_for_model(out, str(base_dir))
    return out


def _quantize(model: onnx.ModelProto, loaded: Any, quant: QuantizeOptions, specs: list[InputSpec],
              guard: NumericGuard | None) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The quantization step after the pipeline: calibrate, insert Q/DQ, validate against the original."""
    from converter.runtime.quantize import calibration_feeds, quantize_model, validation_feeds

    model = _inlined(model, loaded.base_dir)
    calibration = calibration_feeds(model, specs, quant)
    result = quantize_model(model, calibration, quant, reference=_inlined(loaded.model, loaded.base_dir),
                            validation=validation_feeds(specs, calibration, quant.seed))
    if guard is not None:  # --validate-each: the step is held to its own (whole-output) tolerance
        result.record["notes"].append(guard.check_step(result.record["name"], result.model,
                                                       PRECISION_TOLERANCES[quant.mode]))
    return result.model, {
        "record": result.record,
        "quantization": {"mode": quant.mode, "calibration": calibration.source, "random_calibration": not calibration.from_file,
                         "nodes": {n: d.to_json() for n, d in result.decisions.items()}, "validation": result.validation},
        "precision": precision_report(result.model, quant.mode, decisions=result.decisions),
    }


def add_sources(records: list[dict[str, Any]], sources: SourceMap) -> None:
    """Give explained sites a ``source`` and passes whose notes name nodes ``note_sources`` (name -> source)."""
    if not len(sources):
        return
    for record in records:
        for site in record.get("sites", []):
            found = sources.json(site["site"])
            if found:
                site["source"] = found
        named = sorted({name for note in record["notes"] for name in sources.mentioned(note)})
        if named:
            record["note_sources"] = {name: sources.json(name) for name in named}
