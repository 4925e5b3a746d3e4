"""Run a model that contains TensorRT plugin nodes, without TensorRT: plugins go through numpy references.

Nodes are taken in topological order; each maximal run of standard nodes becomes a small sub-model
executed on onnxruntime (CPU, graph optimizations off), and each plugin node (domain
``surgery.plugins.PLUGIN_DOMAIN``) is executed with the numpy reference its ``PluginSpec`` carries (``passes/plugins.py``).
This is how a plugin substitution is validated on a machine without a GPU.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

import passes.plugins  # noqa: F401  (registers the plugin specs and their references)
from converter.runtime.numerics import ort_session
from surgery.errors import SurgeryError
from surgery.plugins import PLUGIN_DOMAIN, get_plugin_spec

log = logging.getLogger(__name__)


class MissingReferenceError(SurgeryError):
    """A plugin node whose ``PluginSpec`` carries no numpy reference."""


def run_with_references(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Execute ``model`` on ``feeds`` and return every graph output by name.

    Raises:
        MissingReferenceError: a plugin op has no registered reference (checked before running anything).
    """
    graph = model.graph
    nodes = _toposort(graph)
    missing = sorted({n.op_type for n in nodes if n.domain == PLUGIN_DOMAIN and _reference(n.op_type) is None})
    if missing:
        raise MissingReferenceError(f"no numpy reference for plugin op(s) {', '.join(missing)}; give its PluginSpec a reference in passes/plugins.py")
    values: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    values.update({k: np.asarray(v) for k, v in feeds.items()})
    wanted = [o.name for o in graph.output]
    later_uses = _uses_after(nodes, wanted)
    run: list[onnx.NodeProto] = []
    for i, node in enumerate(nodes):
        if node.domain != PLUGIN_DOMAIN:
            run.append(node)
            continue
        if run:
            values.update(_run_standard(model, run, values, later_uses[i - 1]))
            run = []
        values.update(_run_plugin(node, values))
    if run:
        values.update(_run_standard(model, run, values, later_uses[len(nodes) - 1]))
    return {name: values[name] for name in wanted}


def _run_plugin(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    attrs: dict[str, Any] = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        attrs[a.name] = numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else v.decode() if isinstance(v, bytes) else v
    outs = _reference(node.op_type)([values[n] for n in node.input if n], attrs)
    log.debug("plugin %s (%s) ran on its numpy reference", node.name, node.op_type)
    return dict(zip(node.output, outs))


def _run_standard(model: onnx.ModelProto, nodes: list[onnx.NodeProto], values: dict[str, np.ndarray],
                  needed_later: set[str]) -> dict[str, np.ndarray]:
    produced = {o for n in nodes for o in n.output if o}
    inputs = sorted({i for n in nodes for i in _node_inputs(n) if i and i not in produced and i in values})
    outputs = [o for n in nodes for o in n.output if o and o in needed_later]
    if not outputs:
        return {}
    graph = helper.make_graph(
        nodes, "reference-runner-segment",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(values[n].dtype), values[n].shape) for n in inputs],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
    )
    sub = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    sub.functions.extend(model.functions)
    sess = ort_session(sub)
    return dict(zip(outputs, sess.run(outputs, {n: values[n] for n in inputs})))


def _node_inputs(node: onnx.NodeProto) -> list[str]:
    """Direct inputs plus outer-scope names read by subgraphs (If/Loop/Scan bodies)."""
    names = list(node.input)
    for a in node.attribute:
        for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
            inner = {o for n in g.node for o in n.output} | {i.name for i in g.input} | {t.name for t in g.initializer}
            names += [i for n in g.node for i in _node_inputs(n) if i not in inner]
    return names


def _uses_after(nodes: list[onnx.NodeProto], wanted: list[str]) -> list[set[str]]:
    """For each position i, the tensor names read by nodes after i or returned by the graph."""
    result: list[set[str]] = [set()] * len(nodes)
    acc = set(wanted)
    for i in range(len(nodes) - 1, -1, -1):
        result[i] = set(acc)
        acc |= set(_node_inputs(nodes[i]))
    return result


def _toposort(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    order: list[onnx.NodeProto] = []
    state = [0] * len(graph.node)  # 0 new, 1 visiting, 2 done
    for start in range(len(graph.node)):
        stack = [(start, False)]
        while stack:
            i, expanded = stack.pop()
            if expanded:
                state[i] = 2
                order.append(graph.node[i])
                continue
            if state[i]:
                continue
            state[i] = 1
            stack.append((i, True))
            for name in _node_inputs(graph.node[i]):
                j = producer.get(name)
                if j is not None and state[j] == 0:
                    stack.append((j, False))
    return order


def _reference(op: str):
    spec = get_plugin_spec(op)
    return spec.reference if spec is not None else None
