"""Load-time repairs of valid models written in forms the rest of the tool (and onnx's checker) dislikes.

Each repair keeps what the model computes and says what it did in a note:
- nodes out of topological order (onnxruntime and TensorRT accept them) are sorted, stably;
- graph-input dims written as ``dim_value: -1`` (paddle2onnx's "dynamic") become named symbolic dims;
- ``sparse_initializer`` entries become dense initializers (every pass reads dense constants);
- IR version 3 models (initializers must be graph inputs) are raised to IR 4, where they need not be:
  a pass may add initializers, and the graph inputs that carried weights stay where they were.
"""
from __future__ import annotations

import heapq

import onnx
from onnx import numpy_helper

from surgery.errors import ModelLoadError

# IR 4 is the first in which an initializer need not be listed as a graph input.
MIN_IR_VERSION = 4
DENSE_LIMIT = 1 << 30  # bytes a densified sparse initializer may take


def normalize(model: onnx.ModelProto) -> list[str]:
    """Repair ``model`` in place; returns one note per kind of repair made."""
    notes: list[str] = []
    moved = _toposort(model.graph)
    if moved:
        notes.append(f"nodes were not in topological order: sorted ({moved} graph(s))")
    named = _name_negative_dims(model.graph)
    if named:
        notes.append("input dims written as -1 are dynamic: named " + ", ".join(named))
    dense = _densify_sparse(model.graph)
    if dense:
        notes.append(f"sparse initializer(s) {', '.join(dense)} stored dense")
    if model.ir_version and model.ir_version < MIN_IR_VERSION:
        notes.append(f"IR version {model.ir_version} raised to {MIN_IR_VERSION} (initializers need not be graph inputs)")
        model.ir_version = MIN_IR_VERSION
    return notes


def _subgraphs(node: onnx.NodeProto):
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _reads(node: onnx.NodeProto) -> set[str]:
    """Every tensor ``node`` reads, including outer-scope names its subgraphs use."""
    names = {i for i in node.input if i}
    for g in _subgraphs(node):
        local = {vi.name for vi in g.input} | {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
        for n in g.node:
            names |= _reads(n) - local
        names |= {o.name for o in g.output} - local
    return names


def _toposort(graph: onnx.GraphProto) -> int:
    """Sort ``graph`` (and its subgraphs) stably: each node as early as its original position allows.
    Returns how many graphs were reordered. Cycles and dangling names are left for the checks to report."""
    count = 0
    for node in graph.node:
        for g in _subgraphs(node):
            count += _toposort(g)
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    deps = [{producer[r] for r in _reads(n) if r in producer and producer[r] != i} for i, n in enumerate(graph.node)]
    if all(d < i for i, ds in enumerate(deps) for d in ds):
        return count
    users: list[list[int]] = [[] for _ in graph.node]
    missing = [len(ds) for ds in deps]
    for i, ds in enumerate(deps):
        for d in ds:
            users[d].append(i)
    ready = [i for i, m in enumerate(missing) if m == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            missing[u] -= 1
            if missing[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(graph.node):
        return count  # a cycle: check_structure names it
    nodes = [graph.node[i] for i in order]
    copies = [onnx.NodeProto() for _ in nodes]
    for c, n in zip(copies, nodes):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)
    return count + 1


def _name_negative_dims(graph: onnx.GraphProto) -> list[str]:
    named = []
    for vi in graph.input:
        if not vi.type.HasField("tensor_type"):
            continue
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value == -1:
                name = f"{vi.name}_dim{axis}"
                d.ClearField("dim_value")
                d.dim_param = name
                named.append(name)
    return named


def _densify_sparse(graph: onnx.GraphProto) -> list[str]:
    names = []
    for sparse in graph.sparse_initializer:
        graph.initializer.append(numpy_helper.from_array(_sparse_to_dense(sparse), sparse.values.name))
        names.append(sparse.values.name)
    del graph.sparse_initializer[:]
    return names


def _sparse_to_dense(sparse: onnx.SparseTensorProto):
    import numpy as np

    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    dims = tuple(sparse.dims)
    if int(np.prod(dims, dtype=np.float64)) * values.dtype.itemsize > DENSE_LIMIT:
        raise ModelLoadError(f"sparse initializer '{sparse.values.name}' {list(dims)} is too large to store dense")
    dense = np.zeros(int(np.prod(dims, dtype=np.int64)), dtype=values.dtype)
    flat = indices if indices.ndim == 1 else np.ravel_multi_index(tuple(indices.T), dims)
    dense[flat] = values.reshape(-1)
    return dense.reshape(dims)
