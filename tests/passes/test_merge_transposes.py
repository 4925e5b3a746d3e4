from __future__ import annotations

import copy
from collections import Counter

import onnx_graphsurgeon as gs

from surgery import PassContext, get_pass, to_graph, to_model
from tests.builders import transpose_chain_model
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph


def _perms(model):
    return [list(n.attribute[0].ints) for n in model.graph.node if n.op_type == "Transpose"]


def test_merges_pair_into_one_transpose():
    model = transpose_chain_model([[1, 0, 2], [0, 2, 1]])
    out, result = apply_pass(model, "merge-transposes")
    assert ops(out) == Counter({"Relu": 1, "Transpose": 1})
    assert _perms(out) == [[1, 2, 0]]
    assert result.changed == 1
    assert [o.name for o in out.graph.output] == ["y"]
    assert_same_outputs(model, out)
    _, again = apply_pass(out, "merge-transposes")
    assert again.changed == 0


def test_cancelling_pair_disappears_and_keeps_output_name():
    model = transpose_chain_model([[0, 2, 1], [0, 2, 1]])
    out, result = apply_pass(model, "merge-transposes")
    assert ops(out) == Counter({"Relu": 1})
    assert result.changed == 1
    assert [o.name for o in out.graph.output] == ["y"]
    assert_same_outputs(model, out)


def test_default_perms_cancel():
    model = transpose_chain_model([None, None])
    out, result = apply_pass(model, "merge-transposes")
    assert ops(out) == Counter({"Relu": 1})
    assert result.changed == 1
    assert_same_outputs(model, out)


def test_long_chain_merges_in_one_run():
    model = transpose_chain_model([[1, 0, 2], [0, 2, 1], [2, 1, 0], [1, 2, 0]])
    out, result = apply_pass(model, "merge-transposes")
    assert ops(out) == Counter({"Relu": 1, "Transpose": 1})
    assert _perms(out) == [[2, 1, 0]]
    assert result.changed == 3
    assert [o.name for o in out.graph.output] == ["y"]
    assert_same_outputs(model, out)
    _, again = apply_pass(out, "merge-transposes")
    assert again.changed == 0


def test_intermediate_with_other_consumer_is_left_alone():
    model = transpose_chain_model([[1, 0, 2], [0, 2, 1]], shared=True)
    before = copy.deepcopy(model)
    out, result = apply_pass(model, "merge-transposes", explain=True)
    assert result.changed == 0
    assert same_graph(out, before)
    assert {"site": "transpose1", "outcome": "unmatched", "reason": "intermediate-shared"} in result.sites


def test_intermediate_graph_output_is_left_alone():
    model = transpose_chain_model([[1, 0, 2], [0, 2, 1]], mid_output=True)
    before = copy.deepcopy(model)
    out, result = apply_pass(model, "merge-transposes", explain=True)
    assert result.changed == 0
    assert same_graph(out, before)
    assert {"site": "transpose1", "outcome": "unmatched", "reason": "intermediate-is-output"} in result.sites


def test_rank_unknown_rejected():
    graph = to_graph(transpose_chain_model([None, [0, 2, 1]]))
    for t in graph.tensors().values():
        if isinstance(t, gs.Variable):
            t.shape = None  # a perm-less Transpose then has no known rank
    before = to_model(graph)
    result = get_pass("merge-transposes")(graph, PassContext())
    assert result.changed == 0
    assert result.stats["rejected:rank-unknown"] == 1
    assert same_graph(to_model(graph), before)
