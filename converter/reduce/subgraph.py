"""Valid standalone models of node subsets, for the reducer's probes.

A subset's boundary tensors become its graph inputs and outputs (``converter.runtime.partitions.submodel``),
typed by what a run of the whole model observed where one was made, else by shape inference: shape
inference leaves dims computed through Shape/Gather/Concat chains symbolic, and a cut whose inputs
have unknown dims can fail in other ways than the whole model. For the same reason a small integer or
bool boundary tensor (a shape, an index, a mask: at most ``INLINE_MAX`` elements) that the run
observed becomes an initializer holding that value rather than an input: TensorRT takes an
integer input that feeds a shape as a shape tensor, which needs profile values a cut has none of. ``Constant`` nodes follow their consumers
(a subset holding a node also holds the constants it reads), so a probe never turns a constant
operand into a runtime input; the search therefore runs over the other nodes only.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converter.runtime.partitions import infer_value_infos, submodel

INLINE_MAX = 64


class Subgraphs:
    """Cuts one model into node subsets; ``searchable`` lists the node indices the search works on."""

    def __init__(self, model: onnx.ModelProto, observed: Mapping[str, np.ndarray] | None = None) -> None:
        self.model = model
        self.infos = infer_value_infos(model)
        graph_inputs = {vi.name for vi in model.graph.input}
        self._inline: dict[str, np.ndarray] = {}
        for name, value in (observed or {}).items():
            if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
                self.infos[name] = helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype),
                                                                 list(value.shape))
                if value.dtype.kind in "biu" and value.size <= INLINE_MAX and name not in graph_inputs:
                    self._inline[name] = value
        nodes = model.graph.node
        self._constant_of = {o: i for i, n in enumerate(nodes) if n.op_type == "Constant" and n.domain in ("", "ai.onnx")
                             for o in n.output}
        constants = set(self._constant_of.values())
        self.searchable: tuple[int, ...] = tuple(i for i in range(len(nodes)) if i not in constants) or tuple(range(len(nodes)))

    def closure(self, indices: tuple[int, ...]) -> tuple[int, ...]:
        """``indices`` plus the Constant nodes they read, ascending."""
        chosen = set(indices)
        for i in indices:
            chosen |= {self._constant_of[t] for t in self.model.graph.node[i].input if t in self._constant_of}
        return tuple(sorted(chosen))

    def cut(self, indices: tuple[int, ...], name: str = "reduced") -> onnx.ModelProto:
        """A standalone model of ``indices`` (and their constants)."""
        sub = submodel(self.model, self.closure(indices), self.infos, name=name)
        inlined = [vi for vi in sub.graph.input if vi.name in self._inline]
        for vi in inlined:
            sub.graph.input.remove(vi)
            sub.graph.initializer.append(numpy_helper.from_array(self._inline[vi.name], vi.name))
        for field in ("producer_name", "producer_version"):  # source mapping reads the producer
            setattr(sub, field, getattr(self.model, field))
        return sub

    def names(self, indices: tuple[int, ...]) -> list[str]:
        return [self.model.graph.node[i].name for i in self.closure(indices)]
