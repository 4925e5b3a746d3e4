"""inline-constant-if: replace an If whose condition is a constant by the branch it always takes.

Summary: exporters leave ``If`` nodes on flags that are constants in the exported graph (a scripted
``if self.flag``, a shape test after shape folding). The chosen branch's nodes move into the
enclosing graph; the If's output tensors keep their names, so consumers and graph outputs are
untouched.

Matches:
    If(cond = constant) {then: ...; else: ...}  ⇒  the nodes of the chosen branch
    A branch output that is an outer-scope tensor or a constant is routed through an Identity.

Requires: nothing.

Rejects:
    condition-not-constant: the condition is computed at run time.
    condition-not-scalar: the constant condition holds more than one element.
    output-count-mismatch: the branch has a different number of outputs than the If.

Numerics: exact (the same nodes run on the same tensors). Branch-local tensor and node names that
collide with names of the enclosing graph are renamed ``inline-constant-if/<n>``.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from surgery.graph_utils import NameGen, const_value, disconnect
from surgery.registry import register_pass
from surgery.rewrite import NodeRewritePass, Reject, State

__all__ = ["InlineConstantIfPass"]


@register_pass
class InlineConstantIfPass(NodeRewritePass[State]):
    """The plan is the branch the constant condition selects."""

    name = "inline-constant-if"
    summary = "Inline the branch an If with a constant condition always takes."
    ops = ("If",)

    def check(self, node: gs.Node, state: State) -> gs.Graph | Reject:
        cond = node.inputs[0] if node.inputs else None
        value = const_value(cond)
        if value is None:
            return Reject("condition-not-constant", cond)
        if value.size != 1:
            return Reject("condition-not-scalar", cond)
        branch = node.attrs["then_branch" if bool(value.reshape(-1)[0]) else "else_branch"]
        if len(branch.outputs) != len(node.outputs):
            return Reject("output-count-mismatch")
        return branch

    def outcome(self, node: gs.Node, plan: gs.Graph) -> str:
        return "inlined"

    def rewrite(self, node: gs.Node, branch: gs.Graph, state: State, names: NameGen) -> list[gs.Node]:
        """Move the branch's nodes out; its outputs are written to the If's own output tensors."""
        produced = {id(t) for n in branch.nodes for t in n.outputs}
        for inner in branch.nodes:
            if inner.name in names.taken:
                inner.name = names()
            names.taken.add(inner.name)
            for t in inner.outputs:
                if t.name in names.taken:
                    t.name = names()
                names.taken.add(t.name)
        outer_outputs = list(node.outputs)
        disconnect([node])
        new = list(branch.nodes)
        branch.nodes.clear()
        claimed: dict[int, gs.Tensor] = {}
        for inner_t, outer_t in zip(branch.outputs, outer_outputs):
            if id(inner_t) in produced and id(inner_t) not in claimed:
                # The branch's producer writes the If's output tensor directly (its name survives).
                claimed[id(inner_t)] = outer_t
                src = inner_t.inputs[0]
                src.outputs[src.outputs.index(inner_t)] = outer_t
                for consumer in list(inner_t.outputs):
                    for j, t in enumerate(consumer.inputs):
                        if t is inner_t:
                            consumer.inputs[j] = outer_t
                if outer_t.dtype is None:
                    outer_t.dtype, outer_t.shape = inner_t.dtype, inner_t.shape
            else:
                source = claimed.get(id(inner_t), inner_t)
                new.append(gs.Node("Identity", name=names(), inputs=[source], outputs=[outer_t]))
        return new
