"""Small graph-editing helpers shared by passes."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import onnx_graphsurgeon as gs


def const_value(tensor: gs.Tensor | None) -> np.ndarray | None:
    """Values of a Constant tensor (or of a tensor produced by a Constant node), else None."""
    if tensor is None:
        return None
    if isinstance(tensor, gs.Constant):
        return tensor.values
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        attrs = tensor.inputs[0].attrs
        if "value" in attrs and isinstance(attrs["value"], gs.Constant):
            return attrs["value"].values
    return None


def scalar_value(tensor: gs.Tensor | None) -> float | None:
    """The single value of a constant holding exactly one element, else None."""
    v = const_value(tensor)
    if v is None or v.size != 1:
        return None
    return float(v.reshape(-1)[0])


def is_const(tensor: gs.Tensor | None) -> bool:
    return const_value(tensor) is not None


def producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if len(tensor.inputs) == 1 else None


def disconnect(nodes: Iterable[gs.Node]) -> None:
    """Detach nodes from all their tensors so ``cleanup`` removes them."""
    for node in nodes:
        node.inputs.clear()
        node.outputs.clear()


def bypass(node: gs.Node, graph: gs.Graph, keep: gs.Tensor) -> None:
    """Remove a single-output node by routing its consumers to ``keep``.

    If the node's output is a graph output, the producer of ``keep`` is re-pointed instead, so the
    graph output keeps its name.
    """
    out = node.outputs[0]
    if out in graph.outputs and keep not in graph.outputs and len(keep.inputs) == 1 and not isinstance(keep, gs.Constant) \
            and keep not in graph.inputs:
        src = keep.inputs[0]
        idx = src.outputs.index(keep)
        for consumer in list(keep.outputs):
            if consumer is node:
                continue
            for j, t in enumerate(consumer.inputs):
                if t is keep:
                    consumer.inputs[j] = out
        node.outputs.clear()
        src.outputs[idx] = out
        node.inputs.clear()
        return
    for consumer in list(out.outputs):
        for j, t in enumerate(consumer.inputs):
            if t is out:
                consumer.inputs[j] = keep
    if out in graph.outputs:
        ident = gs.Node("Identity", name=f"{node.name}/keep-output", inputs=[keep], outputs=[out])
        node.outputs.clear()
        graph.nodes.append(ident)
    node.inputs.clear()
    node.outputs.clear()


def bypass_needs_identity(node: gs.Node, graph: gs.Graph, keep: gs.Tensor) -> bool:
    """True when ``bypass(node, graph, keep)`` could only swap ``node`` for an Identity.

    That happens when the node's output is a graph output and ``keep`` cannot take over its name
    (``keep`` is a graph input, a constant or another graph output). Passes that remove Identity
    nodes use it to stay idempotent.
    """
    out = node.outputs[0]
    if out not in graph.outputs:
        return False
    renamable = keep not in graph.outputs and len(keep.inputs) == 1 and not isinstance(keep, gs.Constant) \
        and keep not in graph.inputs
    return not renamable


def toposort(graph: gs.Graph) -> gs.Graph:
    """``graph.toposort()``, skipped when it would leave the graph as it is (most calls, in the
    fixed-point sweeps; gs's sort walks every node's producers recursively and costs a few ms).

    gs orders nodes by a stable sort on their level (1 + the highest level among their producers,
    0 without any). A node list in which every producer comes first and the levels never decrease
    is therefore its own sort. Graphs with subgraphs or functions (gs sorts those too) always sort.
    """
    if not _in_sorted_order(graph):
        graph.toposort()
    return graph


def _in_sorted_order(graph: gs.Graph) -> bool:
    if graph.functions:
        return False
    level: dict[int, int] = {}
    last = 0
    for node in graph.nodes:
        here = 0
        for t in node.inputs:
            if not t.name:
                continue  # an omitted optional input: gs does not count its producer
            for p in t.inputs:
                lv = level.get(id(p))
                if lv is None:
                    return False  # a producer later in the list (or outside it)
                here = max(here, lv + 1)
        if here < last or any(isinstance(a, gs.Graph) for a in node.attrs.values()):
            return False
        level[id(node)] = last = here
    return True


class NameGen:
    """Deterministic unique names ``<prefix>/<n>`` that never collide with existing ones."""

    def __init__(self, graph: gs.Graph, prefix: str) -> None:
        self.prefix = prefix
        self.taken = {n.name for n in graph.nodes} | set(graph.tensors().keys())
        self.n = 0

    def __call__(self, suffix: str = "") -> str:
        while True:
            name = f"{self.prefix}/{self.n}{suffix}"
            self.n += 1
            if name not in self.taken:
                self.taken.add(name)
                return name


PatternNode = tuple  # (name, op, input names[, check_func]): inputs name variables, '$const' constants or earlier nodes


def commuted_patterns(variables: list[str], nodes: list[PatternNode], outputs: list[str],
                      commutative: frozenset[str] = frozenset({"Add", "Mul", "And", "Or"})) -> list[tuple[str, gs.GraphPattern]]:
    """Every operand order of a pattern whose binary commutative nodes may list their inputs either way.

    ``nodes`` are listed producers first; an input is a variable name, ``$name`` for a constant, or an
    earlier node's name. GraphPattern matches inputs positionally, so each order is its own pattern.
    Matching starts at the first listed consumer of the first variable.

    Returns:
        ``(order, pattern)`` pairs; ``order`` is a bit string saying which nodes were swapped.
    """
    flips = [i for i, n in enumerate(nodes) if n[1] in commutative and len(n[2]) == 2 and n[2][0] != n[2][1]]
    base = _build_pattern(variables, nodes, outputs)
    names = [n[0] for n in nodes]
    result = []
    for mask in range(2 ** len(flips)):
        swapped = {flips[b] for b in range(len(flips)) if mask >> b & 1}
        p = _with_swapped_inputs(base, {names[i] for i in swapped}) if swapped else base
        result.append(("".join("s" if i in swapped else "k" for i in flips), p))
    return result


def _build_pattern(variables: list[str], nodes: list[PatternNode], outputs: list[str]) -> gs.GraphPattern:
    p = gs.GraphPattern()
    tensors: dict[str, int] = {v: p.variable() for v in variables}
    for spec in nodes:
        ids = []
        for t in spec[2]:
            if t not in tensors:
                tensors[t] = p.constant(t[1:]) if t.startswith("$") else None
            ids.append(tensors[t])
        tensors[spec[0]] = p.add(spec[0], spec[1], check_func=spec[3] if len(spec) > 3 else None, inputs=ids)
    p.set_output_tensors([tensors[o] for o in outputs])
    return p


def _with_swapped_inputs(base: gs.GraphPattern, swapped: set[str]) -> gs.GraphPattern:
    """``base`` with the two inputs of each ``swapped`` node exchanged.

    Building every order from scratch dominated a fusion pass's start-up (2^k variants, each node a
    new single-op GraphPattern). A swap changes only the order of that node's input list: which tensor
    each node reads and produces, and each tensor's consumer list (kept in node order), stay the same.
    The single-op sub-patterns are shared; nothing mutates a pattern once built.
    """
    p = gs.GraphPattern()
    p.nodes = dict(base.nodes)
    p.node_inputs = {k: (v[::-1] if k in swapped else list(v)) for k, v in base.node_inputs.items()}
    p.node_outputs = {k: list(v) for k, v in base.node_outputs.items()}
    p.num_tensors = base.num_tensors
    p.tensor_inputs = {k: list(v) for k, v in base.tensor_inputs.items()}
    p.tensor_outputs = {k: list(v) for k, v in base.tensor_outputs.items()}
    p.input_tensors = list(base.input_tensors)
    p.output_tensors = list(base.output_tensors)
    p.constant_tensors = dict(base.constant_tensors)
    return p


def tensor_rank(tensor: gs.Tensor) -> int | None:
    shape = tensor.shape
    return None if shape is None else len(shape)


def last_dim(tensor: gs.Tensor) -> int | None:
    """The static size of the last axis, else None."""
    shape = tensor.shape
    if not shape or not isinstance(shape[-1], (int, np.integer)) or shape[-1] <= 0:
        return None
    return int(shape[-1])
