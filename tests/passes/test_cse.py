from __future__ import annotations

import copy
from collections import Counter

from tests.builders import cse_model, cse_outputs_model, cse_random_model
from tests.helpers import apply_pass, assert_same_outputs, ops, same_graph


def test_merges_constants_then_whole_duplicate_branch():
    model = cse_model()
    out, result = apply_pass(model, "cse")
    assert ops(out) == Counter({"Relu": 1, "Add": 1, "Mul": 1})
    assert result.changed == 3  # one constant, then Relu, then the Add that only matched after both
    assert result.stats["constants"] == 1
    assert result.stats["nodes"] == 2
    assert [i.name for i in out.graph.initializer] == ["c1"]
    mul = next(n for n in out.graph.node if n.op_type == "Mul")
    assert mul.input[0] == mul.input[1]
    assert [o.name for o in out.graph.output] == ["y"]
    assert_same_outputs(model, out)
    _, again = apply_pass(out, "cse")
    assert again.changed == 0


def test_constant_over_size_limit_is_not_deduplicated():
    model = cse_model()
    out, result = apply_pass(model, "cse", max_const_bytes=8)
    assert ops(out) == Counter({"Relu": 1, "Add": 2, "Mul": 1})
    assert result.changed == 1
    assert "constants" not in result.stats
    assert_same_outputs(model, out)


def test_duplicate_producing_graph_output_hands_its_name_to_the_kept_node():
    model = cse_outputs_model(both=False)
    out, result = apply_pass(model, "cse")
    assert ops(out) == Counter({"Relu": 1, "Sigmoid": 1})
    assert result.changed == 1
    assert [o.name for o in out.graph.output] == ["y1", "y2"]
    relu = next(n for n in out.graph.node if n.op_type == "Relu")
    assert list(relu.output) == ["y2"]
    assert_same_outputs(model, out)
    _, again = apply_pass(out, "cse")
    assert again.changed == 0


def test_rejects_non_deterministic():
    model = cse_random_model()
    before = copy.deepcopy(model)
    out, result = apply_pass(model, "cse")
    assert result.changed == 0
    assert result.stats["rejected:non-deterministic"] == 1
    assert same_graph(out, before)


def test_rejects_two_graph_outputs():
    model = cse_outputs_model(both=True)
    before = copy.deepcopy(model)
    out, result = apply_pass(model, "cse")
    assert result.changed == 0
    assert result.stats["rejected:both-graph-outputs"] == 1
    assert same_graph(out, before)


def test_a_constant_given_new_values_between_runs_is_keyed_again():
    import numpy as np  # noqa: PLC0415
    import onnx  # noqa: PLC0415
    import onnx_graphsurgeon as gs  # noqa: PLC0415

    from surgery import PassContext, to_graph  # noqa: PLC0415
    from surgery.registry import get_pass  # noqa: PLC0415

    model = cse_model()
    model.graph.initializer[1].CopyFrom(onnx.numpy_helper.from_array(np.arange(4, dtype=np.float32) + 1, "c2"))
    graph = to_graph(model)
    cse = get_pass("cse")  # one instance across runs, as in a fixed-point group
    assert "constants" not in cse(graph, PassContext()).stats  # c1 != c2: no merge, both keys cached
    c2 = next(t for t in graph.tensors().values() if isinstance(t, gs.Constant) and t.name == "c2")
    c2.values = np.arange(4, dtype=np.float32)  # now equal to c1
    assert cse(graph, PassContext()).stats["constants"] == 1
