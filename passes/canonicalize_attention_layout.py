"""``canonicalize-attention-layout``: rewrite tf2onnx's 5-D Keras MultiHeadAttention core into the 4-D form.

Summary:
    tf2onnx lowers Keras MHA's einsums into 5-D Unsqueeze/Transpose/Reshape chains around two 3-D
    MatMuls, with transposed scores [B,H,Sk,Sq] and Softmax on axis 2, which ``fuse-attention`` does
    not recognise. This pass rewrites each such core into the [B,H,S,D] form that ``fuse-attention``
    matches (variant ``kbshd``), so ``fuse-attention`` must run after it (its ``runs_after``). On its
    own it replaces 43 nodes (5-D layout ops and their run-time shape plumbing) by 7 per dynamic-batch site.

Matches (variants in passes/_attention_keras.py)::

    Q[B,Sq,H,D] ─[Mul c]─Unsqueeze─Transpose5─Reshape─Transpose─┐
    K[B,Sk,H,D] ─Unsqueeze─Transpose5─Reshape──────────── MatMul ─Reshape5─Squeeze─Softmax(2)─Unsqueeze─
    Transpose5─Reshape─┐
    V[B,Sk,H,Dv]─Unsqueeze─Transpose5─Reshape─Transpose─ MatMul ─Reshape5─Squeeze ─> out [B,H,Sq,Dv]
      -> MatMul(Softmax(MatMul([Mul c](Transpose(Q,0213)), Transpose(K,0231)), -1), Transpose(V,0213))

    With a dynamic batch the Reshape targets are computed at run time from Shape of the 5-D tensors;
    that plumbing is part of the match (it only serves the site), so it goes with it.

Requires:
    opset >= 13 (the Squeeze/Unsqueeze axes are inputs; an opset-12 export never matches, which also
    keeps Softmax(2) per-axis, so moving it to the last axis is exact).

Rejects:
    dims-unknown (H, D, Dv of Q/K/V not static and consistent, or a rank other than 4), axes-mismatch
    (Unsqueeze/Squeeze axes other than the einsum lowering's), target-unproven (a Reshape target that is
    not provably [B*H, ...] / [B, H, ...] with the expected trailing dims), scale-not-scalar.
    Not matched, and said so by --explain: the shape-specialised form (collapse-reshapes has merged
    the Reshape/Squeeze pairs), masked Keras attention, any other einsum spelling.

Numerics:
    The same dot products and softmax, with the scores transposed; MatMul accumulation order may
    differ, so fp32 results agree to about 1e-6 relative.
"""
from __future__ import annotations

from typing import NamedTuple

import onnx_graphsurgeon as gs

from passes import _attention_keras as ak
from surgery.graph_utils import NameGen
from surgery.registry import register_pass
from surgery.rewrite import Match, PatternRewritePass, Reject, State


class KerasPlan(NamedTuple):
    """The head-split Q [B,Sq,H,D], K [B,Sk,H,D] and V [B,Sk,H,Dv] the 4-D form is built from."""

    q: gs.Tensor
    k: gs.Tensor
    v: gs.Tensor


@register_pass
class CanonicalizeAttentionLayoutPass(PatternRewritePass[State, ak.KerasVariant]):
    """Variants are ``ak.KerasVariant``; the pattern key (``<q>/<targets>:<order>``) is the outcome."""

    name = "canonicalize-attention-layout"
    summary = "Rewrite tf2onnx's 5-D Keras MultiHeadAttention core into the 4-D [B,H,S,D] form fuse-attention matches"
    anchor_ops = ("Softmax",)

    def patterns(self, state: State) -> dict[str, tuple[gs.GraphPattern, ak.KerasVariant]]:
        return ak.build_variants()

    def check(self, m: Match[ak.KerasVariant], state: State) -> KerasPlan | Reject:
        d = ak.dims(m)
        if d is None:
            return Reject("dims-unknown")
        bad = ak.bad_axes(m)
        if bad is not None:
            return Reject("axes-mismatch", bad)
        bad = ak.unproven_target(m, d)
        if bad is not None:
            return Reject("target-unproven", bad)
        if ak.scale(m) is None:
            return Reject("scale-not-scalar", m.constants["qscale"])
        return KerasPlan(*(m.variant.input(m, n) for n in ("q", "k", "v")))

    def rewrite(self, m: Match[ak.KerasVariant], plan: KerasPlan, state: State, names: NameGen) -> list[gs.Node]:
        q, k, v = plan
        new: list[gs.Node] = []

        def node(op, ins, shape, attrs=None, out=None, name=None):
            # shapes on the new tensors: fuse-attention reads the head count off Q for ort/plugin emits
            t = out if out is not None else gs.Variable(names("_t"), dtype=q.dtype, shape=shape)
            new.append(gs.Node(op, name=name or names(), attrs=attrs or {}, inputs=ins, outputs=[t]))
            return t

        (b, sq, h, d), (_, sk, _, _) = q.shape, k.shape
        qh = node("Transpose", [q], [b, h, sq, d], {"perm": [0, 2, 1, 3]})
        if m.variant.scaled:
            qh = node("Mul", [qh, m.constants["qscale"]], [b, h, sq, d])
        kt = node("Transpose", [k], [b, h, d, sk], {"perm": [0, 2, 3, 1]})
        scores = node("MatMul", [qh, kt], [b, h, sq, sk])
        probs = node("Softmax", [scores], [b, h, sq, sk], {"axis": -1}, name=m.get("sm").name)  # the site keeps its name
        vh = node("Transpose", [v], [b, h, sk, v.shape[3]], {"perm": [0, 2, 1, 3]})
        node("MatMul", [probs, vh], None, out=m.outputs[0])
        return new

    def unmatched_reason(self, node: gs.Node, state: State) -> str:
        axis = node.attrs.get("axis", -1)
        if axis in (-1, 3) or (axis == 1 and node.inputs[0].shape is not None and len(node.inputs[0].shape) == 2):
            return "already-canonical (Softmax on the last axis)"
        prev = node.inputs[0].inputs[0].op if node.inputs[0].inputs else "input"
        return (f"no-keras-einsum-pattern (Softmax axis {axis} fed by {prev}; expected the tf2onnx Keras MHA chain "
                "MatMul -> Reshape5 -> Squeeze -> Softmax(2) -> Unsqueeze -> Transpose5 with its Shape plumbing)")

    def site(self, nodes: list[gs.Node]) -> str:
        return next((n.name for n in nodes if n.op == "Softmax"), nodes[0].name)
