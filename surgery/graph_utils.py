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
