"""Capability rules (converter/trt/rules.py): a rule registered for a new op decides that op's verdict in
the static table and in the check report; every built-in rule answers on some test case or sample."""
from __future__ import annotations

import dataclasses
import glob
import json
from pathlib import Path

import onnx
import pytest
from onnx import helper

from converter.cli.main import main
from converter.trt import remedies, rules
from converter.trt.backends import select_backend
from converter.trt.capability import check_model
from converter.trt.rules import NodeFacts, Verdict
from surgery.io import load_model
from surgery.plugins import PLUGIN_DOMAIN
from tests.converter import tiny

BUILT_IN = list(rules.RULES)
SAMPLES = sorted(glob.glob(str(Path(__file__).resolve().parents[2] / "sample_models" / "*.onnx")))
TOY = Verdict("unsupported", "toy-limit", "a Wibble with n > 2 does not fit", "set n to 2 or less")


def _wibble_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu1"),
             helper.make_node("Wibble", ["a"], ["b"], name="wibble", domain="toy.ops", n=3),
             helper.make_node("Relu", ["b"], ["y"], name="relu2")]
    model = tiny._model(nodes, [tiny._vi("x", [2, 4])], [tiny._vi("y", [2, 4])], opsets=(("", 17), ("toy.ops", 1)))
    model.graph.value_info.append(tiny._vi("a", [2, 4]))
    return model


@pytest.fixture
def toy_rule(monkeypatch):
    """A rule for the made-up op toy.ops:Wibble, registered on a copy of the registry for this test only."""
    monkeypatch.setattr(rules, "RULES", list(rules.RULES))
    stages: list[str] = []

    @rules.capability_rule("Wibble", why="'{op}' wibbles")
    def wibble_limit(node: NodeFacts) -> Verdict | None:
        stages.append(node.stage)
        assert node.input_shapes == ((2, 4),) and node.input_dtypes == ("FLOAT",)  # the facts reach the rule
        return TOY if node.attrs.get("n", 0) > 2 else None

    yield stages
    monkeypatch.undo()
    assert not any("Wibble" in r.ops for r in rules.RULES)  # gone again


def test_a_new_rule_decides_the_static_table_and_the_report(tmp_path, toy_rule):
    path = tiny.save(_wibble_model(), tmp_path, "wibble")
    report = check_model(path, select_backend("static"))
    node = next(n for n in report.nodes if n.name == "wibble")
    assert (node.status, node.kind, node.reason, node.remedy) == (TOY.status, TOY.kind, TOY.reason, TOY.remedy)
    assert set(toy_rule) == {rules.TABLE, rules.REPORT}
    assert [p.status for p in report.partitions] == ["supported", "unsupported", "supported"]
    out = tmp_path / "r.json"
    assert main(["check", path, "--backend", "static", "--json", str(out)]) == 1
    groups = json.loads(out.read_text())["unsupported"]
    assert [(g["kind"], g["nodes"], g["remedies"]) for g in groups] == [("toy-limit", ["wibble"], [TOY.remedy])]
    assert rules.translate("false", "Wibble") == "'Wibble' wibbles"


def test_without_the_rule_the_table_answers(tmp_path):
    path = tiny.save(_wibble_model(), tmp_path, "wibble")
    node = next(n for n in check_model(path, select_backend("static")).nodes if n.name == "wibble")
    assert (node.kind, node.remedy) == ("unsupported-op", remedies.NO_REMEDY) and "custom op 'Wibble'" in node.reason


@pytest.mark.trt
def test_a_new_rule_decides_after_the_parser(tmp_path, toy_rule):
    path = tiny.save(_wibble_model(), tmp_path, "wibble")
    report = check_model(path, select_backend("tensorrt-rtx"), build=False)
    node = next(n for n in report.nodes if n.name == "wibble")
    assert (node.status, node.kind, node.reason, node.remedy) == (TOY.status, TOY.kind, TOY.reason, TOY.remedy)
    assert node.detail  # the parser's own message stays as the detail
    assert toy_rule == [rules.REPORT]  # the parser named the node: the table was not asked


# (rule, node, what TensorRT said or None for the static flow, expected status and kind, words in reason + remedy)
CASES = [
    ("nonzero_needs_a_plugin_on_rtx", NodeFacts("NonZero"), None, ("unsupported", "unsupported-op"), "NonZero plugin"),
    ("scatter_reduction_on_rtx", NodeFacts("ScatterND", attrs={"reduction": "add"}), None,
     ("unsupported", "unsupported-op"), "reduction 'add'"),
    ("foreign_domain_collision", NodeFacts("LayerNormalization", "com.microsoft"), None,
     ("unsupported", "foreign-domain"), "ignores the domain"),
    ("data_dependent_shape", NodeFacts("Compress"), None, ("unsupported", "unsupported-op"), "surgery partition"),
    ("plugin_node", NodeFacts("MissingPlugin_TRT", PLUGIN_DOMAIN, {"plugin_version": "1"}), None,
     ("unsupported", "plugin-not-loaded"), "--plugins"),
    ("integer_quantized", NodeFacts("QGemm", "com.microsoft"), None, ("unsupported", "unsupported-op"), "QDQ"),
    ("attention_without_fused_kernel", NodeFacts("Attention"), Verdict("unsupported", "build-failure", "no kernel"),
     ("unsupported", "build-failure"), "--decomposable-attention"),
    ("parser_crash", NodeFacts("TopK"), Verdict("unsupported", "crash", "the TensorRT parser crashes (signal 11)"),
     ("unsupported", "crash"), "report it with this node"),
]


def _answering(facts: list[tuple[NodeFacts, Verdict | None]]) -> tuple[set[str], list[Verdict]]:
    """Run the built-in rules as a check does (the table, then the report on its verdict or on ``found``);
    returns the names of the rules that answered and the final verdicts."""
    answered: set[str] = set()

    def recording(rule: rules.Rule) -> rules.Rule:
        def check(node: NodeFacts) -> Verdict | None:
            verdict = rule.check(node)
            if verdict is not None:
                answered.add(rule.check.__name__)
            return verdict
        return dataclasses.replace(rule, check=check)

    saved = rules.RULES
    rules.RULES = [recording(r) for r in BUILT_IN]
    try:
        verdicts = [rules.review(node, found or rules.classify(node)) for node, found in facts]
    finally:
        rules.RULES = saved
    return answered, verdicts


@pytest.mark.parametrize("name,node,found,expected,words", CASES, ids=[c[0] for c in CASES])
def test_built_in_rule(name, node, found, expected, words):
    answered, [verdict] = _answering([(node, found)])
    assert name in answered
    assert (verdict.status, verdict.kind) == expected
    assert words in verdict.reason + " " + verdict.remedy


@pytest.mark.parametrize("op", sorted(remedies.QUANTIZED_OPS))
def test_every_quantized_op_is_explained_and_remedied(op):
    assert rules.translate("false", op) == remedies.QUANTIZED_REASON.format(op=op)
    answered, [verdict] = _answering([(NodeFacts(op), Verdict("unsupported", "unsupported-op", "false"))])
    assert "integer_quantized" in answered and verdict.remedy == remedies.QUANTIZED_REMEDY


def _model_facts() -> list[tuple[NodeFacts, None]]:
    models = [fn() for fn in tiny.TINY.values()] + [load_model(p).model for p in SAMPLES]
    return [(f, None) for m in models for target in ("tensorrt", "tensorrt-rtx") for f in rules.node_facts(m, target)]


def test_every_built_in_rule_is_covered_by_a_rule_test_or_a_sample():
    answered, _ = _answering([(node, found) for _, node, found, _, _ in CASES] + _model_facts())
    assert {r.check.__name__ for r in BUILT_IN} <= answered
    named = {op for r in BUILT_IN for op in r.ops if op != rules.ANY}
    seen = {node.op for _, node, *_ in CASES} | set(remedies.QUANTIZED_OPS) | {f.op for f, _ in _model_facts()}
    assert named <= seen, f"ops of built-in rules no test or sample has: {sorted(named - seen)}"
