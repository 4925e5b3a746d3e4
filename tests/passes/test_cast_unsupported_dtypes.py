from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper

from surgery import to_graph, to_model
from tests.builders import const, make_model, tensor
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph


def untouched(out, model) -> bool:
    """``out`` equals ``model`` after the same import/export round trip (nothing was rewritten)."""
    return same_graph(out, to_model(to_graph(copy.deepcopy(model)), like=model))


def _double_op(op="Mul", other="const", value=2.0, shared=False):
    """y = float(op(double(x), other)); other is a double constant or double(z)."""
    nodes = [helper.make_node("Cast", ["x"], ["d"], name="up", to=T.DOUBLE)]
    ins = ["d"] if op in ("Sqrt", "Neg", "Abs", "Exp") else ["d", "o"]
    inits, inputs = [], [tensor("x", [2, 3])]
    if len(ins) == 2 and other == "const":
        inits.append(const("o", np.array(value, np.float64)))
    elif len(ins) == 2:
        inputs.append(tensor("z", [2, 3]))
        nodes.append(helper.make_node("Cast", ["z"], ["o"], name="up2", to=T.DOUBLE))
    nodes += [helper.make_node(op, ins, ["e"], name="op"), helper.make_node("Cast", ["e"], ["y"], name="down", to=T.FLOAT)]
    outputs = [tensor("y", [2, 3])]
    if shared:
        outputs.append(tensor("e", [2, 3], T.DOUBLE))
    return make_model(nodes, inputs, outputs, inits)


@pytest.mark.parametrize("op,other", [("Mul", "const"), ("Add", "cast"), ("Div", "cast"), ("Sqrt", None), ("Neg", None)])
def test_double_op_runs_in_float(op, other):
    model = _double_op(op, other)
    out, result = apply_pass(model, "cast-unsupported-dtypes")
    assert result.changed == 1
    assert ops(out) == Counter({op: 1})
    feeds = {"x": np.random.default_rng(0).uniform(0.1, 3, (2, 3)).astype(np.float32),
             "z": np.random.default_rng(1).uniform(0.1, 3, (2, 3)).astype(np.float32)}
    assert_same_outputs(model, out, feeds=feeds, rtol=0, atol=0)  # bit-exact
    again, second = apply_pass(out, "cast-unsupported-dtypes")
    assert second.changed == 0 and same_graph(again, out)


def _cast_pair(a=T.BOOL, b=T.UINT16, c=T.FLOAT):
    nodes = [helper.make_node("Cast", ["x"], ["m"], name="c1", to=b), helper.make_node("Cast", ["m"], ["y"], name="c2", to=c)]
    return make_model(nodes, [tensor("x", [2, 3], a)], [tensor("y", [2, 3], c)])


@pytest.mark.parametrize("a,b,c,want", [(T.BOOL, T.UINT16, T.FLOAT, {"Cast": 1}), (T.UINT8, T.INT16, T.INT32, {"Cast": 1}),
                                        (T.FLOAT, T.DOUBLE, T.FLOAT, {"Identity": 1})])
def test_cast_pair_through_unsupported_type(a, b, c, want):
    model = _cast_pair(a, b, c)
    out, result = apply_pass(model, "cast-unsupported-dtypes")
    assert result.changed == 1 and ops(out) == Counter(want)
    x = np.random.default_rng(0).integers(0, 2 if a == T.BOOL else 200, (2, 3))
    feeds = {"x": x.astype({T.BOOL: bool, T.UINT8: np.uint8, T.FLOAT: np.float32}[a])}
    assert_same_outputs(model, out, feeds=feeds, rtol=0, atol=0)


@pytest.mark.parametrize("model,reason", [
    (lambda: _cast_pair(T.INT32, T.UINT16, T.INT32), "value-may-not-fit"),
    (lambda: _double_op("Exp"), "unsafe-op"),
    (lambda: _double_op("Mul", value=0.1), "constant-not-float"),
    (lambda: _double_op("Mul", shared=True), "graph-output"),
])
def test_rejects(model, reason):
    m = model()
    out, result = apply_pass(m, "cast-unsupported-dtypes")
    assert result.changed == 0 and result.stats[f"rejected:{reason}"] == 1
    assert untouched(out, m)


def test_rejects_shared_intermediate():
    nodes = [helper.make_node("Cast", ["x"], ["d"], name="up", to=T.DOUBLE),
             helper.make_node("Cast", ["d"], ["y"], name="down", to=T.FLOAT),
             helper.make_node("Cast", ["d"], ["z"], name="down2", to=T.FLOAT16)]
    m = make_model(nodes, [tensor("x", [2, 3])], [tensor("y", [2, 3]), tensor("z", [2, 3], T.FLOAT16)])
    out, result = apply_pass(m, "cast-unsupported-dtypes")
    assert result.changed == 0 and result.stats["rejected:shared-intermediate"] == 1
    assert untouched(out, m)
