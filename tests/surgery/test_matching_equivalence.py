"""``surgery.matching.match_all(p, g)`` returns what ``p.match_all(g)`` (onnx-graphsurgeon) returns,
mapping for mapping, in the same order, leaving out the partial mappings gs returns when a pattern
output also feeds a pattern node (see ``surgery.matching``; ``test_partial_gs_matches_are_dropped``).

Seeded property test (plain ``random``, fixed seeds): random small graphs of Relu/Neg/Sigmoid/
Transpose/Add/Mul/Split with shared inputs, shared and private constants, fan-out, repeated inputs
(``Mul(t, t)``), graph outputs in the middle, shuffled node lists and the odd duplicate node name;
against hand-written patterns (single ops, chains of 2-4, ``Mul(x, Sigmoid(x))``, constant inputs,
an internal fan-out, a middle output, nested sub-patterns, check_funcs, every commuted order both
from ``commuted_patterns`` and built from scratch) and patterns cut out of random graphs (so most of
them match somewhere). Each graph is matched, mutated in place (an op renamed, an input rewired, a
node appended or removed), and matched again, which exercises the per-graph index's invalidation.
"""
from __future__ import annotations

import random
import time

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from surgery import matching
from surgery.graph_utils import _build_pattern, commuted_patterns

UNARY = ("Relu", "Neg", "Sigmoid", "Transpose")
BINARY = ("Add", "Mul")
SEEDS = range(12)
GRAPHS_PER_SEED = 6


@pytest.fixture(autouse=True)
def _quiet_graphsurgeon():
    with gs.logger.G_LOGGER.suppress(gs.logger.G_LOGGER.CRITICAL):  # GraphPattern logs every probe at INFO
        yield


# ---------------------------------------------------------------- comparison


def _names(tensors) -> tuple:
    return tuple(None if t is None else t.name for t in tensors)


def _key(m: gs.PatternMapping, pos: dict[int, int]) -> tuple:
    """What a mapping binds: each pattern node's graph node (name and place in graph.nodes),
    recursively for nested patterns, and the boundary tensors and constants by name."""
    bound = []
    for name in m:
        sub = m[name]
        if sub.onnx_node is not None:
            bound.append((name, sub.onnx_node.name, pos.get(id(sub.onnx_node))))
        else:
            bound.append((name, _key(sub, pos)))
    consts = tuple(sorted((k, v.name) for k, v in m.constants.items()))
    return tuple(bound), _names(m.inputs), _names(m.outputs), consts


def _outcome(fn):
    try:
        return "ok", fn()
    except Exception as e:  # noqa: BLE001 -- compared: gs and ours must fail alike
        return "raised", type(e)


def _assert_same(pattern: gs.GraphPattern, graph: gs.Graph, where: str) -> int:
    """Assert both matchers agree; return the number of matches."""
    want = _outcome(lambda: [m for m in pattern.match_all(graph) if matching.complete(m, pattern)])
    got = _outcome(lambda: matching.match_all(pattern, graph))
    assert want[0] == got[0], f"{where}: gs {want} vs ours {got}"
    if want[0] == "raised":
        assert want[1] is got[1], f"{where}: gs raised {want[1]}, ours {got[1]}"
        return 0
    pos = {id(n): i for i, n in enumerate(graph.nodes)}
    w = [_key(m, pos) for m in want[1]]
    g = [_key(m, pos) for m in got[1]]
    assert g == w, f"{where}:\n gs:   {w}\n ours: {g}"
    assert all(not hasattr(n, "id") for n in graph.nodes), f"{where}: node ids left behind"
    return len(w)


# ---------------------------------------------------------------- random graphs


def random_graph(rng: random.Random, n_nodes: int, tag: str = "") -> gs.Graph:
    inputs = [gs.Variable(f"{tag}in{i}", dtype=np.float32, shape=(2, 2)) for i in range(rng.randint(1, 2))]
    shared = [gs.Constant(f"{tag}k{i}", np.full((1,), float(i), np.float32)) for i in range(2)]
    pool: list[gs.Tensor] = list(inputs)
    nodes: list[gs.Node] = []

    def pick(i: int, j: int) -> gs.Tensor:
        r = rng.random()
        if r < 0.15:
            return rng.choice(shared)
        if r < 0.22:
            return gs.Constant(f"{tag}c{i}_{j}", np.ones((1,), np.float32))
        return pool[-1 - min(int(rng.expovariate(0.6)), len(pool) - 1)]  # mostly recent: chains

    for i in range(n_nodes):
        r = rng.random()
        op = rng.choice(UNARY) if r < 0.5 else (rng.choice(BINARY) if r < 0.95 else "Split")
        if op in BINARY:
            a = pick(i, 0)
            ins = [a, a] if rng.random() < 0.1 else [a, pick(i, 1)]
        else:
            ins = [pick(i, 0)]
        outs = [gs.Variable(f"{tag}t{i}_{k}", dtype=np.float32) for k in range(2 if op == "Split" else 1)]
        attrs = {"perm": rng.choice([[0, 1], [1, 0]])} if op == "Transpose" else {}
        name = f"{tag}n{i}"
        if i and rng.random() < 0.03:
            name = nodes[rng.randrange(i)].name  # a duplicate name (gs compares some edges by name)
        nodes.append(gs.Node(op, name=name, attrs=attrs, inputs=ins, outputs=outs))
        pool.extend(outs)
    outputs = [t for n in nodes for t in n.outputs if not t.outputs]
    outputs += [t for n in nodes for t in n.outputs if t.outputs and rng.random() < 0.12]  # middle outputs
    if rng.random() < 0.25:
        rng.shuffle(nodes)  # gs tries nodes in list order, whatever it is
    return gs.Graph(nodes=nodes, inputs=inputs, outputs=outputs)


def mutate(rng: random.Random, graph: gs.Graph) -> None:
    """One in-place edit of the kind a rewrite makes between two match_all calls."""
    nodes = graph.nodes
    kind = rng.randrange(4)
    if kind == 0:
        rng.choice(nodes).op = rng.choice(UNARY + BINARY)
    elif kind == 1:
        node = rng.choice(nodes)
        others = [t for n in nodes for t in n.outputs if n is not node] + list(graph.inputs)
        node.inputs[rng.randrange(len(node.inputs))] = rng.choice(others)
    elif kind == 2:
        src = rng.choice([t for n in nodes for t in n.outputs])
        nodes.append(gs.Node(rng.choice(UNARY), name=f"extra{len(nodes)}", inputs=[src],
                             outputs=[gs.Variable(f"extra_t{len(nodes)}", dtype=np.float32)]))
    elif len(nodes) > 1:
        victim = nodes.pop(rng.randrange(len(nodes)))
        victim.inputs.clear()
        victim.outputs.clear()


# ---------------------------------------------------------------- patterns


def _perm_is(perm):
    return lambda n: n.attrs.get("perm") == perm


def _even_name(n: gs.Node) -> bool:
    return n.name[-1:] in "02468"


# (name, variables, nodes, outputs); node inputs: a variable, '$const' or an earlier node's name
HAND_WRITTEN = [
    ("relu", ["x"], [("a", "Relu", ["x"])], ["a"]),
    ("add", ["x", "y"], [("a", "Add", ["x", "y"])], ["a"]),
    ("mul-xx", ["x"], [("m", "Mul", ["x", "x"])], ["m"]),
    ("relu-neg", ["x"], [("a", "Relu", ["x"]), ("b", "Neg", ["a"])], ["b"]),
    ("relu-neg-sig", ["x"], [("a", "Relu", ["x"]), ("b", "Neg", ["a"]), ("c", "Sigmoid", ["b"])], ["c"]),
    ("chain4", ["x"], [("a", "Neg", ["x"]), ("b", "Relu", ["a"]), ("c", "Sigmoid", ["b"]), ("d", "Neg", ["c"])], ["d"]),
    ("swish", ["x"], [("s", "Sigmoid", ["x"]), ("m", "Mul", ["x", "s"])], ["m"]),
    ("add-const", ["x"], [("a", "Add", ["x", "$c"])], ["a"]),
    ("add-const-relu", ["x"], [("a", "Add", ["x", "$c"]), ("r", "Relu", ["a"])], ["r"]),
    ("same-const-twice", ["x"], [("a", "Add", ["x", "$c"]), ("m", "Mul", ["a", "$c"])], ["m"]),
    ("quick-gelu", ["x"], [("sx", "Mul", ["x", "$alpha"]), ("sig", "Sigmoid", ["sx"]), ("out", "Mul", ["x", "sig"])], ["out"]),
    ("fork", ["x"], [("a", "Relu", ["x"]), ("b", "Neg", ["a"]), ("c", "Sigmoid", ["a"]), ("d", "Add", ["b", "c"])], ["d"]),
    ("middle-output", ["x"], [("a", "Relu", ["x"]), ("b", "Neg", ["a"])], ["a", "b"]),
    ("x-thrice", ["x"], [("a", "Relu", ["x"]), ("b", "Neg", ["x"]), ("m", "Mul", ["a", "b"]), ("o", "Add", ["m", "x"])], ["o"]),
    ("two-vars", ["x", "y"], [("a", "Add", ["x", "y"]), ("b", "Mul", ["a", "y"])], ["b"]),
    ("two-vars-late", ["y", "x"], [("a", "Add", ["x", "y"]), ("b", "Mul", ["a", "x"])], ["b"]),
    ("two-outputs", ["x"], [("a", "Neg", ["x"]), ("b", "Relu", ["a"]), ("c", "Sigmoid", ["a"])], ["b", "c"]),
    ("checked-transpose", ["x"], [("t", "Transpose", ["x"], _perm_is([1, 0])), ("r", "Relu", ["t"])], ["r"]),
    ("checked-inner", ["x"], [("a", "Neg", ["x"]), ("b", "Add", ["a", "x"], _even_name), ("c", "Relu", ["b"])], ["c"]),
    ("mul-add", ["x", "y", "z"], [("m", "Mul", ["x", "y"]), ("a", "Add", ["m", "z"])], ["a"]),
]


def _split_pattern() -> gs.GraphPattern:
    p = gs.GraphPattern()
    x = p.variable()
    s0, s1 = p.add("s", "Split", inputs=[x], num_output_tensors=2)
    p.set_output_tensors([p.add("a", "Add", inputs=[s0, s1])])
    return p


def _nested_patterns() -> list[tuple[str, gs.GraphPattern]]:
    inner = gs.GraphPattern()
    x = inner.variable()
    inner.set_output_tensors([inner.add("n", "Neg", inputs=[inner.add("r", "Relu", inputs=[x])])])
    entry = gs.GraphPattern()  # the sub-pattern is the entry
    x = entry.variable()
    entry.set_output_tensors([entry.add("sig", "Sigmoid", inputs=[entry.add("inner", inner, inputs=[x])])])
    late = gs.GraphPattern()  # the sub-pattern comes after a leaf
    x = late.variable()
    late.set_output_tensors([late.add("inner", inner, inputs=[late.add("s", "Sigmoid", inputs=[x])])])
    return [("nested-entry", entry), ("nested-late", late)]


def _swap_spec(nodes, swapped: set[str]):
    return [(n[0], n[1], n[2][::-1] if n[0] in swapped else n[2], *n[3:]) for n in nodes]


def variants(name, variables, nodes, outputs) -> list[tuple[str, gs.GraphPattern]]:
    """Every commuted order as ``commuted_patterns`` builds it (input swaps of one shared base) and as
    a from-scratch build of the swapped spec: the two must match alike."""
    out = []
    flips = [n[0] for n in nodes if n[1] in ("Add", "Mul") and len(n[2]) == 2 and n[2][0] != n[2][1]]
    for order, p in commuted_patterns(variables, nodes, outputs):
        out.append((f"{name}:{order}", p))
        swapped = {f for f, c in zip(flips, order) if c == "s"}
        if swapped:
            out.append((f"{name}:{order}:fresh", _build_pattern(variables, _swap_spec(nodes, swapped), outputs)))
    return out


FIXED: list[tuple[str, gs.GraphPattern]] = [v for spec in HAND_WRITTEN for v in variants(*spec)]
FIXED += [("split-add", _split_pattern())] + _nested_patterns()


def cut_pattern(rng: random.Random, graph: gs.Graph, size: int):
    """A connected piece of ``graph`` as a pattern spec (so it matches there at least once, unless
    gs itself misses it), or None."""
    nodes = [n for n in graph.nodes if len(n.outputs) == 1]
    if not nodes:
        return None
    chosen = [rng.choice(nodes)]
    while len(chosen) < size:
        frontier = [m for n in chosen for t in n.inputs + n.outputs for m in t.inputs + t.outputs
                    if m not in chosen and len(m.outputs) == 1]
        if not frontier:
            break
        chosen.append(rng.choice(frontier))
    inside = {id(n) for n in chosen}
    order = [n for n in graph.nodes if id(n) in inside]
    # producers first (the node list may be shuffled)
    done: list[gs.Node] = []
    while order:
        for n in order:
            if all(not t.inputs or id(t.inputs[0]) not in inside or t.inputs[0] in done for t in n.inputs):
                done.append(n)
                order.remove(n)
                break
        else:
            return None
    names = {id(n): f"p{k}" for k, n in enumerate(done)}
    variables: list[str] = []
    spec = []
    for n in done:
        ins = []
        for t in n.inputs:
            if t.inputs and id(t.inputs[0]) in inside:
                ins.append(names[id(t.inputs[0])])
            elif isinstance(t, gs.Constant) and rng.random() < 0.8:
                ins.append("$" + t.name)
            else:
                v = "v_" + t.name
                if v not in variables:
                    variables.append(v)
                ins.append(v)
        check = (_perm_is(n.attrs["perm"]),) if n.op == "Transpose" and rng.random() < 0.5 else ()
        spec.append((names[id(n)], n.op, ins, *check))
    if not variables:
        return None
    graph_outputs = {t.name for t in graph.outputs}
    outputs = [names[id(n)] for n in done
               if n.outputs[0].name in graph_outputs or any(id(c) not in inside for c in n.outputs[0].outputs)
               or rng.random() < 0.1]
    outputs = outputs or [names[id(done[-1])]]
    rng.shuffle(variables)  # the first variable picks the entry node
    return variables, spec, outputs


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("seed", SEEDS)
def test_same_matches_as_graphsurgeon(seed):
    rng = random.Random(seed)
    cases = matches = 0
    for g_i in range(GRAPHS_PER_SEED):
        graph = random_graph(rng, rng.randint(3, 10))
        cut = []
        for c_i in range(3):
            spec = cut_pattern(rng, graph, rng.randint(1, 4))
            if spec is not None:
                cut += variants(f"cut{c_i}", *spec)
        for round_ in range(2):
            for name, pattern in FIXED + cut:
                matches += _assert_same(pattern, graph, f"seed {seed} graph {g_i} round {round_} pattern {name}")
                cases += 1
            mutate(rng, graph)
    assert cases >= 200
    assert matches > 0


def test_many_cases_quickly():
    """The property test's size and speed: enough cases, well within the budget."""
    rng = random.Random(99)
    start, cases, matches = time.perf_counter(), 0, 0
    for _ in range(10):
        graph = random_graph(rng, 8)
        for name, pattern in FIXED:
            matches += _assert_same(pattern, graph, name)
            cases += 1
    assert cases >= 200 and matches > 0
    assert time.perf_counter() - start < 20


def test_partial_gs_matches_are_dropped():
    """p0 = Mul(x, k); p1 = Mul(p0, c) with both p0 and p1 pattern outputs: on a graph with one Mul,
    gs maps p0 alone and leaves p1 unmapped; that half-match is no match."""
    from onnx import helper

    from surgery import to_graph
    from tests.builders import make_model, tensor

    pattern = _build_pattern(["x"], [("p0", "Mul", ["x", "$k"]), ("p1", "Mul", ["p0", "$c"])], ["p0", "p1"])
    model = make_model([helper.make_node("Mul", ["a", "k"], ["y"], name="mul")], [tensor("a", [2])], [tensor("y", [2])],
                       [helper.make_tensor("k", 1, [1], [2.0])])
    graph = to_graph(model)
    partial = pattern.match_all(graph)
    assert len(partial) == 1 and "p1" not in partial[0] and not matching.complete(partial[0], pattern)
    assert matching.match_all(pattern, graph) == []
