"""unroll-loop: replace a Loop with a constant trip count and an always-true condition by copies of its body.

Summary: each iteration becomes a copy of the body whose iteration number is a constant, whose
loop-carried inputs are the previous copy's outputs, and which reads outer-scope tensors directly.
Scan outputs of the iterations are stacked with Unsqueeze + Concat along axis 0, as Loop does.

Matches:
    Loop(M = constant, cond = absent | constant true) {body: (i, c, v...) -> (c', v'..., s...)}
      ⇒  body[i=0] → body[i=1] → ... → body[i=M-1];  v_final...;  Concat(Unsqueeze(s_i))...
    where the body's condition output is provably true: a constant true, the body's condition input,
    or an Identity of either.

Requires: nothing.

Rejects:
    trip-count-not-constant: M is absent (an unbounded loop) or computed at run time.
    too-many-iterations: M exceeds the pass's ``max_iters`` (default 16; the body would be copied too
        often).
    zero-iterations: M is 0 or the initial condition is false (scan outputs would be empty tensors of
        unknown shape).
    condition-not-constant: the initial condition is computed at run time.
    data-dependent-condition: the body computes its condition output.
    nested-subgraph: the body holds an If/Loop/Scan (its own scopes would need remapping).

Numerics: exact; the same nodes run in the same order on the same values.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from surgery.graph_utils import NameGen, const_value
from surgery.pass_base import PassContext
from surgery.registry import register_pass
from surgery.rewrite import NodeRewritePass, Reject, State

__all__ = ["UnrollLoopPass"]

DEFAULT_MAX_ITERS = 16


def _always_true(t: gs.Tensor, cond_in: gs.Tensor) -> bool:
    """True when the body's condition output is a constant true or passes the (true) input through."""
    seen = 0
    while seen < 8:
        if t is cond_in:
            return True
        value = const_value(t)
        if value is not None:
            return value.size == 1 and bool(value.reshape(-1)[0])
        if len(t.inputs) == 1 and t.inputs[0].op == "Identity":
            t = t.inputs[0].inputs[0]
            seen += 1
            continue
        return False
    return False


@dataclass
class UnrollState(State):
    max_iters: int  # loops with more iterations stay loops


@register_pass
class UnrollLoopPass(NodeRewritePass[UnrollState]):
    """The plan is the trip count; the outcome is ``unrolled:<count>``."""

    name = "unroll-loop"
    summary = "Unroll a Loop with a constant trip count (at most max_iters) and no data-dependent condition."
    ops = ("Loop",)

    def __init__(self, max_iters: int = DEFAULT_MAX_ITERS) -> None:
        self.max_iters = max_iters

    def prepare(self, graph: gs.Graph, ctx: PassContext) -> UnrollState:
        return UnrollState(graph, ctx, self.max_iters)

    def check(self, node: gs.Node, state: UnrollState) -> int | Reject:
        trip_t = node.inputs[0] if node.inputs and node.inputs[0].name else None
        trip = const_value(trip_t)
        if trip is None or trip.size != 1:
            return Reject("trip-count-not-constant", trip_t)
        count = int(trip.reshape(-1)[0])
        if count > state.max_iters:
            return Reject("too-many-iterations", trip_t)
        if len(node.inputs) > 1 and node.inputs[1].name:
            cond = const_value(node.inputs[1])
            if cond is None or cond.size != 1:
                return Reject("condition-not-constant", node.inputs[1])
            if not bool(cond.reshape(-1)[0]):
                return Reject("zero-iterations", node.inputs[1])
        if count <= 0:
            return Reject("zero-iterations", trip_t)
        body: gs.Graph = node.attrs["body"]
        if not _always_true(body.outputs[0], body.inputs[1]):
            return Reject("data-dependent-condition")
        if any(isinstance(v, gs.Graph) for n in body.nodes for v in n.attrs.values()):
            return Reject("nested-subgraph")
        return count

    def outcome(self, node: gs.Node, count: int) -> str:
        return f"unrolled:{count}"

    def rewrite(self, node: gs.Node, count: int, state: UnrollState, names: NameGen) -> list[gs.Node]:
        """``count`` copies of the body chained through the carried values; scans stacked by Concat."""
        state.stats["iterations"] += count
        body: gs.Graph = node.attrs["body"]
        body.toposort(recurse_subgraphs=False)
        n_carried = len(body.inputs) - 2
        carried = list(node.inputs[2:2 + n_carried])
        true = gs.Constant(names("/true"), np.array(True))
        scans: list[list[gs.Tensor]] = [[] for _ in body.outputs[1 + n_carried:]]
        new: list[gs.Node] = []
        for i in range(count):
            remap: dict[int, gs.Tensor] = {id(body.inputs[0]): gs.Constant(names("/iter"), np.array(i, np.int64)),
                                           id(body.inputs[1]): true}
            remap.update({id(b): v for b, v in zip(body.inputs[2:], carried)})
            for inner in body.nodes:
                outs = []
                for t in inner.outputs:
                    copy = gs.Variable(names(), dtype=t.dtype, shape=t.shape)
                    remap[id(t)] = copy
                    outs.append(copy)
                ins = [remap.get(id(t), t) for t in inner.inputs]
                new.append(gs.Node(inner.op, name=names(), attrs=dict(inner.attrs), inputs=ins, outputs=outs,
                                   domain=inner.domain))
            carried = [remap.get(id(t), t) for t in body.outputs[1:1 + n_carried]]
            for k, t in enumerate(body.outputs[1 + n_carried:]):
                scans[k].append(remap.get(id(t), t))
        axes = gs.Constant(names("/axes"), np.array([0], np.int64))
        for per_iter, out in zip(scans, node.outputs[n_carried:]):
            stacked = []
            for value in per_iter:
                t = gs.Variable(names(), dtype=value.dtype)
                new.append(gs.Node("Unsqueeze", name=names(), inputs=[value, axes], outputs=[t]))
                stacked.append(t)
            new.append(gs.Node("Concat", name=names(), attrs={"axis": 0}, inputs=stacked, outputs=[out]))
        created = {id(t) for n in new for t in n.outputs}
        renamed: dict[int, gs.Tensor] = {}
        for value, out in zip(carried, node.outputs[:n_carried]):
            if id(value) in created and id(value) not in renamed:
                renamed[id(value)] = out  # the last copy writes the Loop's output tensor (its name survives)
                for n in new:
                    for tensors in (n.inputs, n.outputs):
                        for j, t in enumerate(tensors):
                            if t is value:
                                tensors[j] = out
            else:
                new.append(gs.Node("Identity", name=names(), inputs=[renamed.get(id(value), value)], outputs=[out]))
        return new
