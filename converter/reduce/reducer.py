"""Reduce a failing model to a minimal failing subgraph (``surgery reduce``; ``check`` on an unattributed build failure).

The model's input shapes are fixed first (the build's opt point, or the validation inputs), so every
boundary tensor of a cut has concrete inferred dims and becomes a plain typed input. The whole fixed
model must fail; the search then keeps to node sets whose cut fails the same way (the failure's first
signature key, or ``fail_regex``), trying the nodes the failure names first, else bisecting, then
delta-debugging until no single node can be removed.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Sequence

import numpy as np
import onnx

from converter.reduce.probes import BuildProbe, Failure, Normalizer, ParseProbe, Probe
from converter.reduce.search import Search, minimize
from converter.reduce.subgraph import Subgraphs
from converter.runtime.numerics import InputSpec, Tolerance, random_feeds, run_ort
from converter.runtime.validate import compare_outputs, expose
from surgery.errors import SurgeryError, UserInputError
from surgery.provenance import source_map

BASIS = ("the reduced model was probed again and fails with the same signature (the failure's message with node "
         "and tensor names and all numbers taken out{regex}); removing any one of its nodes (constants follow their "
         "consumers) was probed and makes that failure disappear")


class NothingToReduce(SurgeryError):
    """The whole model does not fail the way the reducer was asked to look for."""


@dataclass
class ReduceResult:
    mode: str
    model: onnx.ModelProto  # the reduced model
    failure: Failure  # the whole model's
    reproduced: Failure  # the reduced model's
    nodes_before: int
    probes: int
    shapes: dict[str, list[int]]
    fail_regex: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def nodes(self) -> list[str]:
        return [n.name for n in self.model.graph.node]

    def to_json(self) -> dict[str, Any]:
        sources = source_map(self.model)
        return {
            "mode": self.mode, "nodes_before": self.nodes_before, "nodes_after": len(self.model.graph.node),
            "probes": self.probes, "shapes": self.shapes,
            "failure": {"kind": self.failure.kind, "message": self.failure.message, "signature": self.failure.key},
            "reproduced": {"kind": self.reproduced.kind, "message": self.reproduced.message},
            "nodes": [{"name": n.name, "op": n.op_type, **({"source": sources.json(n.name)} if sources.get(n.name) else {})}
                      for n in self.model.graph.node],
            "notes": self.notes,
            "basis": BASIS.format(regex=f", or a match of --fail-regex {self.fail_regex!r}" if self.fail_regex else ""),
        }


def fix_input_shapes(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> onnx.ModelProto:
    """A copy of ``model`` whose inputs have ``shapes``; symbolic dims elsewhere are cleared for inference to fill."""
    out = copy.deepcopy(model)
    for vi in out.graph.input:
        if vi.name in shapes and vi.type.HasField("tensor_type"):
            dims = vi.type.tensor_type.shape.dim
            if len(dims) != len(shapes[vi.name]):
                raise UserInputError(f"input '{vi.name}' has rank {len(dims)}, shape {shapes[vi.name]} given")
            for d, value in zip(dims, shapes[vi.name]):
                d.Clear()
                d.dim_value = int(value)
    for vi in [*out.graph.value_info, *out.graph.output]:
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                d.Clear()
    return out


def reduce_model(model: onnx.ModelProto, probe: Probe, shapes: dict[str, list[int]], *,
                 values: dict[str, np.ndarray] | None = None, fail_regex: str | None = None, seeds: Sequence[str] = (),
                 on_probe: Callable[[int, int, bool], None] | None = None) -> ReduceResult:
    """The smallest failing cut of ``model`` (input shapes fixed at ``shapes``) that ``probe`` finds.

    ``values`` (``observed_values``: tensors of one run at ``shapes``) type the cuts' boundaries.
    Raises ``NothingToReduce`` when the whole model does not fail (or not as ``fail_regex`` says).
    ``seeds`` are node names to try first besides those the failure names; ``on_probe(count, nodes,
    failed)`` reports progress.
    """
    fixed = fix_input_shapes(model, shapes)
    cuts = Subgraphs(fixed, values)
    target = probe(fixed)
    shown = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in shapes.items()) or "static shapes"
    if target is None:
        raise NothingToReduce(f"the model does not fail in mode '{probe.mode}' at {shown}: nothing to reduce")
    pattern = re.compile(fail_regex) if fail_regex else None
    if pattern is not None and not pattern.search(target.message):
        raise NothingToReduce(f"the model fails ({target.kind}), but its message does not match --fail-regex "
                              f"{fail_regex!r}: {target.message[:300]}")

    def same(found: Failure | None) -> bool:
        if found is None:
            return False
        return bool(pattern.search(found.message)) if pattern is not None else target.key in found.keys

    def fails(nodes: tuple[int, ...]) -> bool:
        return same(probe(cuts.cut(nodes)))

    search = Search(fails, (lambda count, nodes, failed: on_probe(count, len(nodes), failed)) if on_probe else None)
    index = {n.name: i for i, n in enumerate(fixed.graph.node)}
    named = [index[n] for n in dict.fromkeys([*seeds, *target.nodes]) if n in index and index[n] in cuts.searchable]
    candidates = [(i,) for i in sorted(named)] + ([tuple(sorted(named))] if len(named) > 1 else [])
    kept = minimize(search, cuts.searchable, candidates)
    reduced = cuts.cut(kept)
    again = probe(reduced)
    if again is None or not same(again):  # never claim a result the probe does not confirm
        raise SurgeryError("the reduced model does not fail the same way when probed on its own (the failure is "
                           f"not deterministic, or only the whole model shows it): {target.message[:200]}")
    return ReduceResult(probe.mode, reduced, target, again, len(model.graph.node), search.probes, dict(shapes),
                        fail_regex)


def reduce_trt_failure(trt: ModuleType, model: onnx.ModelProto, path: str, mode: str, specs: Sequence[InputSpec], *,
                       decomposable_attention: bool = False, seed: int = 0, fail_regex: str | None = None,
                       on_probe: Callable[[int, int, bool], None] | None = None) -> ReduceResult:
    """A parse (``mode='parse'``) or build failure reduced at the input shapes of ``specs`` (its notes say
    when onnxruntime could not run the model to type the cuts)."""
    shapes = {s.name: list(s.shape) for s in specs}
    values, note = observed_values(model, random_feeds(list(specs), seed=seed))
    normalize = Normalizer(model)
    probe: Probe = (ParseProbe(trt, normalize, path) if mode == "parse" else
                    BuildProbe(trt, normalize, path, decomposable_attention))
    result = reduce_model(model, probe, shapes, values=values, fail_regex=fail_regex, on_probe=on_probe)
    result.notes += [note] if note else []
    return result


def tensor_values(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor ``model`` computes on ``feeds`` on onnxruntime (plus the feeds): what probes compare with."""
    names = list(dict.fromkeys(o for n in model.graph.node for o in n.output if o))
    return {**feeds, **run_ort(expose(model, names), feeds, outputs=names)}


def observed_values(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    """``tensor_values``, or nothing and why when onnxruntime cannot run the model (cuts are then typed by
    shape inference alone)."""
    try:
        return tensor_values(model, feeds), ""
    except Exception as exc:  # plugin ops, ops onnxruntime lacks: shape inference types the cuts instead
        return {}, f"onnxruntime could not run the model ({str(exc).splitlines()[0][:160]}); cut boundaries typed by shape inference"


def first_divergent(candidate: onnx.ModelProto, expected: dict[str, np.ndarray], feeds: dict[str, np.ndarray],
                    tolerance: Tolerance) -> list[str]:
    """The first candidate node (graph order) whose output differs from ``expected``'s tensor of that name."""
    shared = [o for n in candidate.graph.node for o in n.output if o in expected]
    try:
        got = run_ort(expose(candidate, shared), feeds, outputs=shared)
    except Exception:  # the hint is optional: the search finds the nodes without it
        return []
    diffs = {r.diff.name: r.diff.passed for r in compare_outputs(expected, got, shared, tolerance)}
    return next(([n.name] for n in candidate.graph.node if any(diffs.get(o) is False for o in n.output)), [])
