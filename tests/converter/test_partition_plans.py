"""Partitions condense the data-flow graph into a DAG: hand-built cycles, random graphs, saved plans that
rerun the samples on onnxruntime, and ``check --save-partitions`` == ``partition``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import networkx as nx
import numpy as np
import onnx
import pytest
from onnx import helper

from converter.cli.main import main
from converter.runtime.partitions import Partition, boundary, find_partitions, save_partitions
from converter.runtime.numerics import load_spec, random_feeds, run_ort
from tests.builders import make_model, tensor
from tests.samples import sample_path, spec_path

S, U = "supported", "unsupported"
BACKENDS = ["static", pytest.param("tensorrt-rtx", marks=pytest.mark.trt)]
SPLIT_SAMPLES = ["hostile_unique", "hostile_scatter", "hostile_mask"]  # unsupported nodes under both backends
WHOLE_SAMPLES = ["hostile_topk", "hostile_loop", "hostile_einsum", "hostile_int64"]  # one partition now


def _node(op: str, inputs: Sequence[str], output: str) -> onnx.NodeProto:
    return helper.make_node(op, list(inputs), [output], name=output)


def _model(nodes: Sequence[onnx.NodeProto], outputs: Sequence[str]) -> onnx.ModelProto:
    return make_model(nodes, [tensor("x", [4])], [tensor(o, [4]) for o in outputs])


def _plan_graph(parts: Sequence[Partition]) -> nx.DiGraph:
    """Partition ids with an edge producer -> consumer for every tensor one partition hands another."""
    producer = {t: p.id for p in parts for t in p.outputs}
    g = nx.DiGraph()
    g.add_nodes_from(p.id for p in parts)
    g.add_edges_from((producer[t], p.id) for p in parts for t in p.inputs if t in producer)
    return g


def _assert_valid(parts: Sequence[Partition], statuses: Sequence[str]) -> nx.DiGraph:
    """A DAG whose ids run in order, every node once, one status per partition, none mergeable."""
    g = _plan_graph(parts)
    assert nx.is_directed_acyclic_graph(g)
    assert all(u < v for u, v in g.edges), "ids are not a topological order"
    assert [p.id for p in parts] == list(range(len(parts)))
    assert sorted(i for p in parts for i in p.indices) == list(range(len(statuses)))
    for p in parts:
        assert {statuses[i] for i in p.indices} == {p.status}
    for p in parts:
        for q in parts:
            if p.id < q.id and p.status == q.status:
                merged = nx.contracted_nodes(g, p.id, q.id, self_loops=False)
                assert not nx.is_directed_acyclic_graph(merged), f"partitions {p.id} and {q.id} could be one"
    return g


def _naive_is_cyclic(model: onnx.ModelProto, statuses: Sequence[str]) -> bool:
    """Whether grouping all nodes of one status together would make partitions depend on each other."""
    naive = [Partition(k, s, [], *boundary(model, [i for i, t in enumerate(statuses) if t == s]))
             for k, s in enumerate(sorted(set(statuses)))]
    return not nx.is_directed_acyclic_graph(_plan_graph(naive))


def _layout(parts: Sequence[Partition]) -> list[tuple[str, list[str]]]:
    return [(p.status, p.nodes) for p in parts]


def test_direct_edge_beside_an_unsupported_path() -> None:
    """a -> u -> b and a -> b: a and b are weakly connected, yet one partition of both would feed u and eat it."""
    model = _model([_node("Relu", ["x"], "a"), _node("Sigmoid", ["a"], "u"), _node("Add", ["a", "u"], "b")], ["b"])
    statuses = [S, U, S]
    assert _naive_is_cyclic(model, statuses)
    parts = find_partitions(model, statuses)
    assert _layout(parts) == [(S, ["a"]), (U, ["u"]), (S, ["b"])]
    assert list(_assert_valid(parts, statuses).edges) == [(0, 1), (0, 2), (1, 2)]


def test_supported_branch_beside_an_unsupported_one() -> None:
    """s1 -> u1 -> s2 and s1 -> s2b, y = s2 + s2b: s2b joins s1, s2 and y form a partition after u1."""
    nodes = [_node("Relu", ["x"], "s1"), _node("Sigmoid", ["s1"], "u1"), _node("Relu", ["u1"], "s2"),
             _node("Neg", ["s1"], "s2b"), _node("Add", ["s2", "s2b"], "y")]
    model = _model(nodes, ["y"])
    statuses = [S, U, S, S, S]
    assert _naive_is_cyclic(model, statuses)
    parts = find_partitions(model, statuses)
    assert _layout(parts) == [(S, ["s1", "s2b"]), (U, ["u1"]), (S, ["s2", "y"])]
    assert parts[0].outputs == ["s1", "s2b"] and parts[2].inputs == ["u1", "s2b"]
    _assert_valid(parts, statuses)


def test_unsupported_nodes_on_two_levels() -> None:
    """u1 and u2 independent but u2 reads what u1's consumer made: two unsupported partitions, in order."""
    nodes = [_node("Sigmoid", ["x"], "u1"), _node("Relu", ["u1"], "s1"), _node("Sigmoid", ["s1"], "u2"),
             _node("Relu", ["x"], "s0"), _node("Add", ["u2", "s0"], "y")]
    model = _model(nodes, ["y"])
    statuses = [U, S, U, S, S]
    parts = find_partitions(model, statuses)
    assert _layout(parts) == [(U, ["u1"]), (S, ["s1", "s0"]), (U, ["u2"]), (S, ["y"])]
    _assert_valid(parts, statuses)


def test_disconnected_regions_of_one_status_share_a_partition() -> None:
    model = _model([_node("Relu", ["x"], "a"), _node("Sigmoid", ["x"], "u"), _node("Neg", ["x"], "b")], ["a", "u", "b"])
    parts = find_partitions(model, [S, U, S])
    assert _layout(parts) == [(S, ["a", "b"]), (U, ["u"])]


def _random_model(seed: int, size: int) -> tuple[onnx.ModelProto, list[str]]:
    """A random DAG of Relu/Add nodes over x, with random statuses."""
    rng = np.random.default_rng(seed)
    names, nodes, used = ["x"], [], set()
    for i in range(size):
        inputs = list(rng.choice(names, size=min(len(names), int(rng.integers(1, 3))), replace=False))
        used.update(inputs)
        nodes.append(_node("Add" if len(inputs) == 2 else "Relu", inputs, f"n{i}"))
        names.append(f"n{i}")
    outputs = [n for n in names[1:] if n not in used]
    statuses = list(rng.choice([S, U, "unknown"], size=size, p=[0.6, 0.3, 0.1]))
    return _model(nodes, outputs), statuses


@pytest.mark.parametrize("seed", range(12))
def test_random_graphs_make_a_dag_that_reruns_the_model(tmp_path: Path, seed: int) -> None:
    model, statuses = _random_model(seed, size=25)
    parts = find_partitions(model, statuses)
    _assert_valid(parts, statuses)
    assert _layout(find_partitions(model, statuses)) == _layout(parts)
    save_partitions(model, parts, tmp_path)
    feeds = {"x": np.random.default_rng(seed).standard_normal(4).astype(np.float32)}
    _assert_same(run_ort(model, feeds), _run_plans(sorted(tmp_path.glob("partition_*.onnx")), feeds))


def _run_plans(files: Sequence[Path], feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the saved partitions in file (= id) order, each fed from the inputs and earlier outputs."""
    env = dict(feeds)
    for f in files:
        sub = onnx.load(str(f))
        missing = [i.name for i in sub.graph.input if i.name not in env]
        assert not missing, f"{f.name} runs before {missing} exist"
        env.update(run_ort(sub, {i.name: env[i.name] for i in sub.graph.input}))
    return env


def _assert_same(ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> None:
    for name, want in ref.items():
        if want.dtype.kind in "iub":
            np.testing.assert_array_equal(got[name], want, err_msg=name)
        else:
            np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def _check_and_partition(tmp_path: Path, model: Path, backend: str) -> tuple[list[dict], dict]:
    """`check --save-partitions` (its JSON partitions) and `partition` (its manifest) on one model."""
    report = tmp_path / "check.json"
    main(["check", str(model), "--backend", backend, "--save-partitions", str(tmp_path / "check"), "--json", str(report)])
    assert main(["partition", str(model), "-o", str(tmp_path / "part"), "--backend", backend]) == 0
    return json.loads(report.read_text())["partitions"], json.loads((tmp_path / "part" / "manifest.json").read_text())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", SPLIT_SAMPLES + WHOLE_SAMPLES)
def test_saved_sample_plans_rerun_the_model(tmp_path: Path, name: str, backend: str) -> None:
    checked, manifest = _check_and_partition(tmp_path, sample_path(name), backend)
    statuses = {p["status"] for p in checked}
    assert statuses == ({S, U} if name in SPLIT_SAMPLES else {S})
    assert [(p["status"], p["nodes"]) for p in checked] == [(p["status"], p["nodes"]) for p in manifest["partitions"]]
    files = sorted((tmp_path / "check").glob("partition_*.onnx"))
    assert [f.name for f in files] == [p["file"] for p in manifest["partitions"]]
    feeds = random_feeds(load_spec(spec_path(name)), seed=0)
    ref = run_ort(str(sample_path(name)), feeds)
    _assert_same(ref, _run_plans(files, feeds))
    _assert_same(ref, _run_plans([tmp_path / "part" / p["file"] for p in manifest["partitions"]], feeds))


def _nonzero_cycle_model() -> onnx.ModelProto:
    """a = Relu(x); s = ReduceSum(Cast(NonZero(a))); y = a + s: the supported nodes are weakly connected
    yet must be two partitions around NonZero."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("NonZero", ["a"], ["nz"], name="nonzero"),
             helper.make_node("Cast", ["nz"], ["nzf"], name="cast", to=onnx.TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["nzf"], ["s"], name="rsum", keepdims=0),
             helper.make_node("Add", ["a", "s"], ["y"], name="add")]
    return make_model(nodes, [tensor("x", [6])], [tensor("y", [6])])


@pytest.mark.parametrize("backend", BACKENDS)
def test_check_and_partition_split_a_cycle_alike(tmp_path: Path, backend: str) -> None:
    onnx.save(_nonzero_cycle_model(), tmp_path / "cyc.onnx")
    checked, manifest = _check_and_partition(tmp_path, tmp_path / "cyc.onnx", backend)
    layout = [(S, ["relu"]), (U, ["nonzero"]), (S, ["cast", "rsum", "add"])]
    assert [(p["status"], p["nodes"]) for p in checked] == layout
    assert [(p["status"], p["nodes"]) for p in manifest["partitions"]] == layout
    feeds = {"x": np.array([1, -1, 2, 0, -3, 4], np.float32)}
    _assert_same(run_ort(str(tmp_path / "cyc.onnx"), feeds), _run_plans(sorted((tmp_path / "check").glob("*.onnx")), feeds))
