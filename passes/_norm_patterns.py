"""Pattern pieces and checks shared by the normalization fusions (``passes/fuse_*norm*.py``).

The builders add the node chains exporters write for a normalization to a ``gs.GraphPattern``
(reduce, ``num / sqrt(var + eps)``, the affine tail); the checks read a matched chain back and say
why it cannot be fused, as a ``Reject`` naming the offending tensor where there is one.
"""
from __future__ import annotations

from enum import Enum
from typing import Any, Iterable, Literal, NamedTuple

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from surgery.graph_utils import const_value, is_const, producer, scalar_value
from surgery.rewrite import Match, Reject


def add_reduce(pattern: gs.GraphPattern, name: str, op: str, data: int, axes_as_input: bool) -> int:
    """Add a Reduce* node to ``pattern`` in the attribute form (<18) or the axes-input form (>=18)."""
    inputs = [data, pattern.variable()] if axes_as_input else [data]
    return pattern.add(name, op, inputs=inputs)


def reduce_axes(node: gs.Node) -> list[int] | None:
    """Axes of a Reduce* node (attribute or constant input); None when absent or not constant."""
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if len(node.inputs) > 1:
        v = const_value(node.inputs[1])
        return None if v is None else [int(a) for a in np.asarray(v).reshape(-1)]
    return None


def is_last_axis(axes: list[int] | None, rank: int | None) -> bool:
    """True when ``axes`` names exactly the last axis (a positive axis needs the rank)."""
    if axes is None or len(axes) != 1:
        return False
    return axes[0] == -1 or (rank is not None and axes[0] == rank - 1)


def channel_vector(values: np.ndarray | None, size: int | None, rank: int | None, channel_axis: int = -1) -> np.ndarray | None:
    """``values`` as a 1-D vector over one axis when they broadcast only along it, else None.

    ``channel_axis=-1`` accepts shapes ``[C]`` / ``[1, ..., C]``; ``channel_axis=1`` accepts ``[C, 1, ...]``
    or ``[1, C, 1, ...]`` (the NCHW per-channel layout). A single value is expanded when ``size`` is known.
    """
    if values is None:
        return None
    v = np.asarray(values)
    if rank is not None and v.ndim > rank:
        return None
    if v.size == 1 and size is not None:
        return np.full(size, v.reshape(-1)[0], dtype=v.dtype)
    if channel_axis == -1:
        ok = v.ndim >= 1 and all(d == 1 for d in v.shape[:-1])
    else:
        if rank is not None and v.ndim == rank and v.shape[0] == 1:
            v = v.reshape(v.shape[1:])  # [1, C, 1, ...] is the same per-channel broadcast
        ok = rank is not None and v.ndim == rank - 1 and all(d == 1 for d in v.shape[1:])
    if not ok or (size is not None and v.size != size):
        return None
    return v.reshape(-1)


class RsqrtForm(Enum):
    """An exported spelling of ``num / sqrt(var + eps)``; the value names it in variant keys."""

    DIV = "div"  # Div(num, s)
    RECIP_MUL = "recip-mul"  # Mul(num, Reciprocal(s))
    RECIP_MULR = "recip-mulr"  # Mul(Reciprocal(s), num)
    DIV1_MUL = "div1-mul"  # Mul(num, Div(1, s))
    DIV1_MULR = "div1-mulr"  # Mul(Div(1, s), num)

    @property
    def inverse(self) -> str | None:
        """The op computing 1/s (Reciprocal or Div(1, s)); None for the plain Div."""
        if self in (RsqrtForm.RECIP_MUL, RsqrtForm.RECIP_MULR):
            return "Reciprocal"
        return "Div" if self in (RsqrtForm.DIV1_MUL, RsqrtForm.DIV1_MULR) else None

    @property
    def inverse_first(self) -> bool:
        """Whether the Mul reads 1/s as its first operand."""
        return self in (RsqrtForm.RECIP_MULR, RsqrtForm.DIV1_MULR)

    @property
    def ops(self) -> set[str]:
        return {"Div"} if self.inverse is None else {self.inverse, "Mul"}


def add_rsqrt_normalize(pattern: gs.GraphPattern, num: int, var: int, form: RsqrtForm, eps: int) -> int:
    """Add ``num / sqrt(var + eps)`` to ``pattern`` in the spelling ``form``.

    Make ``eps`` the pattern's first variable: GraphPattern starts matching at the first consumer of
    input 0, and starting mid-chain (at the eps Add) avoids a GraphPattern 0.6 false mismatch where a
    consumer mapped while recursing into a sibling branch is later counted as an outside consumer.

    Node names: eps_add, sqrt, inv (the 1/s node, when there is one), norm.
    """
    a = pattern.add("eps_add", "Add", inputs=[var, eps])
    s = pattern.add("sqrt", "Sqrt", inputs=[a])
    if form.inverse is None:
        return pattern.add("norm", "Div", inputs=[num, s])
    inv_inputs = [s] if form.inverse == "Reciprocal" else [pattern.variable(), s]
    inv = pattern.add("inv", form.inverse, inputs=inv_inputs)
    return pattern.add("norm", "Mul", inputs=[inv, num] if form.inverse_first else [num, inv])


def rsqrt_normalize_eps(m: Match) -> float | Reject:
    """Epsilon of a matched ``add_rsqrt_normalize``, or why the chain is not a sound normalization."""
    eps_t = m.get("eps_add").inputs[1]
    if not is_const(eps_t):
        return Reject("eps-not-constant", eps_t)
    eps = scalar_value(eps_t)
    if eps is None:
        return Reject("eps-not-scalar", eps_t)
    if m.has("inv") and m.get("inv").op == "Div" and scalar_value(m.get("inv").inputs[0]) != 1.0:
        return Reject("reciprocal-numerator-not-1", m.get("inv").inputs[0])
    return eps


class Affine(NamedTuple):
    """The optional per-channel tail: Mul by gamma, then Add of beta.

    ``gamma`` is "" (no Mul), "g" (Mul(t, gamma)) or "gr" (gamma first); ``beta`` likewise "", "b" or "br".
    """

    gamma: Literal["", "g", "gr"] = ""
    beta: Literal["", "b", "br"] = ""

    @property
    def key(self) -> str:
        """The tail's name in variant keys: "g-b", "gr-br", "g", ""..."""
        return "-".join(part for part in self if part)

    @property
    def gamma_first(self) -> bool:
        return self.gamma == "gr"

    @property
    def beta_first(self) -> bool:
        return self.beta == "br"


# longest tails first: the first variant to claim a node wins
AFFINE_TAILS = tuple(Affine(g, b) for g, b in
                     (("g", "b"), ("g", "br"), ("gr", "b"), ("gr", "br"), ("g", ""), ("gr", ""), ("", "")))


def add_affine_tail(pattern: gs.GraphPattern, t: int, cast: bool, affine: Affine) -> int:
    """Optional exit Cast (node ``cast``), then the Mul by gamma (``gamma``) and Add of beta (``beta``)."""
    if cast:
        t = pattern.add("cast", "Cast", inputs=[t])
    if affine.gamma:
        w = pattern.variable()
        t = pattern.add("gamma", "Mul", inputs=[w, t] if affine.gamma_first else [t, w])
    if affine.beta:
        w = pattern.variable()
        t = pattern.add("beta", "Add", inputs=[w, t] if affine.beta_first else [t, w])
    return t


def affine_tensors(m: Match, affine: Affine) -> tuple[gs.Tensor | None, gs.Tensor | None]:
    """The gamma and beta operands of a matched ``add_affine_tail`` (None where the tail has none)."""
    gamma = m.get("gamma").inputs[0 if affine.gamma_first else 1] if affine.gamma else None
    beta = m.get("beta").inputs[0 if affine.beta_first else 1] if affine.beta else None
    return gamma, beta


def present_variants(graph: gs.Graph, variants: Iterable[Any]) -> dict[str, Any]:
    """The variants (objects with ``key`` and ``ops``) whose ops all occur in ``graph``, by key, in order.

    A pattern that needs an op the graph lacks cannot match, and building it costs start-up time.
    """
    present = {n.op for n in graph.nodes}
    return {v.key: v for v in variants if v.ops <= present}


def cast_island_source(x: gs.Tensor, exit_cast: gs.Node) -> gs.Tensor | None:
    """For ``x = Cast(src)`` whose block ends in ``exit_cast`` back to src's dtype, return ``src``, else None.

    This is the fp16 export idiom (upcast to fp32, compute, cast back); a fused op that computes in
    fp32 internally (``stash_type=1``) can then read ``src`` directly.
    """
    entry = producer(x)
    if entry is None or entry.op != "Cast" or entry.inputs[0].dtype is None:
        return None
    back = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(exit_cast.attrs["to"])))
    return entry.inputs[0] if np.dtype(entry.inputs[0].dtype) == back else None


def norm_input_and_scale(
    x: gs.Tensor, exit_cast: gs.Node | None, gamma: np.ndarray | None, size: int | None,
) -> tuple[gs.Tensor, np.ndarray] | Reject:
    """A fused normalization's input and scale, or why there is none.

    The input is x, or the source of its fp16 Cast island when ``exit_cast`` closes one; the scale is
    ``gamma`` (ones over the last dim, of ``size``, when there is none) in the input's dtype.
    """
    x_in = x if exit_cast is None else cast_island_source(x, exit_cast)
    if x_in is None:
        return Reject("cast-island-unbalanced", x)
    dtype = x_in.dtype if x_in.dtype is not None else (gamma.dtype if gamma is not None else np.float32)
    if gamma is None:
        if size is None:
            return Reject("hidden-size-unknown", x)
        gamma = np.ones(size, dtype=dtype)
    return x_in, gamma.astype(dtype)
