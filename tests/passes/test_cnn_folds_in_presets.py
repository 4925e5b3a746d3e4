"""The CNN folds in the presets: whole chains fold in one run, a second run changes nothing, and the
declared orderings are enforced."""
from __future__ import annotations

import copy
from collections import Counter

import onnx
import pytest

from surgery import PassContext, PassManager, UserInputError, parse_pipeline, preset_pipeline, to_graph, to_model
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
