"""Optimize a model file: load, run a pass pipeline, save atomically, build the report."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import onnx

from passes import presets
from surgery.errors import UserInputError
from surgery.io import load_model, save_model, to_graph, to_model
from surgery.paths import check_outputs, model_files
from surgery.provenance import SourceMap, source_map
from converter.runtime.numerics import InputSpec, load_spec, spec_from_model
from surgery.pass_base import PassContext
from surgery.pass_manager import PassHook, PassManager
from surgery.registry import list_passes, parse_pipeline, preset_pipeline
from converter.runtime.validate_each import NumericGuard


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
    precision: str | None = None  # "fp16" or "bf16": append convert-precision
    keep_io_types: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None  # checked with the other outputs before any work; written by the caller


def pipeline_spec(opts: OptimizeOptions) -> tuple[str, dict[str, str]]:
    """The pipeline to run and the passes the options added to it, each with the flag that implies it.

    A preset offers what ``--emit`` can do (fusions that cannot emit it are left out); a ``--passes``
    pipeline is taken as written and refused if a pass in it cannot honour ``--emit``.
    """
    spec = opts.passes if opts.passes else preset_pipeline(opts.preset, opts.emit)
    added: dict[str, str] = {}
    if opts.input_shapes and presets.SHAPES_PASS not in spec.split(","):
        spec, added[presets.SHAPES_PASS] = f"{presets.SHAPES_PASS},{spec}", "--input-shapes"
    if opts.precision and presets.PRECISION_PASS not in spec.split(","):
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
    loaded = load_model(src)
    dst = Path(dst)
    inputs = model_files(loaded.path, loaded.model)
    if not opts.in_place and dst.resolve() in inputs:
        what = "the input model" if dst.resolve() == loaded.path else "an external-data file of the input"
        raise UserInputError(f"{dst}: output would overwrite {what} (use --in-place to allow it)")
    data_file = dst.with_name(dst.name + ".data") if opts.external_data or loaded.has_external_data else None
    check_outputs(inputs, {"-o": dst, "-o's external data": data_file, "--report": opts.report},
                  {"--dump-dir": opts.dump_dir if opts.validate_each else None},
                  allow_overwrite=inputs if opts.in_place else ())
    spec, added = pipeline_spec(opts)
    steps = parse_pipeline(spec, opts.disable, emit=opts.emit)
    unknown = sorted(set(opts.explain) - {p.name for p in list_passes()})
    if unknown:
        raise UserInputError(f"--explain: unknown pass '{unknown[0]}' (see `surgery list-passes`)")
    if opts.validate_each or opts.spec is not None:
        specs = input_specs(loaded.model, loaded.path, opts)  # a bad --spec is a user error before any work
    options = {"emit": opts.emit, **opts.extra}
    if opts.preset == "trt":  # its output must build with plain TensorRT settings (see fuse-attention)
        options.setdefault("attention_kernels", "tensorrt")
    if opts.input_shapes:
        options["input_shapes"] = opts.input_shapes
    if opts.precision:
        options.update(precision=opts.precision, keep_io_types=opts.keep_io_types)
    ctx = PassContext(options=options, explain=opts.explain)
    hooks = list(hooks)
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
    model = to_model(graph, like=loaded.model)
    save_model(model, dst, source_dir=loaded.base_dir, external=opts.external_data,
               protect=None if opts.in_place else loaded.path)
    passes = report.to_json()
    add_sources(passes["passes"], SourceMap({**source_map(model).sources, **source_map(loaded.model).sources}))
    return {
        "input": str(loaded.path),
        "output": str(dst.resolve()),
        "pipeline": spec,
        "added_by_options": added,
        "emit": opts.emit,
        "load_notes": loaded.notes,
        "nodes_before": nodes_before,
        "nodes_after": len(model.graph.node),
        **passes,
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
