"""fuse-scale-mul: a constant per-channel Mul after a Conv / ConvTranspose / Gemm scales its weights and bias."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from onnx import numpy_helper

from tests.cnn_builders import C_OUT, Block, block
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph

PASS = "fuse-scale-mul"
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
    out, _ = _folds(block(Block(layer=layer, tail=("mul",), bias=bias, const_first=const_first)), layer)
    node = out.graph.node[0]
    assert node.name == "layer" and len(node.input) == (3 if bias else 2)  # no bias is made up for a Mul


@pytest.mark.parametrize("layer,group", [("Conv", 3), ("ConvTranspose", 2), ("ConvTranspose", 6)])
def test_grouped_layers(layer, group):
    _folds(block(Block(layer=layer, group=group, tail=("mul",), seed=group)), layer)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", [(C_OUT,), (3, 1), ()])
def test_gemm_layouts_and_bias_shapes(trans_b, c_shape):
    _folds(block(Block(layer="Gemm", trans_b=trans_b, gemm_c_shape=c_shape, tail=("mul",))), "Gemm")


def test_a_scalar_scale_folds():
    _folds(block(Block(tail=("mul",), const_shape=())), "Conv")


def test_fp16():
    _folds(block(Block(tail=("mul",), dtype=np.float16)), "Conv", rtol=1e-2, atol=1e-2)


def test_a_computed_scale_is_left_and_explained():
    out, result = apply_pass(block(Block(tail=("mul",), dynamic=frozenset({"mul_c0"}))), PASS, explain=True)
    assert result.changed == 0
    assert result.sites == [{"site": "mul", "outcome": "unmatched",
                             "reason": "operand-not-constant (mul_c0 is computed, not an initializer)"}]


@pytest.mark.parametrize("b,reason,tensor", [
    (Block(tail=("mul",), const_shape=(1, 1, 5)), "scale-not-per-channel", "mul_c0"),
    (Block(layer="Gemm", tail=("mul",), const_shape=(3, C_OUT)), "scale-not-per-channel", "mul_c0"),
    (Block(tail=("mul",), dynamic=frozenset({"w"})), "weight-not-constant", "w"),
    (Block(tail=("mul",), dynamic=frozenset({"b"})), "bias-not-constant", "b"),
])
def test_rejections_name_reason_and_tensor(b, reason, tensor):
    model = block(b)
    out, result = apply_pass(model, PASS, explain=True)
    assert result.changed == 0 and ops(out) == ops(model)
    assert result.stats[f"rejected:{reason}"] == 1
    assert result.sites == [{"site": "mul", "outcome": "rejected", "reason": reason, "tensor": tensor}]


def test_an_overflowing_scale_is_rejected():
    model = block(Block(tail=("mul",), dtype=np.float16))
    for t in model.graph.initializer:
        if t.name == "mul_c0":
            t.CopyFrom(numpy_helper.from_array(np.full(t.dims, 6e4, np.float16), t.name))
        if t.name == "w":
            t.CopyFrom(numpy_helper.from_array(np.full(t.dims, 4.0, np.float16), t.name))
    out, result = apply_pass(model, PASS, explain=True)
    assert result.changed == 0
    assert result.sites == [{"site": "mul", "outcome": "rejected", "reason": "fold-overflows-dtype", "tensor": "mul_c0"}]


def test_a_chain_of_two_folds_in_one_run():
    model = block(Block(tail=("mul", "mul")))
    out, result = apply_pass(model, PASS)
    assert result.changed == 2 and ops(out) == Counter({"Conv": 1})
    assert_same_outputs(model, out, **FP32)
    again, second = apply_pass(out, PASS)
    assert second.changed == 0 and same_graph(again, out)
