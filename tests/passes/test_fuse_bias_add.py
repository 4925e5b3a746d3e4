"""fuse-bias-add: a constant per-channel Add after a Conv / ConvTranspose / Gemm becomes its bias."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.builders import const, make_model, tensor
from tests.cnn_builders import C_OUT, Block, block
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph

PASS = "fuse-bias-add"
FP32 = dict(rtol=1e-5, atol=1e-5)


def _folds(model, layer: str, **tol):
    out, result = apply_pass(model, PASS)
    assert result.changed == 1 and ops(out) == Counter({layer: 1})
    assert_same_outputs(model, out, **(tol or FP32))
    again, second = apply_pass(out, PASS)
    assert second.changed == 0 and same_graph(again, out)
    return out, result


@pytest.mark.parametrize("layer", ["Conv", "ConvTranspose", "Gemm"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("const_first", [False, True])
def test_folds_into_each_layer_either_operand_order(layer, bias, const_first):
    out, _ = _folds(block(Block(layer=layer, tail=("add",), bias=bias, const_first=const_first)), layer)
    node = out.graph.node[0]
    assert node.name == "layer" and len(node.input) == 3 and node.output[0] == "y"


@pytest.mark.parametrize("layer,shape", [
    ("Conv", (1, C_OUT, 1, 1)), ("Conv", ()), ("Conv", (1,)), ("ConvTranspose", (1, C_OUT, 1, 1)),
    ("Gemm", (1, C_OUT)), ("Gemm", ()),
])
def test_every_per_channel_broadcast_shape_folds(layer, shape):
    _folds(block(Block(layer=layer, tail=("add",), const_shape=shape)), layer)


@pytest.mark.parametrize("c_shape", [(3, 1), (3, C_OUT), ()])
def test_a_gemm_bias_of_any_broadcast_shape_takes_the_add(c_shape):
    out, _ = _folds(block(Block(layer="Gemm", tail=("add",), gemm_c_shape=c_shape)), "Gemm")
    assert {a.name: a.f for a in out.graph.node[0].attribute if a.name == "beta"} == {"beta": 1.0}


def test_grouped_conv_transpose_folds():
    _folds(block(Block(layer="ConvTranspose", group=3, tail=("add",))), "ConvTranspose")


def test_computed_weights_need_not_be_constant():
    out, _ = _folds(block(Block(tail=("add",), dynamic=frozenset({"w"}))), "Conv")
    assert out.graph.node[0].input[1] == "w"


def test_fp16():
    _folds(block(Block(tail=("add",), dtype=np.float16)), "Conv", rtol=1e-2, atol=1e-2)


def test_a_computed_addend_is_left_and_explained():
    model = block(Block(tail=("add",), dynamic=frozenset({"add_c0"})))
    out, result = apply_pass(model, PASS, explain=True)
    assert result.changed == 0 and ops(out) == ops(model)
    assert result.sites == [{"site": "add", "outcome": "unmatched",
                             "reason": "operand-not-constant (add_c0 is computed, not an initializer)"}]


def test_a_shared_layer_output_is_left_and_explained():
    out, result = apply_pass(block(Block(tail=("add",), layer_output_used=True)), PASS, explain=True)
    assert result.changed == 0 and result.sites[0]["reason"] == "layer-output-shared (h0 feeds 2 nodes)"


@pytest.mark.parametrize("b,reason,tensor", [
    (Block(tail=("add",), const_shape=(5,)), "addend-not-per-channel", "add_c0"),  # acts on the width axis
    (Block(tail=("add",), const_shape=(2, C_OUT, 1, 1), y_shape=[2, C_OUT, 5, 5]), "addend-not-per-channel", "add_c0"),
    (Block(layer="Gemm", tail=("add",), const_shape=(3, 1)), "addend-not-per-channel", "add_c0"),  # per row
    (Block(tail=("add",), dynamic=frozenset({"b"})), "bias-not-constant", "b"),
    (Block(tail=("add",), dynamic=frozenset({"w"}), weight_shape=["co", 6, 3, 3]), "weight-shape-unknown", "w"),
])
def test_rejections_name_reason_and_tensor(b, reason, tensor):
    model = block(b)
    out, result = apply_pass(model, PASS, explain=True)
    assert result.changed == 0 and ops(out) == ops(model)
    assert result.stats[f"rejected:{reason}"] == 1
    assert result.sites == [{"site": "add", "outcome": "rejected", "reason": reason, "tensor": tensor}]


def test_an_overflowing_sum_is_rejected():
    model = block(Block(tail=("add",), dtype=np.float16, const_shape=(1,)))
    for t in model.graph.initializer:  # bias + addend beyond fp16's 65504
        if t.name in ("b", "add_c0"):
            t.CopyFrom(numpy_helper.from_array(np.full(t.dims, 60000.0, np.float16), t.name))
    out, result = apply_pass(model, PASS, explain=True)
    assert result.changed == 0
    assert result.sites == [{"site": "add", "outcome": "rejected", "reason": "fold-overflows-dtype", "tensor": "add_c0"}]


def test_integer_gemm_is_rejected():
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], name="layer"),
             helper.make_node("Add", ["h", "c"], ["y"], name="add")]
    model = make_model(nodes, [tensor("x", [2, 3], TensorProto.INT32)], [tensor("y", [2, 4], TensorProto.INT32)],
                       [const("w", np.ones((3, 4), np.int32)), const("c", np.ones(4, np.int32))])
    out, result = apply_pass(model, PASS, explain=True)
    assert result.changed == 0
    assert result.sites == [{"site": "add", "outcome": "rejected", "reason": "unsupported-dtype", "tensor": "w"}]


def test_a_chain_of_two_folds_in_one_run():
    model = block(Block(tail=("add", "add")))
    out, result = apply_pass(model, PASS)
    assert result.changed == 2 and ops(out) == Counter({"Conv": 1})
    assert_same_outputs(model, out, **FP32)
    again, second = apply_pass(out, PASS)
    assert second.changed == 0 and same_graph(again, out)
