"""matmul-add-to-gemm: 2-D MatMul with constant weights + constant Add -> one Gemm; other ranks are left."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tests.cnn_builders import matmul_add
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph

PASS = "matmul-add-to-gemm"
FP32 = dict(rtol=1e-5, atol=1e-5)


def _fuses(model, **tol):
    out, result = apply_pass(model, PASS)
    assert result.changed == 1 and ops(out) == Counter({"Gemm": 1})
    assert_same_outputs(model, out, **(tol or FP32))
    again, second = apply_pass(out, PASS)
    assert second.changed == 0 and same_graph(again, out)
    return out, result


@pytest.mark.parametrize("const_first", [False, True])
@pytest.mark.parametrize("c_shape", [(5,), (1, 5), (3, 5), (3, 1), (1,), ()])
def test_every_broadcastable_addend_fuses_either_operand_order(const_first, c_shape):
    out, result = _fuses(matmul_add(c_shape=c_shape, const_first=const_first))
    gemm = out.graph.node[0]
    assert gemm.name == "matmul" and list(gemm.input) == ["a", "B", "c"] and gemm.output[0] == "y"
    assert result.sites[0]["outcome"] == f"fused:matmul-add:{'s' if const_first else 'k'}"


def test_fp16():
    _fuses(matmul_add(dtype=np.float16), rtol=1e-2, atol=1e-2)


def test_a_dynamic_row_count_takes_a_per_column_addend():
    _fuses(matmul_add(a_shape=("n", 4)))


@pytest.mark.parametrize("kwargs,reason,tensor", [
    (dict(a_shape=(2, 3, 4)), "input-not-2d", "a"),
    (dict(a_shape=(4,), c_shape=(5,)), "input-not-2d", "a"),
    (dict(a_rank_known=False), "input-rank-unknown", "a"),
    (dict(dynamic_b=True), "weight-not-constant", "B"),
    (dict(b_shape=(2, 4, 5)), "weight-not-2d", "B"),
    (dict(dtype=np.int32), "unsupported-dtype", "B"),
    (dict(c_shape=(2, 3, 5)), "addend-not-broadcastable", "c"),  # would add an axis
    (dict(c_shape=(6, 5), a_shape=(1, 4)), "addend-not-broadcastable", "c"),  # would grow the rows
    (dict(c_shape=(3, 5), a_shape=("n", 4)), "addend-not-broadcastable", "c"),  # rows not static
])
def test_rejections_name_reason_and_tensor(kwargs, reason, tensor):
    model = matmul_add(**kwargs)
    out, result = apply_pass(model, PASS, explain=True)
    assert result.changed == 0 and ops(out) == ops(model)
    assert result.stats[f"rejected:{reason}"] == 1
    assert result.sites == [{"site": "matmul", "outcome": "rejected", "reason": reason, "tensor": tensor}]


def test_the_explained_3d_rejection_says_why_in_a_note():
    _, result = apply_pass(matmul_add(a_shape=(2, 3, 4)), PASS, explain=True)
    assert any(n.startswith("input-not-2d: Gemm takes 2-D operands only") for n in result.notes)
    _, quiet = apply_pass(matmul_add(a_shape=(2, 3, 4)), PASS)
    assert quiet.notes == []


@pytest.mark.parametrize("kwargs,reason", [
    (dict(add=False), "no-add-after (the MatMul's output is not added to)"),
    (dict(mm_output_used=True), "matmul-output-shared (mm feeds 2 nodes)"),
])
def test_unmatched_matmuls_are_explained(kwargs, reason):
    out, result = apply_pass(matmul_add(**kwargs), PASS, explain=True)
    assert result.changed == 0
    assert result.sites == [{"site": "matmul", "outcome": "unmatched", "reason": reason}]
