from __future__ import annotations

import pytest

from surgery import FixedPoint, PassContext, PassResult, UserInputError, list_passes, parse_pipeline
from surgery.registry import list_presets, preset_pipeline


def test_pipeline_grammar_with_fixpoint_and_disable():
    steps = parse_pipeline("infer-shapes, fixpoint(fold-constants,remove-dead-nodes),remove-dead-nodes",
                           disabled=frozenset({"infer-shapes"}))
    assert [s.name for s in steps] == ["fixpoint(fold-constants,remove-dead-nodes)", "remove-dead-nodes"]
    assert isinstance(steps[0], FixedPoint)


@pytest.mark.parametrize("spec, message", [
    ("no-such-pass", "unknown pass 'no-such-pass'"),
    ("fixpoint(fold-constants", "unclosed"),
    ("fold-constants)", "unbalanced"),
])
def test_bad_pipelines_are_user_errors(spec, message):
    with pytest.raises(UserInputError, match=message):
        parse_pipeline(spec)


def test_every_pass_has_a_unique_kebab_name_and_summary():
    names = [p.name for p in list_passes()]
    assert len(names) == len(set(names))
    assert all(p.summary for p in list_passes())


def test_a_pass_before_one_it_must_follow_is_refused():
    with pytest.raises(UserInputError, match="runs fuse-skip-layernorm before fuse-layernorm"):
        parse_pipeline("fuse-skip-layernorm,fuse-layernorm")
    assert [s.name for s in parse_pipeline("fuse-layernorm,fuse-skip-layernorm")] == ["fuse-layernorm", "fuse-skip-layernorm"]


@pytest.mark.parametrize("spec, emit", [("fuse-skip-layernorm", "onnx"), ("fuse-rotary", "plugin"), ("fuse-groupnorm", "ort")])
def test_an_emit_a_pass_cannot_honour_is_refused_at_parse(spec, emit):
    with pytest.raises(UserInputError, match=f"{spec} cannot emit '{emit}'"):
        parse_pipeline(spec, emit=emit)


@pytest.mark.parametrize("emit", ["onnx", "ort", "plugin"])
def test_presets_parse_for_every_emit_and_keep_only_passes_that_honour_it(emit):
    for preset in list_presets():
        steps = parse_pipeline(preset_pipeline(preset, emit), emit=emit)
        flat = [p for s in steps for p in (s.passes if isinstance(s, FixedPoint) else [s])]
        assert flat and all(not p.emits or emit in p.emits for p in flat)
    trt = preset_pipeline("trt", emit)
    assert ("fuse-skip-layernorm" in trt) == (emit != "onnx") and ("fuse-rotary" in trt) == (emit != "plugin")


def test_unknown_pass_option_is_refused():
    with pytest.raises(UserInputError, match="unknown pass option"):
        PassContext(options={"emitt": "onnx"})
    assert PassContext(options={"remove_ops": ["Identity"]}).options.remove_ops == ("Identity",)


def test_a_pass_breaking_its_own_promise_is_caught_by_ensures():
    from onnx import helper

    from passes.remove_dead_nodes import RemoveDeadNodesPass
    from surgery import to_graph
    from surgery.errors import VerificationError
    from tests.builders import make_model, tensor

    class _KeepsEverything(RemoveDeadNodesPass):
        def run(self, graph, ctx):
            return PassResult()

    nodes = [helper.make_node("Relu", ["x"], ["y"], name="used"), helper.make_node("Neg", ["x"], ["n"], name="dead")]
    graph = to_graph(make_model(nodes, [tensor("x", [2])], [tensor("y", [2])]))
    with pytest.raises(VerificationError, match="left 1 node"):
        _KeepsEverything()(graph, PassContext())
    assert RemoveDeadNodesPass()(graph, PassContext()).changed == 1
