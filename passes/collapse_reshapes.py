"""collapse-reshapes: replace two consecutive reshape-family nodes by one Reshape.

Summary: Reshape, Flatten, Squeeze and Unsqueeze only reinterpret the shape, so a chain of two of
them equals one Reshape from the chain's input to the chain's output shape. Chains longer than two
are collapsed within one run (``until_stable``); a resulting Reshape that changes nothing is left to eliminate-noops.

Matches (first, second ∈ {Reshape, Flatten, Squeeze, Unsqueeze}):
    x → first → t → Reshape(s) → y          ⇒   x → Reshape(s') → y
        (s' = s with its copy-dims (0, allowzero=0) replaced by t's static dims; a copy-dim that the first
        Reshape's constant target also copies stays 0)
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

from functools import cache
from typing import NamedTuple

import numpy as np
import onnx_graphsurgeon as gs

from passes._noop_rules import const_ints, present, reshape_like_out, static_shape
from surgery.graph_utils import NameGen
from surgery.registry import register_pass
from surgery.rewrite import Match, PatternRewritePass, Reject, State

__all__ = ["CollapseReshapesPass"]


class _Form(NamedTuple):
    """A reshape-family node as it appears in some opset: its op and input count."""

    op: str
    arity: int


class _Pair(NamedTuple):
    """The variant: the forms of the first and second node."""

    first: _Form
    second: _Form


class _Target(NamedTuple):
    """The plan: the merged Reshape's shape and allowzero flag."""

    shape: list[int]
    allowzero: bool


_FORMS = (_Form("Reshape", 2), _Form("Flatten", 1), _Form("Squeeze", 1), _Form("Squeeze", 2), _Form("Unsqueeze", 2),
          _Form("Unsqueeze", 1))


@cache  # patterns are immutable: every sweep and pass instance shares them
def _pattern(pair: _Pair) -> gs.GraphPattern:
    p = gs.GraphPattern()
    x = p.variable()
    t = p.add("first", pair.first.op, inputs=[x] + [p.variable() for _ in range(pair.first.arity - 1)])
    y = p.add("second", pair.second.op, inputs=[t] + [p.variable() for _ in range(pair.second.arity - 1)])
    p.set_output_tensors([y])
    return p


def _mid_shape(first: gs.Node) -> list:
    """Best static knowledge of the intermediate shape: computed from the input, else its annotation."""
    x_shape = static_shape(first.inputs[0])
    computed = reshape_like_out(first, x_shape) if x_shape is not None else None
    if computed is not None:
        return computed
    return list(first.outputs[0].shape) if first.outputs[0].shape is not None else []


def _copying_target(first: gs.Node) -> list[int] | None:
    """The constant target of a Reshape with allowzero 0 (whose 0 entries copy its input's dims), else None."""
    if first.op != "Reshape" or int(first.attrs.get("allowzero", 0)):
        return None
    return const_ints(present(first, 1))


def _target(first: gs.Node, second: gs.Node) -> _Target | Reject:
    """The merged Reshape's shape and allowzero flag, or why there is none."""
    if second.op == "Reshape":
        shape = const_ints(present(second, 1))
        if shape is None:
            return Reject("shape-not-constant", present(second, 1))
        allowzero = bool(second.attrs.get("allowzero", 0))
        if allowzero or 0 not in shape:
            return _Target(shape, allowzero and 0 in shape)
        mid = _mid_shape(first)
        first_target = _copying_target(first)
        resolved = []
        for i, d in enumerate(shape):
            if d == 0 and first_target is not None and i < len(first_target) and first_target[i] == 0:
                d = 0  # a copy of a copy: x's own dim i
            elif d == 0:
                if i >= len(mid) or not isinstance(mid[i], (int, np.integer)) or mid[i] < 0:
                    return Reject("copy-dim-unknown", first.outputs[0])
                d = int(mid[i])
            resolved.append(d)
        return _Target(resolved, False)
    x_shape = static_shape(first.inputs[0])
    mid = reshape_like_out(first, x_shape) if x_shape is not None else None
    out = reshape_like_out(second, mid) if mid is not None else None
    if out is None:
        return Reject("shape-unknown", first.inputs[0] if x_shape is None else None)
    return _Target(out, False)


@register_pass
class CollapseReshapesPass(PatternRewritePass[State, _Pair]):
    """Pattern names are ``<op><arity>><op><arity>`` (e.g. ``Reshape2>Flatten1``); the variant holds both forms."""

    name = "collapse-reshapes"
    summary = "Collapse chains of Reshape/Flatten/Squeeze/Unsqueeze into a single Reshape."
    anchor_ops = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")
    until_stable = True

    def patterns(self, state: State) -> dict[str, tuple[gs.GraphPattern, _Pair]]:
        pairs = [_Pair(a, b) for a in _FORMS for b in _FORMS]
        return {f"{p.first.op}{p.first.arity}>{p.second.op}{p.second.arity}": (_pattern(p), p) for p in pairs}

    def check(self, m: Match[_Pair], state: State) -> _Target | Reject:
        return _target(m.get("first"), m.get("second"))

    def rewrite(self, m: Match[_Pair], plan: _Target, state: State, names: NameGen) -> list[gs.Node]:
        first, second = m.get("first"), m.get("second")
        name = names()
        const = gs.Constant(f"{name}/shape", np.array(plan.shape, dtype=np.int64))
        attrs = {"allowzero": 1} if plan.allowzero else {}
        return [gs.Node("Reshape", name=name, attrs=attrs, inputs=[first.inputs[0], const], outputs=[second.outputs[0]])]
