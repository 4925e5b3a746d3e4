"""``--validate-each``: after every pass that changed the graph, compare outputs with the original.

The first pass whose outputs drift beyond tolerance is named, and the models before and after it
are written to the dump folder. A model onnxruntime cannot run at its precision (bf16: no CPU kernels)
is compared through its float32 upcast, and an fp16/bf16 model gets a tolerance suited to its
precision; ``notes`` says so for the pass concerned (index of the pass run -> note). A step after the
pipeline (quantization) is checked with ``check_step`` at its own tolerance (whole-output metrics for Q/DQ).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs

from surgery.errors import NumericMismatchError
from surgery.io import save_model, to_model
from converter.runtime.numerics import (InputSpec, Tolerance, cast_feeds, compare, is_classifier_output, low_precision,
                                       ort_runnable, precision_tolerance, random_feeds, run_ort)
from surgery.pass_base import Pass, PassContext, PassResult
from surgery.pass_manager import PassHook

log = logging.getLogger(__name__)


class NumericGuard(PassHook):
    def __init__(self, original: onnx.ModelProto, specs: list[InputSpec], dump_dir: Path,
                 *, rtol: float = 1e-4, atol: float = 1e-5, source_dir: Path | None = None) -> None:
        self.feeds = random_feeds(specs, seed=0)
        self.reference = run_ort(original, self.feeds)
        self.last_good = original
        self.like = original
        self.dump_dir = dump_dir
        self.rtol, self.atol = rtol, atol
        self.source_dir = source_dir
        self.checked = 0
        self.runs = 0  # after() calls so far: the index of the pass's record in the pipeline report
        self.notes: dict[int, str] = {}

    def after(self, step: Pass, graph: gs.Graph, ctx: PassContext, result: PassResult) -> None:
        self.runs += 1
        if not result.changed:
            return
        if step.tolerance:  # a deliberately inexact pass loosens the bar for itself and what follows
            self.rtol, self.atol = max(self.rtol, step.tolerance[0]), max(self.atol, step.tolerance[1])
        model = to_model(graph, like=self.like)
        precision = low_precision(model)
        note, upcast = self._check(f"pass '{step.name}'", step.name, model, self._tolerance(precision))
        if precision or upcast:
            self.notes[self.runs - 1] = note

    def check_step(self, name: str, model: onnx.ModelProto, tolerance: Tolerance) -> str:
        """Validate a step that runs after the pipeline (quantization) at its own ``tolerance``; returns the note."""
        return self._check(f"step '{name}'", name, model, tolerance)[0]

    def _check(self, what: str, name: str, model: onnx.ModelProto, tol: Tolerance) -> tuple[str, str]:
        """Raise ``NumericMismatchError`` (saving the models around ``name``) beyond ``tol``; else (note, upcast)."""
        runnable, upcast = ort_runnable(model)
        got = run_ort(runnable, cast_feeds(runnable, self.feeds), outputs=list(self.reference))
        self.checked += 1
        bad = [d for out, ref in self.reference.items()
               if not (d := compare(ref, got[out], out, rtol=tol.rtol, atol=tol.atol_for(ref), metrics=tol.metrics,
                                    top1=is_classifier_output(ref.shape))).passed]
        said = f"tolerance {tol.describe()}" + (f"; the model was {upcast}" if upcast else "")
        if bad:
            self.dump_dir.mkdir(parents=True, exist_ok=True)
            before = save_model(self.last_good, self.dump_dir / f"before-{name}.onnx", source_dir=self.source_dir)
            after = save_model(model, self.dump_dir / f"after-{name}.onnx", source_dir=self.source_dir)
            raise NumericMismatchError(
                f"{what} changed the outputs ({bad[0].describe()}; {said}); saved {before} and {after}")
        self.last_good = model
        return f"validated against the original on onnxruntime: {said}", upcast

    def _tolerance(self, precision: str | None) -> Tolerance:
        """The precision's tolerance, never tighter than the one the passes so far allow."""
        tol = precision_tolerance(precision, Tolerance(self.rtol, self.atol))
        return replace(tol, rtol=max(tol.rtol, self.rtol), atol=max(tol.atol, self.atol))
