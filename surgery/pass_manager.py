"""Runs an ordered pipeline of passes and fixed-point groups, verifying after every change."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence, Union

import onnx_graphsurgeon as gs

from surgery.errors import NonConvergenceError, PassError, SurgeryError, VerificationError
from surgery.pass_base import PassContext, PassResult
from surgery.verify import verify_graph

if TYPE_CHECKING:
    from surgery.pass_base import Pass

log = logging.getLogger(__name__)


class FixedPoint:
    """A group of passes re-run until one whole sweep changes nothing."""

    def __init__(self, passes: Sequence["Pass"], max_iters: int = 8) -> None:
        self.passes = list(passes)
        self.max_iters = max_iters

    @property
    def name(self) -> str:
        return "fixpoint(" + ",".join(p.name for p in self.passes) + ")"


Step = Union["Pass", FixedPoint]


@dataclass
class PassRecord:
    name: str
    changed: int
    stats: dict[str, int]
    notes: list[str]
    seconds: float
    verified: bool
    sweep: int = 0
    sites: list[dict[str, str]] = field(default_factory=list)


@dataclass
class PipelineReport:
    passes: list[PassRecord] = field(default_factory=list)

    @property
    def total_changed(self) -> int:
        return sum(r.changed for r in self.passes)

    def changes_by_pass(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.passes:
            out[r.name] = out.get(r.name, 0) + r.changed
        return out

    def to_json(self, *, with_timing: bool = True) -> dict[str, Any]:
        records = []
        for r in self.passes:
            d = asdict(r)
            if not with_timing:
                d.pop("seconds")
            if not r.sites:
                d.pop("sites")
            records.append(d)
        return {"total_changed": self.total_changed, "passes": records}


class PassHook:
    """Instrument a pipeline (TVM-style): decide whether a pass runs and observe it."""

    def should_run(self, step: "Pass", graph: gs.Graph, ctx: PassContext) -> bool:
        return True

    def before(self, step: "Pass", graph: gs.Graph, ctx: PassContext) -> None:
        pass

    def after(self, step: "Pass", graph: gs.Graph, ctx: PassContext, result: PassResult) -> None:
        pass


class PassManager:
    """Apply ``steps`` in order.

    Args:
        steps: passes and ``FixedPoint`` groups.
        verify_each: run the ONNX checker and shape inference after every pass that changed something
            (except passes that only annotate, ``changes_graph = False``: infer-shapes).
        hooks: instruments called around every pass.
    """

    def __init__(self, steps: Sequence[Step], *, verify_each: bool = True, hooks: Sequence[PassHook] = ()) -> None:
        self.steps = list(steps)
        self.verify_each = verify_each
        self.hooks = list(hooks)

    def run(self, graph: gs.Graph, ctx: PassContext | None = None) -> PipelineReport:
        ctx = ctx or PassContext()
        report = PipelineReport()
        for step in self.steps:
            if isinstance(step, FixedPoint):
                self._run_fixed_point(step, graph, ctx, report)
            else:
                self._run_one(step, graph, ctx, report)
        return report

    def _run_fixed_point(self, group: FixedPoint, graph: gs.Graph, ctx: PassContext, report: PipelineReport) -> None:
        for sweep in range(1, group.max_iters + 1):
            changed = sum(self._run_one(p, graph, ctx, report, sweep) for p in group.passes)
            if changed == 0:
                return
        raise NonConvergenceError(f"{group.name} still changed the graph after {group.max_iters} sweeps")

    def _run_one(self, step: "Pass", graph: gs.Graph, ctx: PassContext, report: PipelineReport, sweep: int = 0) -> int:
        if not all(h.should_run(step, graph, ctx) for h in self.hooks):
            return 0
        already = [r.name for r in report.passes]
        for h in self.hooks:
            h.before(step, graph, ctx)
        start = time.perf_counter()
        try:
            result = step(graph, ctx)
        except SurgeryError:
            raise
        except Exception as exc:  # a bug in a pass: say which one, keep the cause chained
            raise PassError(step.name, already, exc) from exc
        seconds = time.perf_counter() - start
        verified = False
        if result.changed and step.changes_graph:
            if self.verify_each:
                try:
                    verify_graph(graph)
                except VerificationError as exc:
                    raise VerificationError(f"after pass '{step.name}': {exc}") from exc
                verified = True
        log.info("%s: changed %d in %.3fs %s", step.name, result.changed, seconds, dict(result.stats))
        want_sites = step.name in ctx.explain
        report.passes.append(
            PassRecord(step.name, result.changed, dict(sorted(result.stats.items())), list(result.notes),
                       round(seconds, 4), verified, sweep, list(result.sites) if want_sites else [])
        )
        for h in self.hooks:
            h.after(step, graph, ctx, result)
        return result.changed
