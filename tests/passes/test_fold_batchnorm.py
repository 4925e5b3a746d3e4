"""fold-batchnorm: an inference BatchNormalization folds into the Conv / ConvTranspose / Gemm before it."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from onnx import numpy_helper

from surgery import PassContext, get_pass, to_graph
from tests.cnn_builders import C_OUT, Block, block
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph

PASS = "fold-batchnorm"
FP32 = dict(rtol=1e-5, atol=1e-5)


def _folds(model, layer: str, **tol):
    out, result = apply_pass(model, PASS)
    assert result.changed == 1 and ops(out) == Counter({layer: 1})
    assert_same_outputs(model, out, **(tol or FP32))
    again, second = apply_pass(out, PASS)
    assert second.changed == 0 and same_graph(again, out)
    return out, result


def _weights(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("layer", ["Conv", "ConvTranspose", "Gemm"])
@pytest.mark.parametrize("bias", [True, False])
def test_folds_into_each_layer_with_and_without_a_bias(layer, bias):
    out, result = _folds(block(Block(layer=layer, bias=bias)), layer)
    node = out.graph.node[0]
    assert node.name == "layer" and len(node.input) == 3 and node.output[0] == "y"  # a layer without bias gets one
    assert {"site": "bn", "outcome": f"fused:{layer}{'+bias' if bias else ''}", "reason": ""} in result.sites


@pytest.mark.parametrize("layer", ["Conv", "ConvTranspose"])
@pytest.mark.parametrize("group", [2, 3, 6])
def test_grouped_layers_scale_the_right_weight_slices(layer, group):
    # ConvTranspose weights are [C_in, C_out/group, k, k]: output channel o is column o % (C_out/group)
    # of the (o // (C_out/group))-th block of rows, which a plain per-row or per-column scale gets wrong.
    # group 6 is depthwise (one input channel per group).
    _folds(block(Block(layer=layer, group=group, seed=group)), layer)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", [(C_OUT,), (1, C_OUT), (3, 1), (3, C_OUT), ()])
def test_gemm_layouts_and_broadcast_bias(trans_b, c_shape):
    out, _ = _folds(block(Block(layer="Gemm", trans_b=trans_b, gemm_c_shape=c_shape)), "Gemm")
    attrs = {a.name: a for a in out.graph.node[0].attribute}
    assert attrs["beta"].f == 1.0 and attrs["alpha"].f == 0.5


def test_fp16_is_folded_in_float64_and_stays_fp16():
    model = block(Block(dtype=np.float16))
    out, _ = _folds(model, "Conv", rtol=2e-2, atol=2e-2)
    assert all(v.dtype == np.float16 for v in _weights(out).values())


def test_one_initializer_for_all_four_parameters_folds():
    _folds(block(Block(shared_bn_params=True)), "Conv")


def test_a_shared_layer_output_is_left_and_explained():
    model = block(Block(layer_output_used=True))
    out, result = apply_pass(model, PASS, explain=True)
    assert result.changed == 0 and ops(out) == ops(model)
    assert result.sites == [{"site": "bn", "outcome": "unmatched", "reason": "layer-output-shared (h0 feeds 2 nodes)"}]


def test_a_layer_output_that_is_a_graph_output_is_left_and_explained():
    out, result = apply_pass(block(Block(layer_output_is_graph_output=True)), PASS, explain=True)
    assert result.changed == 0 and result.sites[0]["reason"] == "layer-output-is-graph-output (h0 must stay)"


def test_a_batchnorm_after_another_op_is_explained():
    out, result = apply_pass(block(Block(tail=("add", "bn"))), PASS, explain=True)
    assert result.changed == 0
    assert result.sites == [{"site": "bn1", "outcome": "unmatched",
                             "reason": "no-layer-before (the BatchNormalization reads no Conv, ConvTranspose, Gemm output)"}]


def test_the_training_form_is_left_and_explained():
    model = block(Block(bn_training=True))
    out, result = apply_pass(model, PASS, explain=True)
    assert result.changed == 0 and ops(out) == ops(model)
    assert result.sites == [{"site": "bn", "outcome": "unmatched",
                             "reason": "bn-training-outputs (the BatchNormalization also writes running statistics: "
                                       "the training form)"}]


@pytest.mark.parametrize("b,reason,tensor", [
    (Block(opset=8, bn_attrs={"spatial": 0}), "bn-not-spatial", "y"),
    (Block(dynamic=frozenset({"mean"})), "bn-params-not-constant", "mean"),
    (Block(dynamic=frozenset({"w"})), "weight-not-constant", "w"),
    (Block(dynamic=frozenset({"w"}), weight_shape=["co", 4, 3, 3]), "weight-shape-unknown", "w"),
    (Block(dynamic=frozenset({"b"})), "bias-not-constant", "b"),
    (Block(dtype=np.float16, bn_params={"scale": np.full(C_OUT, 1000.0), "var": np.zeros(C_OUT)},
           bn_attrs={"epsilon": 1e-10}), "fold-overflows-dtype", "w"),
])
def test_rejections_name_reason_and_tensor(b, reason, tensor):
    model = block(b)
    out, result = apply_pass(model, PASS, explain=True)
    assert result.changed == 0 and ops(out) == ops(model)
    assert result.stats[f"rejected:{reason}"] == 1
    assert result.sites == [{"site": "bn", "outcome": "rejected", "reason": reason, "tensor": tensor}]


def test_parameters_of_the_wrong_length_are_rejected():
    # Not a valid model (the checker refuses it), so the pass is called on the graph directly.
    graph = to_graph(block(Block(bn_params={"var": np.ones(1)})))
    result = get_pass(PASS)(graph, PassContext(explain=frozenset({PASS})))
    assert result.changed == 0 and ops(graph) == Counter({"Conv": 1, "BatchNormalization": 1})
    assert result.sites == [{"site": "bn", "outcome": "rejected", "reason": "bn-params-shape", "tensor": "var"}]


def test_a_chain_of_two_folds_in_one_run():
    model = block(Block(tail=("bn", "bn")))
    out, result = apply_pass(model, PASS)
    assert result.changed == 2 and ops(out) == Counter({"Conv": 1})
    assert_same_outputs(model, out, **FP32)
    again, second = apply_pass(out, PASS)
    assert second.changed == 0 and same_graph(again, out)
