"""PatternRewritePass core: emit validation, and an opset raise done once and only when a match is fused."""
from __future__ import annotations

import onnx_graphsurgeon as gs
import pytest
from onnx import helper

from surgery import PassContext, to_graph
from surgery.errors import UserInputError
from surgery.rewrite import PatternRewritePass
from tests.builders import make_model, tensor


class _ReluNeg(PatternRewritePass):
    """Relu(x) -> Neg, rewritten as fresh Relu and Neg nodes; needs opset 20 for emit=onnx (a made-up need)."""

    name = "toy-relu-neg"
    emits = ("onnx", "ort")

    def patterns(self, state):
        p = gs.GraphPattern()
        r = p.add("relu", "Relu", inputs=[p.variable()])
        p.set_output_tensors([p.add("neg", "Neg", inputs=[r])])
        return {"chain": (p, None)}

    def check(self, m, state):
        return True

    def required_opset(self, state):
        return 20 if state.emit == "onnx" else None

    def rewrite(self, m, plan, state, names):
        r = gs.Variable(names("_r"), dtype=m.outputs[0].dtype)
        return [gs.Node("Relu", name=names(), inputs=[m.inputs[0]], outputs=[r]),
                gs.Node("Neg", name=names(), inputs=[r], outputs=[m.outputs[0]])]


class _ReluNegAdd(_ReluNeg):
    """r = Relu(x); y = Add(Neg(x), v): in the graph below v = Abs(r), a path out of the match and back in."""

    name = "toy-relu-neg-add"

    def patterns(self, state):
        p = gs.GraphPattern()
        x, v = p.variable(), p.variable()
        r, n = p.add("relu", "Relu", inputs=[x]), p.add("neg", "Neg", inputs=[x])
        p.set_output_tensors([r, p.add("add", "Add", inputs=[n, v])])
        return {"fork": (p, None)}


def _chains(count: int, opset: int = 17) -> gs.Graph:
    nodes, outputs = [], []
    for i in range(count):
        nodes += [helper.make_node("Relu", ["x"], [f"r{i}"], name=f"relu{i}"),
                  helper.make_node("Neg", [f"r{i}"], [f"n{i}"], name=f"neg{i}")]
        outputs.append(tensor(f"n{i}", [2, 3]))
    return to_graph(make_model(nodes, [tensor("x", [2, 3])], outputs, opset=opset))


def _fork_through_abs() -> gs.Graph:
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Abs", ["r"], ["a"], name="abs"),
             helper.make_node("Neg", ["x"], ["n"], name="neg"), helper.make_node("Add", ["n", "a"], ["y"], name="add")]
    return to_graph(make_model(nodes, [tensor("x", [2, 3])], [tensor("y", [2, 3]), tensor("r", [2, 3])]))


def test_non_convex_match_leaves_the_opset_alone():
    graph = _fork_through_abs()
    result = _ReluNegAdd()(graph, PassContext())
    assert result.changed == 0 and result.stats["rejected:non-convex"] == 1
    assert int(graph.opset) == 17 and not any("opset" in n for n in result.notes)


@pytest.mark.parametrize("count", [1, 2])
def test_opset_raised_once_before_the_first_rewrite(count):
    graph = _chains(count)
    result = _ReluNeg()(graph, PassContext())
    assert result.changed == count and int(graph.opset) == 20
    assert [n for n in result.notes if "opset" in n] == ["opset raised 17 -> 20 for toy-relu-neg"]


def test_refused_raise_rejects_every_match_and_notes_once():
    graph = _chains(2)
    grid = gs.Variable("grid", dtype="float32")  # GridSample's schema changed at opset 20: the raise is refused
    graph.nodes.append(gs.Node("GridSample", name="gs", inputs=[graph.inputs[0], grid], outputs=[gs.Variable("g", dtype="float32")]))
    result = _ReluNeg()(graph, PassContext())
    assert result.changed == 0 and result.stats["rejected:opset-raise-refused"] == 2 and int(graph.opset) == 17
    assert result.notes == ["raising the opset to 20 was refused: GridSample-schema-changed-between-opset-17-and-20"]


def test_no_raise_when_not_needed():
    graph = _chains(1)
    assert _ReluNeg()(graph, PassContext(options={"emit": "ort"})).notes == [] and int(graph.opset) == 17
    graph = _chains(1, opset=21)
    assert _ReluNeg()(graph, PassContext()).notes == [] and int(graph.opset) == 21


def test_emit_outside_emits_is_a_user_error():
    with pytest.raises(UserInputError, match="toy-relu-neg: emit must be one of onnx, ort, got 'plugin'"):
        _ReluNeg()(_chains(1), PassContext(options={"emit": "plugin"}))
