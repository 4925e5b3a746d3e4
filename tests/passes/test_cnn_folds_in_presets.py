"""The CNN folds in the presets: whole chains fold in one run, a second run changes nothing, and the
declared orderings are enforced."""
from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import helper

from surgery import PassContext, PassManager, UserInputError, parse_pipeline, preset_pipeline, to_graph, to_model
from tests.builders import const, make_model, tensor
from tests.cnn_builders import Block, block, matmul_add
from tests.helpers import assert_same_outputs, ops, same_graph

FOLDS = ("matmul-add-to-gemm", "fold-batchnorm", "fuse-scale-mul", "fuse-bias-add")


def _run(model: onnx.ModelProto, preset: str) -> tuple[onnx.ModelProto, int]:
    graph = to_graph(copy.deepcopy(model))
    report = PassManager(parse_pipeline(preset_pipeline(preset, "onnx"))).run(graph, PassContext())
    return to_model(graph, like=model), report.total_changed


@pytest.mark.parametrize("preset", ["default", "trt"])
@pytest.mark.parametrize("model,layer", [
    (block(Block(tail=("bn", "mul", "add"))), "Conv"),  # Caffe2's BatchNormalization + affine
    (block(Block(tail=("add", "bn", "mul"))), "Conv"),  # a bias Add before the BatchNormalization
    (block(Block(layer="ConvTranspose", group=2, tail=("mul", "bn", "add"))), "ConvTranspose"),
    (block(Block(layer="Gemm", trans_b=1, tail=("bn", "add"))), "Gemm"),
    (matmul_add(then_bn=True), "Gemm"),  # MatMul + Add -> Gemm, then the BatchNormalization folds in
])
def test_a_chain_folds_to_one_layer_and_a_second_run_changes_nothing(preset, model, layer):
    out, changed = _run(model, preset)
    assert changed and ops(out) == Counter({layer: 1})
    assert_same_outputs(model, out, rtol=1e-5, atol=1e-5)
    again, second = _run(out, preset)
    assert second == 0 and same_graph(again, out)


@pytest.mark.parametrize("preset", ["default", "trt"])
def test_every_fold_is_in_the_presets_simplify_group(preset):
    spec = preset_pipeline(preset)
    for group in spec.split("fixpoint(")[1:]:
        assert all(name in group.split(")")[0].split(",") for name in FOLDS)


@pytest.mark.parametrize("late", ["fold-batchnorm", "fuse-scale-mul", "fuse-bias-add"])
def test_matmul_add_to_gemm_must_come_first(late):
    with pytest.raises(UserInputError, match=f"runs {late} before matmul-add-to-gemm"):
        parse_pipeline(f"{late},matmul-add-to-gemm")


def test_folds_of_one_pass_in_different_rounds_name_their_constants_apart():
    """Conv1 -> Add -> Mul -> Conv2 -> Mul: fuse-scale-mul folds Conv2's Mul in the first round of the
    fixpoint and Conv1's (once fuse-bias-add took the Add) in the second; the second's constants once
    took the first's names (the node keeps the layer's name, so the generated one was free again)."""
    rng = np.random.default_rng(0)
    inits = [const(n, rng.uniform(0.5, 1.5, s).astype(np.float32)) for n, s in
             (("w1", (6, 6, 1, 1)), ("a", (6, 1, 1)), ("k1", (6, 1, 1)), ("w2", (12, 6, 1, 1)), ("k2", (12, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h1"], name="conv1"), helper.make_node("Add", ["h1", "a"], ["h2"]),
             helper.make_node("Mul", ["h2", "k1"], ["h3"]), helper.make_node("Conv", ["h3", "w2"], ["h4"], name="conv2"),
             helper.make_node("Mul", ["h4", "k2"], ["y"])]
    model = make_model(nodes, [tensor("x", [1, 6, 5, 5])], [tensor("y", [1, 12, 5, 5])], inits)
    out, _ = _run(model, "default")
    assert ops(out) == Counter({"Conv": 2})
    names = [t.name for t in out.graph.initializer]
    assert len(names) == len(set(names)) == 3  # conv1's weight and bias, conv2's weight
    assert_same_outputs(model, out, rtol=1e-5, atol=1e-5)
