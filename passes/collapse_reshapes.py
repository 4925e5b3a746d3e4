"""collapse-reshapes: replace two consecutive reshape-family nodes by one Reshape.

Summary: Reshape, Flatten, Squeeze and Unsqueeze only reinterpret the shape, so a chain of two of
them equals one Reshape from the chain's input to the chain's output shape. Chains longer than two
are collapsed within one run; a resulting Reshape that changes nothing is left to eliminate-noops.

Matches (first, second ∈ {Reshape, Flatten, Squeeze, Unsqueeze}):
    x → first → t → Reshape(s) → y          ⇒   x → Reshape(s') → y
        (s' = s with its copy-dims (0, allowzero=0) replaced by t's static dims)
    x → first → t → Flatten|Squeeze|Unsqueeze → y   ⇒   x → Reshape(static shape of y) → y
        (needs x fully static; the shape is recomputed, not read from annotations)

Requires: ``t`` has no other consumer and is not a graph output (pattern boundary).

Rejects:
    shape-not-constant: the second node is a Reshape whose target shape is not a constant.
    copy-dim-unknown: the target has a 0 (copy) entry whose dim of ``t`` is not statically known.
    shape-unknown: the second node is Flatten/Squeeze/Unsqueeze and the output shape cannot be
        computed from a static input shape.

Numerics: exact (no data changes).
"""
from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from passes._noop_rules import const_ints, present, reshape_like_out, static_shape
from passes._repeat import run_until_stable
from surgery.graph_utils import NameGen
from surgery.pass_base import PassContext, PassResult
from surgery.registry import register_pass
from surgery.rewrite import PatternRewritePass, mapping_nodes

__all__ = ["CollapseReshapesPass"]

log = logging.getLogger(__name__)

# (op, input count): the forms a reshape-family node takes across opsets.
_FORMS = (("Reshape", 2), ("Flatten", 1), ("Squeeze", 1), ("Squeeze", 2), ("Unsqueeze", 2), ("Unsqueeze", 1))


def _pattern(first: tuple[str, int], second: tuple[str, int]) -> gs.GraphPattern:
    p = gs.GraphPattern()
    x = p.variable()
    t = p.add("first", first[0], inputs=[x] + [p.variable() for _ in range(first[1] - 1)])
    y = p.add("second", second[0], inputs=[t] + [p.variable() for _ in range(second[1] - 1)])
    p.set_output_tensors([y])
    return p


def _mid_shape(first: gs.Node) -> list:
    """Best static knowledge of the intermediate shape: computed from the input, else its annotation."""
    x_shape = static_shape(first.inputs[0])
    computed = reshape_like_out(first, x_shape) if x_shape is not None else None
    if computed is not None:
        return computed
    return list(first.outputs[0].shape) if first.outputs[0].shape is not None else []


def _target(first: gs.Node, second: gs.Node) -> tuple[list[int], bool] | str:
    """The merged Reshape's shape and allowzero flag, or a rejection reason."""
    if second.op == "Reshape":
        shape = const_ints(present(second, 1))
        if shape is None:
            return "shape-not-constant"
        allowzero = bool(second.attrs.get("allowzero", 0))
        if allowzero or 0 not in shape:
            return shape, allowzero and 0 in shape
        mid = _mid_shape(first)
        resolved = []
        for i, d in enumerate(shape):
            if d == 0:
                if i >= len(mid) or not isinstance(mid[i], (int, np.integer)) or mid[i] < 0:
                    return "copy-dim-unknown"
                d = int(mid[i])
            resolved.append(d)
        return resolved, False
    x_shape = static_shape(first.inputs[0])
    mid = reshape_like_out(first, x_shape) if x_shape is not None else None
    out = reshape_like_out(second, mid) if mid is not None else None
    return "shape-unknown" if out is None else (out, False)


@register_pass
class CollapseReshapesPass(PatternRewritePass):
    name = "collapse-reshapes"
    summary = "Collapse chains of Reshape/Flatten/Squeeze/Unsqueeze into a single Reshape."
    anchor_ops = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")

    def patterns(self, ctx: PassContext) -> dict[str, gs.GraphPattern]:
        return {f"{a[0]}{a[1]}>{b[0]}{b[1]}": _pattern(a, b) for a in _FORMS for b in _FORMS}

    def check(self, m: gs.PatternMapping, variant: str, graph: gs.Graph, ctx: PassContext) -> str | None:
        target = _target(m.get("first"), m.get("second"))
        return target if isinstance(target, str) else None

    def rewrite(self, graph: gs.Graph, m: gs.PatternMapping, variant: str, ctx: PassContext, names: NameGen) -> list[gs.Node]:
        first, second = mapping_nodes(m)
        target = _target(first, second)
        assert not isinstance(target, str)  # check() accepted this match
        shape, allowzero = target
        name = names()
        const = gs.Constant(f"{name}/shape", np.array(shape, dtype=np.int64))
        attrs = {"allowzero": 1} if allowzero else {}
        return [gs.Node("Reshape", name=name, attrs=attrs, inputs=[first.inputs[0], const], outputs=[second.outputs[0]])]

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        return run_until_stable(super().run, graph, ctx)
