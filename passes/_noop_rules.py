"""Shape helpers and per-op no-op predicates shared by ``eliminate-noops`` and ``collapse-reshapes``.

A rule takes ``(node, graph)`` and returns a verdict: the index of the input that the node's first
output equals (the node is a no-op), ``None`` (not a no-op), or a short kebab-case rejection reason
(it looks like a no-op, but removing it is not provably safe).

Shapes are trusted only on a node's *input*: the output shape is recomputed from the input shape and
the node's constant parameters, so a stale output annotation cannot make a node look like a no-op.
"""
from __future__ import annotations

import math
from typing import Callable, Union

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from surgery.graph_utils import const_value

Verdict = Union[int, str, None]
Rule = Callable[[gs.Node, gs.Graph], Verdict]

# Slice ends at or beyond this are "to the end" whatever the dim (exporters write INT32_MAX or INT64_MAX).
_SLICE_END_SENTINEL = 2**31 - 1


def static_shape(t: gs.Tensor) -> list[int] | None:
    """The shape of ``t`` if every dim is a known non-negative int, else None."""
    shape = t.shape
    if shape is None or not all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape):
        return None
    return [int(d) for d in shape]


def rank(t: gs.Tensor) -> int | None:
    return None if t.shape is None else len(t.shape)


def const_ints(t: gs.Tensor | None) -> list[int] | None:
    v = const_value(t)
    if v is None or v.dtype.kind not in "iu":
        return None
    return [int(x) for x in v.reshape(-1)]


def present(node: gs.Node, i: int) -> gs.Tensor | None:
    """Input ``i`` unless it is absent or an omitted optional input."""
    if i >= len(node.inputs) or not node.inputs[i].name:
        return None
    return node.inputs[i]


def axes_param(node: gs.Node, index: int = 1) -> list[int] | None | str:
    """Axes from the attribute (old opsets) or a constant input; ``"absent"`` when neither is given."""
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    t = present(node, index)
    if t is None:
        return "absent"
    return const_ints(t)


def onnx_type(dtype) -> int | None:
    """A tensor dtype (numpy dtype or ONNX enum) as an ONNX enum."""
    if dtype is None:
        return None
    if isinstance(dtype, (int, np.integer)):
        return int(dtype)
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


# --- output shapes of the reshape family -------------------------------------------------------


def reshape_out(in_shape: list[int], target: list[int], allowzero: bool) -> list[int] | None:
    out = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= len(in_shape):
                return None
            out.append(in_shape[i])
        else:
            out.append(d)
    if out.count(-1) > 1 or any(d < -1 for d in out):
        return None
    total = math.prod(in_shape)
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or total % known:
            return None
        out[out.index(-1)] = total // known
    return out if math.prod(out) == total else None


def reshape_like_out(node: gs.Node, in_shape: list[int]) -> list[int] | None:
    """Static output shape of a Reshape/Flatten/Squeeze/Unsqueeze given a static input shape."""
    r = len(in_shape)
    if node.op == "Reshape":
        target = const_ints(present(node, 1))
        return None if target is None else reshape_out(in_shape, target, bool(node.attrs.get("allowzero", 0)))
    if node.op == "Flatten":
        axis = int(node.attrs.get("axis", 1))
        axis = axis + r if axis < 0 else axis
        if not 0 <= axis <= r:
            return None
        return [math.prod(in_shape[:axis]), math.prod(in_shape[axis:])]
    axes = axes_param(node)
    if axes is None:
        return None
    if node.op == "Squeeze":
        if axes == "absent":
            return [d for d in in_shape if d != 1]
        norm = {a + r if a < 0 else a for a in axes}
        if not all(0 <= a < r and in_shape[a] == 1 for a in norm):
            return None
        return [d for i, d in enumerate(in_shape) if i not in norm]
    if node.op == "Unsqueeze":
        if axes == "absent":
            return None
        out_rank = r + len(axes)
        norm = sorted({a + out_rank if a < 0 else a for a in axes})
        if len(norm) != len(axes) or not all(0 <= a < out_rank for a in norm):
            return None
        rest = iter(in_shape)
        return [1 if i in norm else next(rest) for i in range(out_rank)]
    return None


# --- rules ------------------------------------------------------------------------------------


def _identity(node: gs.Node, graph: gs.Graph) -> Verdict:
    return 0


def _dropout(node: gs.Node, graph: gs.Graph) -> Verdict:
    training = present(node, 2)
    if training is not None:
        value = const_value(training)
        if value is None or bool(value.reshape(-1)[0]):
            return "training-mode"
    if node.attrs.get("is_test", 1) == 0:  # opset < 7
        return "training-mode"
    if len(node.outputs) > 1 and node.outputs[1].name and (node.outputs[1].outputs or node.outputs[1] in graph.outputs):
        return "mask-used"
    return 0


def _cast(node: gs.Node, graph: gs.Graph) -> Verdict:
    src = onnx_type(node.inputs[0].dtype)
    return 0 if src is not None and src == int(node.attrs["to"]) else None


def _reshape_like(node: gs.Node, graph: gs.Graph) -> Verdict:
    shape = static_shape(node.inputs[0])
    if shape is not None:
        return 0 if reshape_like_out(node, shape) == shape else None
    return 0 if node.op == "Reshape" and _keeps_every_dim(node) else None


def _keeps_every_dim(node: gs.Node) -> bool:
    """A Reshape whose constant target copies every dim of an input of the same rank (0, allowzero=0, or the
    dim's static value), one entry possibly -1: the rest fixed, that entry is the input's own dim."""
    target, x = const_ints(present(node, 1)), node.inputs[0]
    if target is None or x.shape is None or len(target) != len(x.shape) or int(node.attrs.get("allowzero", 0)):
        return False
    kept = [t == 0 or (isinstance(d, int) and t == d) for t, d in zip(target, x.shape)]
    return sum(not k for k in kept) <= 1 and all(k or t == -1 for k, t in zip(kept, target))


def _transpose(node: gs.Node, graph: gs.Graph) -> Verdict:
    perm = node.attrs.get("perm")
    if perm is None:
        r = rank(node.inputs[0])
        return 0 if r is not None and r <= 1 else None
    return 0 if list(perm) == list(range(len(perm))) else None


def _expand(node: gs.Node, graph: gs.Graph) -> Verdict:
    target, x = const_ints(present(node, 1)), node.inputs[0]
    if target is None or x.shape is None or len(target) > len(x.shape):
        return None
    aligned = x.shape[len(x.shape) - len(target):]
    return 0 if all(t == 1 or (isinstance(d, int) and t == d) for t, d in zip(target, aligned)) else None


def _tile(node: gs.Node, graph: gs.Graph) -> Verdict:
    repeats = const_ints(present(node, 1))
    return 0 if repeats is not None and all(r == 1 for r in repeats) else None


def _concat(node: gs.Node, graph: gs.Graph) -> Verdict:
    return 0 if len(node.inputs) == 1 else None


def _slice(node: gs.Node, graph: gs.Graph) -> Verdict:
    x = node.inputs[0]
    if "starts" in node.attrs:  # opset < 10
        starts, ends = list(node.attrs["starts"]), list(node.attrs["ends"])
        axes, steps = node.attrs.get("axes"), None
    else:
        starts, ends = const_ints(present(node, 1)), const_ints(present(node, 2))
        axes = const_ints(present(node, 3)) if present(node, 3) is not None else None
        steps = const_ints(present(node, 4)) if present(node, 4) is not None else None
        if starts is None or ends is None or (present(node, 3) and axes is None) or (present(node, 4) and steps is None):
            return None
    axes = list(axes) if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    r = rank(x)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if axis < 0:
            if r is None:
                return None
            axis += r
        dim = x.shape[axis] if x.shape is not None and axis < len(x.shape) else None
        dim = dim if isinstance(dim, int) else None
        full_start = start == 0 or (dim is not None and start <= -dim)
        full_end = end >= _SLICE_END_SENTINEL or (dim is not None and end >= dim)
        if step != 1 or not full_start or not full_end:
            return None
    return 0


def _pad(node: gs.Node, graph: gs.Graph) -> Verdict:
    pads = list(node.attrs["pads"]) if "pads" in node.attrs else const_ints(present(node, 1))
    return 0 if pads is not None and not any(pads) else None


_NEUTRAL = {"Mul": 1, "Div": 1, "Add": 0, "Sub": 0}


def _arith(node: gs.Node, graph: gs.Graph) -> Verdict:
    """``x*1``, ``1*x``, ``x/1``, ``x+0``, ``0+x``, ``x-0``; ONNX guarantees both operands share a dtype."""
    sides = (1, 0) if node.op in ("Mul", "Add") else (1,)
    for c_idx in sides:
        c = const_value(node.inputs[c_idx])
        if c is None or c.size == 0 or not np.all(c == _NEUTRAL[node.op]):
            continue
        other = node.inputs[1 - c_idx]
        if other.shape is None:
            return "shape-unknown"
        if c.ndim > len(other.shape):
            return "broadcasts"
        aligned = other.shape[len(other.shape) - c.ndim:]
        if not all(cd == 1 or (isinstance(od, int) and cd == od) for cd, od in zip(c.shape, aligned)):
            return "broadcasts"
        return 1 - c_idx
    return None


RULES: dict[str, Rule] = {
    "Identity": _identity,
    "Dropout": _dropout,
    "Cast": _cast,
    "Reshape": _reshape_like,
    "Flatten": _reshape_like,
    "Squeeze": _reshape_like,
    "Unsqueeze": _reshape_like,
    "Transpose": _transpose,
    "Expand": _expand,
    "Tile": _tile,
    "Concat": _concat,
    "Slice": _slice,
    "Pad": _pad,
    "Mul": _arith,
    "Div": _arith,
    "Add": _arith,
    "Sub": _arith,
}
