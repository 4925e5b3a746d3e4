"""Fast ``GraphPattern`` matching: the same matches as ``pattern.match_all(graph)``, in the same order.

gs tries every graph node as the pattern's entry and fails most only after some recursion, a few
log-message formats and a ``node_ids()`` pass that sets an attribute on every node. Fusion passes try
hundreds of commuted variants per run, so that overhead dominated. Here a candidate is handed to
``GraphPattern.match`` only when it could succeed:

1. the graph holds at least as many nodes of each op as the pattern requires (``required_ops``);
2. the candidate has the entry node's op and its immediate neighbourhood agrees with the entry
   node's (``_EntryCheck``): input and output counts, constant inputs, a repeated pattern input,
   producer ops of internal inputs, consumer ops of internal outputs (no others), internal outputs
   not graph outputs;
3. the same holds over the rest of the pattern wherever the mapping is forced (``_Walk``).

Each of these is a condition ``GraphPattern._match_node`` itself enforces, so skipping a candidate
that fails one never loses a match.

One deliberate difference: gs 0.6 does not walk on from a pattern output tensor, so when a pattern
output also feeds another pattern node it can return a mapping that leaves pattern nodes unmapped.
A rewrite of such a partial match would replace nodes it never looked at, so those are dropped here.
"""
from __future__ import annotations

import operator
import weakref
from collections import Counter

import onnx_graphsurgeon as gs

__all__ = ["OpIndex", "complete", "entry_op", "match_all", "required_ops"]

_OP = operator.attrgetter("op")


def entry_op(pattern: gs.GraphPattern, tensor_index: int = 0) -> str | None:
    """The op of the pattern node that ``GraphPattern.match`` compares a candidate node against
    first (through nested patterns), or None when it cannot be told."""
    while pattern.op is None:
        tensor, first = pattern._get_inbound(tensor_index)
        if first is None:
            return None
        tensor_index = pattern._get_tensor_index_for_node(first, tensor, is_node_input=True)
        pattern = pattern.nodes[first]
    return pattern.op


def _entry_node(pattern: gs.GraphPattern) -> str | None:
    """The pattern node ``GraphPattern.match`` maps a candidate to first (gs's ``_get_inbound(0)``)."""
    return pattern._get_inbound(0)[1]


def required_ops(pattern: gs.GraphPattern) -> Counter[str]:
    """Op types (with multiplicity) that every match of ``pattern`` maps to distinct graph nodes.

    ``GraphPattern.match`` walks from the entry node along the pattern's internal tensors (to their
    producers and consumers), so every single-op node connected to the entry that way is in each
    match, each on its own graph node. Nodes reached only through a pattern input, and the insides
    of nested patterns, are left out: the count is a lower bound, never more than a match needs.
    """
    entry = _entry_node(pattern) if pattern.op is None else None
    if entry is None:
        return Counter()
    seen, todo = {entry}, [entry]
    while todo:
        name = todo.pop()
        for t in pattern.node_inputs[name] + pattern.node_outputs[name]:
            if not pattern.tensor_inputs.get(t):
                continue  # a pattern input or constant: gs does not walk through it
            for other in pattern.tensor_inputs[t] + pattern.tensor_outputs.get(t, []):
                if other not in seen:
                    seen.add(other)
                    todo.append(other)
    return Counter(pattern.nodes[n].op for n in seen if pattern.nodes[n].op is not None)


class _EntryCheck:
    """Necessary conditions on a candidate for the entry node of ``pattern`` (see the module doc)."""

    def __init__(self, pattern: gs.GraphPattern, entry: str) -> None:
        p = pattern
        ins, outs = p.node_inputs[entry], p.node_outputs[entry]
        self.n_in, self.n_out = len(ins), len(outs)
        self.consts: list[int] = []
        self.same: list[tuple[int, int]] = []  # (j, k): input j is the pattern input first seen at k
        self.producers: list[tuple[int, int, str]] = []  # (j, producer count, op of the producer)
        first_at: dict[int, int] = {}
        for j, t in enumerate(ins):
            if t in p.input_tensors:
                if t in first_at:
                    self.same.append((j, first_at[t]))
                else:
                    first_at[t] = j
            elif t in p.constant_tensors:
                self.consts.append(j)
            else:
                makers = p.tensor_inputs.get(t, [])
                op = p.nodes[makers[0]].op if len(makers) == 1 else None
                self.producers.append((j, len(makers), op))
        # (k, consumer ops, exact): each op must consume output k; exact: and no other op may (gs
        # rejects an internal tensor with a consumer outside the pattern)
        self.internal_outputs: list[tuple[int, frozenset[str], bool]] = []
        for k, t in enumerate(outs):
            if t in p.output_tensors:
                continue
            ops = [p.nodes[c].op for c in p.tensor_outputs.get(t, [])]
            self.internal_outputs.append((k, frozenset(o for o in ops if o is not None), None not in ops))

    def __call__(self, node: gs.Node, graph_outputs: set[str]) -> bool:
        inputs, outputs = node.inputs, node.outputs
        if len(inputs) != self.n_in or len(outputs) != self.n_out:
            return False
        for j in self.consts:
            if not isinstance(inputs[j], gs.Constant):
                return False
        for j, k in self.same:
            if inputs[j].name != inputs[k].name:
                return False
        for j, count, op in self.producers:
            makers = inputs[j].inputs
            if len(makers) != count or (op is not None and makers[0].op != op):
                return False
        for k, ops, exact in self.internal_outputs:
            t = outputs[k]
            if t.name in graph_outputs:
                return False
            present = {c.op for c in t.outputs}
            if (present != ops) if exact else not ops <= present:
                return False
        return True


class _Walk:
    """The entry conditions extended over the whole pattern, along edges where the mapping is forced.

    From the candidate, a pattern node's input at position j must come from the graph node producing
    the candidate's input j (a tensor has one producer), and a pattern consumer of an internal output
    must be a graph consumer with its op whose inputs at the same positions that node produces: when
    exactly one graph consumer qualifies, it is the one. In any match gs returns, the mapping is
    injective and satisfies each of these, so a contradiction (another op, a failing ``check_func``, a
    graph node taken twice, a pattern input bound to two tensors, a non-constant where the pattern has a
    constant, an internal tensor that is a graph output or has a consumer of another op) rules the
    candidate out. Commuted variants differ in input order only, so this drops the wrong orders before
    gs tries them.
    """

    def __init__(self, pattern: gs.GraphPattern, entry: str) -> None:
        self.pattern = pattern
        self.entry = entry
        self.leaf = _LeafSpecs(pattern)  # built per node on first visit: most walks stop after one or two

    def __call__(self, node: gs.Node, graph_outputs: set[str]) -> bool:
        leaf = self.leaf
        mapped = {self.entry: node}
        taken = {id(node): self.entry}
        bound: dict[int, str] = {}
        todo = [self.entry]

        def assign(name: str, g: gs.Node) -> bool:
            if name in mapped:
                return mapped[name] is g or mapped[name].name == g.name
            if taken.get(id(g), name) != name or g.op != self.pattern.nodes[name].op:
                return False
            check = self.pattern.nodes[name].check_func
            if check is not None and not check(g):
                return False
            mapped[name], taken[id(g)] = g, name
            todo.append(name)
            return True

        while todo:
            name = todo.pop()
            g = mapped[name]
            _, _, ins, outs = leaf[name]
            if len(g.inputs) != len(ins) or len(g.outputs) != len(outs):
                return False
            for (kind, ref), t in zip(ins, g.inputs):
                if kind == "var":
                    if bound.setdefault(ref, t.name) != t.name:
                        return False
                elif kind == "const":
                    if not isinstance(t, gs.Constant):
                        return False
                elif kind == "node":
                    if len(t.inputs) != 1 or not assign(ref, t.inputs[0]):
                        return False
            for spec, t in zip(outs, g.outputs):
                if spec is None:
                    continue
                exact, ops, users = spec
                if t.name in graph_outputs:
                    return False
                consumers = t.outputs
                present = {c.op for c in consumers}
                if (present != ops) if exact else not ops <= present:
                    return False
                for user, positions in users:
                    user_op = self.pattern.nodes[user].op
                    fits = {id(c): c for c in consumers if c.op == user_op
                            and all(j < len(c.inputs) and _made_by(c.inputs[j], g) for j in positions)}
                    if user in mapped:
                        if id(mapped[user]) not in fits:
                            return False
                    elif not fits:
                        return False
                    elif len(fits) == 1 and not assign(user, next(iter(fits.values()))):
                        return False
        return True


class _LeafSpecs(dict):
    """name -> (op, check_func, input kinds, output specs) of a single-op pattern node, on demand."""

    def __init__(self, pattern: gs.GraphPattern) -> None:
        super().__init__()
        self.p = pattern

    def __missing__(self, name: str) -> tuple:
        p = self.p
        sub = p.nodes[name]
        ins = []
        for t in p.node_inputs[name]:
            makers = p.tensor_inputs.get(t, [])
            if t in p.input_tensors:
                ins.append(("var", t))
            elif t in p.constant_tensors:
                ins.append(("const", None))
            elif len(makers) == 1 and p.nodes[makers[0]].op is not None:
                ins.append(("node", makers[0]))
            else:
                ins.append(("skip", None))
        outs = []
        for t in p.node_outputs[name]:
            if t in p.output_tensors:
                outs.append(None)
                continue
            users = p.tensor_outputs.get(t, [])
            leaves = [(c, tuple(j for j, u in enumerate(p.node_inputs[c]) if u == t))
                      for c in dict.fromkeys(users) if p.nodes[c].op is not None]
            outs.append((len(leaves) == len(set(users)), frozenset(p.nodes[c].op for c, _ in leaves), leaves))
        spec = self[name] = (sub.op, sub.check_func, ins, outs)
        return spec


def _made_by(t: gs.Tensor, node: gs.Node) -> bool:
    """gs checks a pattern edge by the producer's name (not which of its outputs)."""
    return len(t.inputs) == 1 and t.inputs[0].name == node.name


class _Plan:
    __slots__ = ("op", "required", "check")

    def __init__(self, pattern: gs.GraphPattern) -> None:
        self.op = entry_op(pattern)
        self.required = required_ops(pattern)
        entry = _entry_node(pattern) if pattern.op is None else None
        self.check = None
        if entry is not None and pattern.nodes[entry].op is not None:
            first, walk = _EntryCheck(pattern, entry), _Walk(pattern, entry)
            self.check = lambda node, outputs: first(node, outputs) and walk(node, outputs)


# a pure function of the (immutable once built) pattern, remembered while the pattern lives
_PLANS: weakref.WeakKeyDictionary[gs.GraphPattern, _Plan] = weakref.WeakKeyDictionary()


def _plan(pattern: gs.GraphPattern) -> _Plan:
    plan = _PLANS.get(pattern)
    if plan is None:
        plan = _PLANS[pattern] = _Plan(pattern)
    return plan


class OpIndex:
    """The graph's nodes grouped by op. A pass matches all its variants against one unchanged graph
    before it rewrites anything, so it builds one index and hands it to every ``match_all``."""

    def __init__(self, graph: gs.Graph) -> None:
        self.nodes = list(graph.nodes)
        self.counts = Counter(map(_OP, self.nodes))
        self.by_op: dict[str, list[gs.Node]] = {}
        for node in self.nodes:
            self.by_op.setdefault(node.op, []).append(node)


def complete(m: gs.PatternMapping, pattern: gs.GraphPattern) -> bool:
    """Whether ``m`` maps every node of ``pattern`` (nested patterns included)."""
    return all(name in m and (sub.op is not None or complete(m[name], sub)) for name, sub in pattern.nodes.items())


def match_all(pattern: gs.GraphPattern, graph: gs.Graph, index: OpIndex | None = None) -> list[gs.PatternMapping]:
    """``pattern.match_all(graph)``: the same mappings in the same order, trying only candidates that
    pass the cheap necessary conditions of the module doc. ``index`` must describe ``graph`` as it is now."""
    plan = _plan(pattern)
    if plan.op is None:
        return [m for m in pattern.match_all(graph) if complete(m, pattern)]
    index = index if index is not None else OpIndex(graph)
    candidates = index.by_op.get(plan.op)
    if not candidates or any(index.counts[o] < n for o, n in plan.required.items()):
        return []
    outputs = {t.name for t in graph.outputs}
    if plan.check is not None:
        candidates = [n for n in candidates if plan.check(n, outputs)]
        if not candidates:
            return []
    found = []
    # what ``graph.node_ids()`` does, without gs.Node.__setattr__ on every node
    for i, node in enumerate(index.nodes):
        node.__dict__["id"] = i
    try:
        for node in candidates:
            m = pattern.match(node, from_inbound=True, from_tensor_index=0, mapped_onnx_nodes=set(),
                              onnx_graph_output_tensors=outputs)
            if m is not None and complete(m, pattern):
                found.append(m)
    finally:
        for node in index.nodes:
            node.__dict__.pop("id", None)
    return found
