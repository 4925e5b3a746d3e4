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
    result = []
    for mask in range(2 ** len(flips)):
        swapped = {flips[b] for b in range(len(flips)) if mask >> b & 1}
        p = gs.GraphPattern()
        tensors: dict[str, int] = {v: p.variable() for v in variables}
        for i, spec in enumerate(nodes):
            name, op, ins = spec[0], spec[1], list(spec[2])
            if i in swapped:
                ins.reverse()
            ids = []
            for t in ins:
                if t not in tensors:
                    tensors[t] = p.constant(t[1:]) if t.startswith("$") else None
                ids.append(tensors[t])
            tensors[name] = p.add(name, op, check_func=spec[3] if len(spec) > 3 else None, inputs=ids)
        p.set_output_tensors([tensors[o] for o in outputs])
        result.append(("".join("s" if i in swapped else "k" for i in flips), p))
    return result
