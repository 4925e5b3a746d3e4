"""Cut models by node sets: standalone sub-models for re-parsing, and supported/unsupported partitions.

Partitions condense the data-flow graph into a DAG: nodes are visited in topological order and each
joins the first partition of its status that it can join without closing a cycle (the partition must
not reach, through other partitions, a partition that feeds the node), else starts a new one. No two
partitions then depend on each other, no two of one status can be merged, and ids follow a topological
order, so running partitions by id always has their inputs ready. Each partition is extracted by its
boundary tensors into a model that passes the ONNX checker and runs in onnxruntime.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import networkx as nx
import onnx
from onnx import helper

from surgery.io import MAX_IR_VERSION
from surgery.verify import weightless

log = logging.getLogger(__name__)


@dataclass
class Partition:
    """A maximal set of nodes sharing one status; it and the other partitions form a DAG."""

    id: int
    status: str
    nodes: list[str]
    inputs: list[str]
    outputs: list[str]
    indices: list[int] = field(default_factory=list, repr=False)
    path: str = ""

    def to_json(self) -> dict:
        out = {"id": self.id, "status": self.status, "nodes": self.nodes, "inputs": self.inputs, "outputs": self.outputs}
        if self.path:
            out["path"] = self.path
        return out


def infer_value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Type/shape of every tensor we can learn (graph I/O, value_info, shape inference on a weightless view)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(weightless(model), data_prop=not _has_huge_dim(model))
    except Exception as exc:  # a model the checker dislikes still gets its declared infos
        log.warning("shape inference failed (%s); using declared types only", str(exc).splitlines()[0])
        inferred = model
    infos = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            infos[vi.name] = vi
    for init in model.graph.initializer:
        infos.setdefault(init.name, helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return infos


def _produced(node: onnx.NodeProto) -> list[str]:
    return [o for o in node.output if o]


def boundary(model: onnx.ModelProto, indices: Sequence[int]) -> tuple[list[str], list[str]]:
    """(inputs, outputs) of the node set: tensors it reads from outside / that leave it."""
    nodes = model.graph.node
    chosen = set(indices)
    inits = {t.name for t in model.graph.initializer}
    produced_inside = {o for i in indices for o in _produced(nodes[i])}
    inputs: list[str] = []
    for i in sorted(indices):
        for name in _consumed(nodes[i]):
            if name and name not in produced_inside and name not in inits and name not in inputs:
                inputs.append(name)
    graph_outputs = {o.name for o in model.graph.output}
    used_outside = {n for j, node in enumerate(nodes) if j not in chosen for n in _consumed(node)}
    outputs = [o for i in sorted(indices) for o in _produced(nodes[i]) if o in graph_outputs or o in used_outside]
    return inputs, outputs


def _consumed(node: onnx.NodeProto) -> list[str]:
    """Inputs of a node, including outer-scope names its subgraphs (If/Loop/Scan bodies) read."""
    names = list(node.input)
    for attr in node.attribute:
        for g in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            local = {i.name for i in g.input} | {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
            names += [n for sub in g.node for n in _consumed(sub) if n not in local]
    return names


def submodel(model: onnx.ModelProto, indices: Sequence[int], infos: dict[str, onnx.ValueInfoProto],
             name: str = "part") -> onnx.ModelProto:
    """A standalone model of ``indices`` (original order); boundary tensors become its graph I/O."""
    order = sorted(indices)
    inputs, outputs = boundary(model, order)
    if not outputs:  # nodes whose results are all dropped: keep their outputs visible
        outputs = [o for i in order for o in _produced(model.graph.node[i])]
    used = {n for i in order for n in _consumed(model.graph.node[i])}
    inits = [t for t in model.graph.initializer if t.name in used]
    in_vis = [_value_info(infos, n) for n in inputs]
    out_vis = [_value_info(infos, n, allow_untyped=True) for n in outputs]
    graph = helper.make_graph([model.graph.node[i] for i in order], name, in_vis, out_vis, inits)
    sub = helper.make_model(graph, opset_imports=list(model.opset_import))
    sub.ir_version = min(model.ir_version or MAX_IR_VERSION, MAX_IR_VERSION)
    sub.functions.extend(model.functions)
    return sub


def _value_info(infos: dict[str, onnx.ValueInfoProto], name: str, allow_untyped: bool = False) -> onnx.ValueInfoProto:
    vi = infos.get(name)
    if vi is not None:
        copy = onnx.ValueInfoProto()
        copy.CopyFrom(vi)
        return copy
    if allow_untyped:
        return helper.make_empty_tensor_value_info(name)
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)


def data_flow_graph(model: onnx.ModelProto) -> nx.DiGraph:
    """Node indices with an edge producer -> consumer for every tensor."""
    g = nx.DiGraph()
    g.add_nodes_from(range(len(model.graph.node)))
    producer = {o: i for i, n in enumerate(model.graph.node) for o in _produced(n)}
    for j, node in enumerate(model.graph.node):
        for name in _consumed(node):
            i = producer.get(name)
            if i is not None and i != j:
                g.add_edge(i, j)
    return g


def find_partitions(model: onnx.ModelProto, statuses: Sequence[str]) -> list[Partition]:
    """Maximal same-status node sets forming an acyclic partition graph; ids in topological order."""
    owner, deps = _assign(data_flow_graph(model), statuses)
    members: dict[int, list[int]] = {}
    for i in sorted(owner):
        members.setdefault(owner[i], []).append(i)
    parts = []
    for k, group in enumerate(nx.lexicographical_topological_sort(deps)):  # ties: the group created first
        idx = members[group]
        ins, outs = boundary(model, idx)
        parts.append(Partition(k, statuses[idx[0]], [model.graph.node[i].name for i in idx], ins, outs, idx))
    return parts


def _assign(flow: nx.DiGraph, statuses: Sequence[str]) -> tuple[dict[int, int], nx.DiGraph]:
    """Node -> group (in topological order, the first group of the node's status it can join, else a new
    one), and the acyclic graph of which group feeds which."""
    owner: dict[int, int] = {}
    labels: list[str] = []
    deps = nx.DiGraph()
    reach: dict[int, set[int]] = {}  # descendants of a group in ``deps``, cleared when an edge is added
    for v in nx.lexicographical_topological_sort(flow):
        feeding = {owner[u] for u in flow.predecessors(v)}
        fits = (g for g, label in enumerate(labels) if label == statuses[v] and _can_join(deps, reach, g, feeding))
        group = next(fits, len(labels))
        if group == len(labels):
            labels.append(statuses[v])
            deps.add_node(group)
        new_edges = [(f, group) for f in feeding if f != group and not deps.has_edge(f, group)]
        if new_edges:
            deps.add_edges_from(new_edges)
            reach.clear()
        owner[v] = group
    return owner, deps


def _can_join(deps: nx.DiGraph, reach: dict[int, set[int]], group: int, feeding: set[int]) -> bool:
    """Whether a node fed by ``feeding`` may join ``group``: the group reaches none of the other feeders."""
    others = feeding - {group}
    if not others:
        return True
    if group not in reach:
        reach[group] = nx.descendants(deps, group)
    return not reach[group] & others


def save_partitions(model: onnx.ModelProto, parts: list[Partition], folder: Path, source_dir: Path | None = None) -> None:
    """Write each partition as ``<id>_<status>.onnx`` under ``folder`` (external data inlined)."""
    from surgery.io import save_model

    folder.mkdir(parents=True, exist_ok=True)
    infos = infer_value_infos(model)
    for p in parts:
        sub = submodel(model, p.indices, infos, name=f"partition_{p.id}_{p.status}")
        path = folder / f"partition_{p.id:03d}_{p.status}.onnx"
        save_model(sub, path, source_dir=source_dir, external=False)
        p.path = str(path)


def _has_huge_dim(model: onnx.ModelProto) -> bool:
    """A dim above 2**31 (onnx's data propagation would walk it element by element)."""
    vis = list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info)
    return any(d.dim_value > (1 << 31) for vi in vis for d in vi.type.tensor_type.shape.dim)
