"""resolve-reshape-targets: run-time Reshape targets become constants where shapes prove their values."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from converter.runtime.numerics import run_ort
from tests.builders import const, make_model, tensor
from tests.helpers import apply_pass, ops, same_graph

RNG = np.random.default_rng(3)
W = RNG.standard_normal((8, 8)).astype(np.float32)


def _dim(src: str, i: int, tag: str) -> list[onnx.NodeProto]:
    """Unsqueeze(Gather(Shape(src), i)) -> tag, as TorchScript writes x.size(i)."""
    return [helper.make_node("Shape", [src], [f"{tag}_shape"], name=f"{tag}_shape"),
            helper.make_node("Gather", [f"{tag}_shape", f"c_{tag}_i"], [f"{tag}_g"], name=f"{tag}_gather", axis=0),
            helper.make_node("Unsqueeze", [f"{tag}_g", "c_axes0"], [tag], name=f"{tag}_unsq")]


def head_split_model(second_src: str = "h", allowzero: int = 0, literal_zero: bool = False) -> onnx.ModelProto:
    """x[B,S,8] -> MatMul -> h -> Reshape(h, [h.size(0), <src>.size(1), 2, 4]) -> y (ctx is [B,T,8])."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj")]
    nodes += _dim("h", 0, "d0") + _dim(second_src, 1, "d1")
    tail = "c_tail0" if literal_zero else "c_tail"
    nodes += [helper.make_node("Concat", ["d0", "d1", tail], ["target"], name="concat", axis=0),
              helper.make_node("Reshape", ["h", "target"], ["y"], name="split", allowzero=allowzero)]
    inits = [const("w", W), const("c_d0_i", np.array(0, np.int64)), const("c_d1_i", np.array(1, np.int64)),
             const("c_axes0", np.array([0], np.int64)), const("c_tail", np.array([2, 4], np.int64)),
             const("c_tail0", np.array([0, 8], np.int64))]
    inputs = [tensor("x", ["B", "S", 8])] + ([tensor("ctx", ["B", "T", 8])] if second_src == "ctx" else [])
    model = make_model(nodes, inputs, [tensor("y", ["B", "S", 2, 4])], inits, opset=17 if not allowzero else 18)
    return onnx.shape_inference.infer_shapes(model)


def _feeds(model: onnx.ModelProto, b: int = 3, s: int = 5) -> dict[str, np.ndarray]:
    feeds = {"x": RNG.standard_normal((b, s, 8)).astype(np.float32)}
    if any(i.name == "ctx" for i in model.graph.input):
        feeds["ctx"] = RNG.standard_normal((b, s, 8)).astype(np.float32)
    return feeds


def test_dims_read_off_the_input_become_copy_entries():
    model = head_split_model()
    out, result = apply_pass(model, "resolve-reshape-targets")
    assert result.changed == 1
    reshape = next(n for n in out.graph.node if n.op_type == "Reshape")
    target = next(i for i in out.graph.initializer if i.name == reshape.input[1])
    assert onnx.numpy_helper.to_array(target).tolist() == [0, 0, 2, 4]
    out, _ = apply_pass(out, "remove-dead-nodes")  # the Shape/Gather/Unsqueeze/Concat chain is dead now
    assert ops(out) == Counter({"MatMul": 1, "Reshape": 1})
    for b, s in ((3, 5), (1, 7)):  # any batch and sequence: the copies follow them
        feeds = _feeds(model, b, s)
        np.testing.assert_array_equal(run_ort(out, feeds)["y"], run_ort(model, feeds)["y"])
    again, second = apply_pass(out, "resolve-reshape-targets")
    assert second.changed == 0 and same_graph(again, out)


def test_allowzero_without_literal_zero_is_resolved_and_dropped():
    model = head_split_model(allowzero=1)
    out, result = apply_pass(model, "resolve-reshape-targets")
    assert result.changed == 1
    reshape = next(n for n in out.graph.node if n.op_type == "Reshape")
    assert not any(a.name == "allowzero" for a in reshape.attribute)
    feeds = _feeds(model)
    np.testing.assert_array_equal(run_ort(out, feeds)["y"], run_ort(model, feeds)["y"])


@pytest.mark.parametrize("kwargs,reason", [
    ({"second_src": "ctx"}, "entry-unproven"),            # ctx's dim 1 is T, not h's S
    ({"allowzero": 1, "literal_zero": True}, "allowzero"),  # a real 0 cannot become a copy
])
def test_unproven_targets_are_left_alone(kwargs, reason):
    model = head_split_model(**kwargs)
    out, result = apply_pass(model, "resolve-reshape-targets")
    assert result.changed == 0 and result.stats[f"rejected:{reason}"] == 1
    assert ops(out)["Concat"] == 1


def test_trt_preset_drops_the_shape_arithmetic():
    from tests.helpers import assert_same_outputs  # noqa: PLC0415
    model = head_split_model()
    out, _ = apply_pass(model, "resolve-reshape-targets")
    out, _ = apply_pass(out, "remove-dead-nodes")
    assert not {"Shape", "Gather", "Unsqueeze", "Concat"} & set(ops(out))
    assert_same_outputs(model, out, feeds=_feeds(model))
