from __future__ import annotations

import copy

from collections import Counter

import numpy as np
import pytest
from onnx import TensorProto, helper

from surgery import to_graph, to_model
from tests.builders import const, make_model, tensor
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph


def untouched(out, model) -> bool:
    """``out`` equals ``model`` after the same import/export round trip (nothing was rewritten)."""
    return same_graph(out, to_model(to_graph(copy.deepcopy(model)), like=model))

MASK = np.array([True, False, True, True, False, True])


def _mask_index_model(mask=MASK, runtime_mask: bool = False):
    """The TorchScript export of x[:, mask]: NonZero → Transpose → Squeeze(1) → Gather(axis=1) → *2."""
    nodes = [helper.make_node("NonZero", ["m"], ["nz"], name="nonzero"),
             helper.make_node("Transpose", ["nz"], ["t"], name="transpose", perm=[1, 0]),
             helper.make_node("Squeeze", ["t", "ax1"], ["idx"], name="squeeze"),
             helper.make_node("Gather", ["x", "idx"], ["g"], name="gather", axis=1),
             helper.make_node("Mul", ["g", "two"], ["y"], name="mul")]
    inits = [const("ax1", np.array([1], np.int64)), const("two", np.float32(2.0))]
    inputs = [tensor("x", [4, 6])]
    if runtime_mask:
        inputs.append(tensor("m", [6], TensorProto.BOOL))
    else:
        inits.append(const("m", mask))
    return make_model(nodes, inputs, [tensor("y", [4, None])], inits)


def test_mask_index_chain_becomes_constant_gather():
    model = _mask_index_model()
    out, result = apply_pass(model, "rewrite-static-nonzero")
    assert result.changed == 1
    assert ops(out) == Counter({"Constant": 1, "Gather": 1, "Mul": 1})
    const_node = next(n for n in out.graph.node if n.op_type == "Constant")
    assert helper.get_attribute_value(const_node.attribute[0]).dims == [4]
    assert_same_outputs(model, out)
    again, second = apply_pass(out, "rewrite-static-nonzero")
    assert second.changed == 0 and same_graph(again, out)


def test_plain_nonzero_of_2d_constant():
    mask = np.array([[1, 0, 2], [0, 3, 0]], np.float32)
    nodes = [helper.make_node("NonZero", ["m"], ["y"], name="nonzero")]
    model = make_model(nodes, [], [tensor("y", [2, None], TensorProto.INT64)], [const("m", mask)])
    out, result = apply_pass(model, "rewrite-static-nonzero")
    assert result.changed == 1 and ops(out) == Counter({"Constant": 1})
    assert_same_outputs(model, out, feeds={})


@pytest.mark.parametrize("axis", [1, None])
def test_compress_becomes_gather(axis):
    attrs = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("Compress", ["x", "c"], ["y"], name="compress", **attrs)]
    y_shape = [2, 2] if axis is not None else [2]
    model = make_model(nodes, [tensor("x", [2, 3])], [tensor("y", y_shape)], [const("c", np.array([True, False, True]))])
    out, result = apply_pass(model, "rewrite-static-nonzero")
    assert result.changed == 1
    assert ops(out) == Counter({"Gather": 1} if axis is not None else {"Reshape": 1, "Gather": 1})
    assert_same_outputs(model, out)


def test_rejects_runtime_mask():
    model = _mask_index_model(runtime_mask=True)
    out, result = apply_pass(model, "rewrite-static-nonzero")
    assert result.changed == 0 and result.stats["rejected:mask-not-constant"] == 1
    assert untouched(out, model)


def test_rejects_empty_selection():
    model = _mask_index_model(mask=np.zeros(6, bool))
    out, result = apply_pass(model, "rewrite-static-nonzero")
    assert result.changed == 0 and result.stats["rejected:empty-selection"] == 1
    assert untouched(out, model)


def test_rejects_large_mask():
    out, result = apply_pass(_mask_index_model(), "rewrite-static-nonzero", max_elements=4)
    assert result.changed == 0 and result.stats["rejected:too-large"] == 1
