"""cse: common-subexpression elimination, after deduplicating identical small constants.

Summary: first, constant tensors with the same dtype, shape and bytes (each at most
``max_const_bytes``) are merged into the first one seen; only constants whose dtype and shape
another constant shares are read, and a weight still on disk is read without being kept. Then one
sweep in topological order gives every node a key (domain, op, attributes, input values, which outputs exist); a node whose key was
seen before is a duplicate, and its outputs are read from the earlier node instead. Because keys use
the *merged* input values, a whole duplicated chain collapses in one run.

Matches:
    a = op(x, ...) ; b = op(x, ...)   ⇒   a = op(x, ...) ; consumers of b read a

Requires: nothing.

Rejects:
    non-deterministic: RandomNormal*, RandomUniform*, Multinomial, Bernoulli, or a Dropout whose
        training_mode is not a constant false.
    custom-domain: an op outside the default ONNX domain (it may have side effects).
    both-graph-outputs: the duplicate and the kept node each produce a graph output.
Nodes with subgraph attributes (If, Loop, Scan) are never keyed.

Numerics: exact (the same computation on the same values).
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from passes._noop_rules import present
from surgery.graph_utils import const_value, toposort
from surgery.pass_base import Pass, PassContext, PassResult
from surgery.registry import register_pass
from surgery.weights import WEIGHT_BYTES

__all__ = ["CsePass"]

DEFAULT_MAX_CONST_BYTES = 1 << 20
_RANDOM_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"})


class _Unkeyable(Exception):
    """An attribute that makes a node ineligible (a subgraph or an oversized tensor)."""


def _const_key(t: gs.Constant, limit: int) -> tuple | None:
    if t.shape is None or t.dtype is None:
        return None
    itemsize = np.dtype(t.dtype).itemsize if not isinstance(t.dtype, int) else 8
    if int(np.prod(t.shape, dtype=np.int64)) * itemsize > limit:
        return None
    lazy = t._values if isinstance(t._values, gs.ir.tensor.LazyValues) else None
    # a weight left lazy stays so: reading it through ``t.values`` would keep it in memory to the end
    values = np.asarray(lazy.load() if lazy is not None and lazy.nbytes >= WEIGHT_BYTES else t.values)
    return str(values.dtype), values.shape, values.tobytes()


def _kind(t: gs.Constant) -> tuple:
    """What two constants must share to be equal, known without reading them."""
    return str(t.dtype), None if t.shape is None else tuple(t.shape)


def _freeze(value: Any, limit: int) -> Any:
    if isinstance(value, gs.Graph):
        raise _Unkeyable
    if isinstance(value, gs.Constant):
        key = _const_key(value, limit)
        if key is None:
            raise _Unkeyable
        return ("tensor",) + key
    if isinstance(value, np.ndarray):
        return ("array", str(value.dtype), value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v, limit) for v in value)
    hash(value)
    return type(value).__name__, value


def _rejection(node: gs.Node) -> str | None:
    if (node.domain or "") not in ("", "ai.onnx"):
        return "custom-domain"
    if node.op in _RANDOM_OPS:
        return "non-deterministic"
    if node.op == "Dropout":
        training = present(node, 2)
        value = const_value(training) if training is not None else False
        if value is None or bool(np.asarray(value).reshape(-1)[0]):
            return "non-deterministic"
    return None


@register_pass
class CsePass(Pass):
    name = "cse"
    summary = "Merge identical small constants, then nodes computing the same op on the same inputs."

    def __init__(self, max_const_bytes: int = DEFAULT_MAX_CONST_BYTES) -> None:
        self.max_const_bytes = max_const_bytes
        # id(constant) -> (constant, its values object, key): a fixed-point group runs cse every sweep, and
        # reading every small constant again cost most of its time; a constant given new values is re-keyed
        self._keys: dict[int, tuple[gs.Constant, object, tuple | None]] = {}

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        limit = self.max_const_bytes
        toposort(graph)
        replace = self._dedupe_constants(graph, limit, result)
        dups, outputs = self._find_duplicates(graph, replace, limit, result)
        if not replace and not dups:
            return result
        # Detach duplicates first so kept nodes may take over their graph-output tensors.
        kept: dict[int, gs.Node] = {}
        for dup, canon in dups:
            kept[id(canon)] = canon
            for i, out in enumerate(dup.outputs):
                if out.name and outputs[id(canon)][i] is not out:
                    replace[id(out)] = (out, outputs[id(canon)][i])
            dup.inputs.clear()
            dup.outputs.clear()
            result.apply(dup.name, "merged")
            result.stats["nodes"] += 1
        for canon_id, reps in outputs.items():
            canon = kept[canon_id]
            for i, rep in enumerate(reps):
                old = canon.outputs[i]
                if rep is not old:
                    replace[id(old)] = (old, rep)
                    canon.outputs[i] = rep
        for old, new in replace.values():
            for consumer in list(old.outputs):
                for j, t in enumerate(consumer.inputs):
                    if t is old:
                        consumer.inputs[j] = new
        toposort(graph.cleanup())
        return result

    def _dedupe_constants(self, graph: gs.Graph, limit: int, result: PassResult) -> dict[int, tuple[gs.Tensor, gs.Tensor]]:
        """Map id(duplicate constant) -> (duplicate, first identical constant seen)."""
        first: dict[tuple, gs.Constant] = {}
        replace: dict[int, tuple[gs.Tensor, gs.Tensor]] = {}
        constants = {id(t): t for node in graph.nodes for t in node.inputs if isinstance(t, gs.Constant)}
        kinds = Counter(_kind(t) for t in constants.values())
        for node in graph.nodes:
            for t in node.inputs:
                if not isinstance(t, gs.Constant) or id(t) in replace or kinds[_kind(t)] < 2 or t in graph.outputs:
                    continue
                key = self._key(t, limit)
                if key is None:
                    continue
                canon = first.setdefault(key, t)
                if canon is not t:
                    replace[id(t)] = (t, canon)
                    result.changed += 1
                    result.stats["constants"] += 1
                    result.sites.append({"site": t.name, "outcome": f"same-as:{canon.name}", "reason": ""})
        return replace

    def _key(self, t: gs.Constant, limit: int) -> tuple | None:
        cached = self._keys.get(id(t))
        if cached is not None and cached[0] is t and cached[1] is t._values:
            return cached[2]
        key = _const_key(t, limit)
        self._keys[id(t)] = (t, t._values, key)
        return key

    def _find_duplicates(self, graph: gs.Graph, replace: dict, limit: int, result: PassResult):
        """Value-number every node; return (duplicate, kept) pairs and each kept node's output tensors."""
        value: dict[int, gs.Tensor] = {k: v[1] for k, v in replace.items()}
        seen: dict[tuple, gs.Node] = {}
        dups: list[tuple[gs.Node, gs.Node]] = []
        outputs: dict[int, list[gs.Tensor]] = {}
        for node in graph.nodes:
            try:
                attrs = tuple(sorted((k, _freeze(v, limit)) for k, v in node.attrs.items()))
            except (_Unkeyable, TypeError):
                continue
            ins = tuple(id(value.get(id(t), t)) if t.name else None for t in node.inputs)
            key = (node.domain or "", node.op, attrs, ins, tuple(bool(t.name) for t in node.outputs))
            canon = seen.setdefault(key, node)
            if canon is node:
                continue
            result.stats["matched"] += 1
            reps = outputs.get(id(canon), list(canon.outputs))
            reason = _rejection(node)
            if reason is None and any(d in graph.outputs and r in graph.outputs for d, r in zip(node.outputs, reps) if d.name):
                reason = "both-graph-outputs"
            if reason:
                result.reject(reason, node.name)
                continue
            outputs[id(canon)] = [d if d.name and d in graph.outputs else r for d, r in zip(node.outputs, reps)]
            for d, c in zip(node.outputs, canon.outputs):
                if d.name:
                    value[id(d)] = value.get(id(c), c)
            dups.append((node, canon))
        return dups, outputs
