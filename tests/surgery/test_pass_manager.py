from __future__ import annotations

import pytest

from surgery import FixedPoint, PassContext, PassManager, PassResult, to_graph
from surgery.errors import NonConvergenceError, PassError, VerificationError
from surgery.pass_base import Pass
from surgery.registry import parse_pipeline
from tests.builders import dead_branch_model, shape_arith_model


class _AlwaysChanges(Pass):
    name = "always-changes"

    def run(self, graph, ctx):
        return PassResult(changed=1)


class _Crashes(Pass):
    name = "crashes"

    def run(self, graph, ctx):
        raise RuntimeError("boom")


class _BreaksGraph(Pass):
    name = "breaks-graph"

    def run(self, graph, ctx):
        graph.nodes[0].op = "NoSuchOp"
        return PassResult(changed=1)


def test_report_records_each_pass_in_order():
    graph = to_graph(shape_arith_model())
    report = PassManager(parse_pipeline("fold-constants,remove-dead-nodes")).run(graph)
    assert [r.name for r in report.passes] == ["fold-constants", "remove-dead-nodes"]
    assert report.passes[0].changed == 5 and report.passes[0].verified
    assert report.passes[1].changed == 0 and not report.passes[1].verified
    data = report.to_json()
    assert data["total_changed"] == 5 and all({"name", "changed"} <= set(p) for p in data["passes"])


def test_annotation_only_passes_are_not_verified():
    model = shape_arith_model()
    del model.graph.value_info[:]
    report = PassManager(parse_pipeline("infer-shapes,fold-constants")).run(to_graph(model))
    annotate, fold = report.passes
    assert annotate.changed > 0 and not annotate.verified  # infer-shapes only copies ONNX's own inference
    assert fold.changed > 0 and fold.verified


class _BreaksGraphQuietly(_BreaksGraph):
    name = "breaks-graph-quietly"
    changes_graph = False


def test_a_pass_declaring_no_graph_change_skips_verification():
    graph = to_graph(shape_arith_model())
    report = PassManager([_BreaksGraphQuietly()]).run(graph)  # the declaration is trusted: keep it to annotators
    assert report.passes[0].changed == 1 and not report.passes[0].verified


def test_fixed_point_reruns_until_quiet():
    graph = to_graph(dead_branch_model())
    report = PassManager(parse_pipeline("fixpoint(remove-dead-nodes,fold-constants)")).run(graph)
    sweeps = [(r.name, r.sweep, r.changed) for r in report.passes]
    assert sweeps == [("remove-dead-nodes", 1, 3), ("fold-constants", 1, 0), ("remove-dead-nodes", 2, 0), ("fold-constants", 2, 0)]


def test_fixed_point_raises_on_non_convergence():
    graph = to_graph(dead_branch_model())
    with pytest.raises(NonConvergenceError, match="after 3 sweeps"):
        PassManager([FixedPoint([_AlwaysChanges()], max_iters=3)], verify_each=False).run(graph)


def test_pass_error_names_pass_and_history():
    graph = to_graph(shape_arith_model())
    steps = parse_pipeline("remove-dead-nodes") + [_Crashes()]
    with pytest.raises(PassError, match=r"pass 'crashes' failed: boom \(passes already run: remove-dead-nodes\)"):
        PassManager(steps).run(graph)


def test_verification_catches_invalid_graph():
    graph = to_graph(shape_arith_model())
    with pytest.raises(VerificationError, match="after pass 'breaks-graph'"):
        PassManager([_BreaksGraph()]).run(graph, PassContext())
