from __future__ import annotations

import copy

from collections import Counter

import numpy as np
import pytest
from onnx import helper

from passes.rewrite_einsum import plan_einsum
from surgery import to_graph, to_model
from tests.builders import make_model, tensor
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph


def untouched(out, model) -> bool:
    """``out`` equals ``model`` after the same import/export round trip (nothing was rewritten)."""
    return same_graph(out, to_model(to_graph(copy.deepcopy(model)), like=model))


def _einsum(equation: str, shapes: list[list[int]], out_shape: list[int]):
    names = [f"x{i}" for i in range(len(shapes))]
    node = helper.make_node("Einsum", names, ["y"], name="einsum", equation=equation)
    return make_model([node], [tensor(n, s) for n, s in zip(names, shapes)], [tensor("y", out_shape)])


CASES = [
    ("bij,bjk->bik", [[2, 3, 4], [2, 4, 5]], [2, 3, 5], {"MatMul": 1}),
    ("bhqd,bhkd->bhqk", [[1, 2, 3, 4], [1, 2, 5, 4]], [1, 2, 3, 5], {"Transpose": 1, "MatMul": 1}),
    ("ij->ji", [[3, 4]], [4, 3], {"Transpose": 1}),
    ("bjk,bij->bki", [[2, 4, 5], [2, 3, 4]], [2, 5, 3], {"Transpose": 2, "MatMul": 1}),
    ("bij,bjk->bki", [[2, 3, 4], [2, 4, 5]], [2, 5, 3], {"MatMul": 1, "Transpose": 1}),
    ("bk,bk->b", [[2, 4], [2, 4]], [2], {"Unsqueeze": 2, "MatMul": 1, "Squeeze": 1}),
    ("ij,jk", [[3, 4], [4, 5]], [3, 5], {"MatMul": 1}),
]


@pytest.mark.parametrize("equation,shapes,out_shape,want", CASES, ids=[c[0] for c in CASES])
def test_lowers_equation(equation, shapes, out_shape, want):
    model = _einsum(equation, shapes, out_shape)
    out, result = apply_pass(model, "rewrite-einsum")
    assert result.changed == 1
    assert ops(out) == Counter(want)
    assert [o.name for o in out.graph.output] == ["y"]
    assert_same_outputs(model, out, rtol=1e-5, atol=1e-6)
    again, second = apply_pass(out, "rewrite-einsum")
    assert second.changed == 0 and same_graph(again, out)


@pytest.mark.parametrize("equation,shapes,reason", [
    ("...ij,...jk->...ik", [[2, 3, 4], [2, 4, 5]], "ellipsis"),
    ("ij,jk,kl->il", [[2, 3], [3, 4], [4, 5]], "operand-count"),
    ("ii->i", [[3, 3]], "repeated-letter"),
    ("ij,jk->i", [[2, 3], [3, 4]], "reduced-letter"),
    ("ij->i", [[2, 3]], "one-operand-reduction"),
    ("i,j->ij", [[3], [4]], "no-contraction"),
    ("bijk,bjkl->bil", [[2, 3, 4, 5], [2, 4, 5, 6]], "grouped-axes"),
])
def test_rejects(equation, shapes, reason):
    assert plan_einsum(equation) == reason
    model = _einsum(equation, shapes, list(np.einsum(equation, *[np.zeros(sh) for sh in shapes]).shape))
    out, result = apply_pass(model, "rewrite-einsum")
    assert result.changed == 0
    assert result.stats[f"rejected:{reason}"] == 1
    assert untouched(out, model)
