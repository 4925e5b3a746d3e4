"""Pattern variants for ``fuse-attention`` (the scaled-dot-product core) and the helpers that read a match.

A variant is a ``Variant(qk, scale, mask, casts)``; its pattern key is ``<qk>/<scale>/<mask>/<casts>:<order>``:

- ``qk``: ``kt`` (K is [B,H,S,D], transposed by perm 0,1,3,2), ``kbshd`` (K is [B,S,H,D], transposed by
  perm 0,2,3,1 straight from the head split) or ``gqa`` (K and V are [B,Hkv,S,D] repeated to H heads by
  Unsqueeze(2) -> Expand -> Reshape, the HF ``repeat_kv``).
- ``scale``: ``none``, ``mul``/``div`` (on the scores), ``qmul``/``qdiv`` (on Q before the MatMul) or
  ``both`` (Mul on Q and on K^T, each by √scale).
- ``mask``: ``none``, ``add`` (additive float mask), ``where`` (Where(cond, scores, -big)) or
  ``where-inv`` (Where(cond, -big, scores)).
- ``casts``: 0-2 Casts between Softmax and the second MatMul (HF ``.to(value.dtype)``); they must not
  change the dtype.
"""
from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Literal, NamedTuple, get_args

import numpy as np
import onnx_graphsurgeon as gs

from surgery.graph_utils import commuted_patterns, const_value, scalar_value
from surgery.rewrite import Match

QkForm = Literal["gqa", "kt", "kbshd"]
ScaleForm = Literal["both", "qmul", "qdiv", "mul", "div", "none"]
MaskForm = Literal["none", "add", "where", "where-inv"]
QK_FORMS: tuple[QkForm, ...] = get_args(QkForm)  # gqa first: it covers the larger site
SCALES: tuple[ScaleForm, ...] = get_args(ScaleForm)  # Q-side scales first: "none" would match with Q = Q·c
MASKS: tuple[MaskForm, ...] = get_args(MaskForm)
MAX_CASTS = 2
_PERM_KT = [0, 1, 3, 2]
_PERM_KBSHD = [0, 2, 3, 1]


class Variant(NamedTuple):
    """One form of the attention core: how K arrives, where the scale sits, the mask, the Casts after Softmax."""

    qk: QkForm
    scale: ScaleForm
    mask: MaskForm
    casts: int

    @property
    def key(self) -> str:
        return f"{self.qk}/{self.scale}/{self.mask}/{self.casts}"

    @property
    def variables(self) -> tuple[str, ...]:
        """The pattern's variable names, in the order of ``Match.inputs``."""
        return _nodes_and_variables(self)[1]

    def input(self, m: Match, name: str) -> gs.Tensor:
        """The graph tensor bound to variable ``name`` (q, k, v, mask, ...)."""
        return m.inputs[self.variables.index(name)]


def _perm(perm: list[int]):
    return lambda node: list(node.attrs.get("perm", [])) == perm


def _softmax_last(node: gs.Node) -> bool:
    return node.attrs.get("axis", -1) in (-1, 3)


def build_variants(ops_present: frozenset[str]) -> dict[str, tuple[gs.GraphPattern, Variant]]:
    """All core variants whose ops all occur in the graph (cheap pruning of the variant product), by pattern key."""
    out: dict[str, tuple[gs.GraphPattern, Variant]] = {}
    for form in itertools.product(QK_FORMS, SCALES, MASKS, range(MAX_CASTS + 1)):
        variant = Variant(*form)
        nodes, _ = _nodes_and_variables(variant)
        if not {n[1] for n in nodes} <= ops_present:
            continue
        out.update((f"{variant.key}:{order}", (pattern, variant)) for order, pattern in _patterns(variant))
    return out


@lru_cache(maxsize=None)
def _patterns(variant: Variant) -> tuple[tuple[str, gs.GraphPattern], ...]:
    """Every operand order of one variant; patterns are immutable, so every run shares them."""
    nodes, variables = _nodes_and_variables(variant)
    return tuple(commuted_patterns(list(variables), list(nodes), ["out"]))


@lru_cache(maxsize=None)
def _nodes_and_variables(variant: Variant) -> tuple[list[tuple], tuple[str, ...]]:
    qk, scale, mask, casts = variant
    variables = ["q", "k", "v"]
    nodes: list[tuple] = []
    q = "q"
    if scale in ("qmul", "qdiv", "both"):
        nodes.append(("qs", "Div" if scale == "qdiv" else "Mul", ["q", "$qscale"]))
        q = "qs"
    if qk == "gqa":
        variables += ["kexp", "kshape", "vexp", "vshape"]
        nodes += [("ku", "Unsqueeze", ["k", "$kaxes"]), ("ke", "Expand", ["ku", "kexp"]), ("kr", "Reshape", ["ke", "kshape"]),
                  ("kt", "Transpose", ["kr"], _perm(_PERM_KT))]
    else:
        nodes.append(("kt", "Transpose", ["k"], _perm(_PERM_KT if qk == "kt" else _PERM_KBSHD)))
    kt = "kt"
    if scale == "both":
        nodes.append(("ks", "Mul", ["kt", "$kscale"]))
        kt = "ks"
    nodes.append(("qk", "MatMul", [q, kt]))
    last = "qk"
    if scale in ("mul", "div"):
        nodes.append(("sc", "Mul" if scale == "mul" else "Div", ["qk", "$scale"]))
        last = "sc"
    if mask != "none":
        variables.append("mask")
        ins = {"add": [last, "mask"], "where": ["mask", last, "$fill"], "where-inv": ["mask", "$fill", last]}[mask]
        nodes.append(("masked", "Add" if mask == "add" else "Where", ins))
        last = "masked"
    nodes.append(("sm", "Softmax", [last], _softmax_last))
    last = "sm"
    for i in range(casts):
        nodes.append((f"cast{i}", "Cast", [last]))
        last = f"cast{i}"
    v = "v"
    if qk == "gqa":
        nodes += [("vu", "Unsqueeze", ["v", "$vaxes"]), ("ve", "Expand", ["vu", "vexp"]), ("vr", "Reshape", ["ve", "vshape"])]
        v = "vr"
    nodes.append(("out", "MatMul", [last, v]))
    return nodes, tuple(variables)


def scale_of(m: Match, scale: ScaleForm) -> float | None:
    """The softmax scale the matched subgraph applies to Q·K^T (1.0 when none), or None if not scalar."""
    if scale == "none":
        return 1.0
    key = {"mul": "scale", "div": "scale", "qmul": "qscale", "qdiv": "qscale"}.get(scale)
    if scale == "both":
        a, b = scalar_value(m.constants["qscale"]), scalar_value(m.constants["kscale"])
        return None if a is None or b is None else a * b
    value = scalar_value(m.constants[key])
    if value is None or value == 0:
        return None
    return 1.0 / value if scale in ("div", "qdiv") else value


def scale_constant(m: Match) -> gs.Tensor | None:
    """The scale constant ``scale_of`` could not use (the first when each is fine on its own)."""
    found = [m.constants[n] for n in ("scale", "qscale", "kscale") if n in m.constants]
    return next((t for t in found if scalar_value(t) in (None, 0)), found[0] if found else None)


def is_large_negative(t: gs.Tensor) -> bool:
    v = scalar_value(t)
    return v is not None and v <= -1e4


def causal_constant(t: gs.Tensor) -> bool:
    """True when ``t`` is a constant additive mask that is exactly causal (0 on/below the diagonal)."""
    v = const_value(t)
    if v is None or v.ndim < 2 or v.shape[-1] != v.shape[-2] or v.dtype.kind != "f":
        return False
    flat = v.reshape(-1, v.shape[-2], v.shape[-1])
    upper = np.triu(np.ones(v.shape[-2:], bool), 1)
    return bool(np.all(flat[:, ~upper] == 0) and np.all(flat[:, upper] <= -1e4))


def static_heads(q: gs.Tensor, depth: int = 4) -> int | None:
    """Head count of a [B,H,S,D] tensor: its static dim 1, else read off the head-split Reshape.

    Walks up through element-wise ops (rotary embedding) to Transpose(0,2,1,3) <- Reshape(x, shape)
    and takes the shape's H entry, or hidden/D when H is -1 and D and x's last dim are static.
    """
    if q.shape is not None and len(q.shape) == 4 and isinstance(q.shape[1], int):
        return q.shape[1]
    node = q.inputs[0] if len(q.inputs) == 1 else None
    if node is None or depth == 0:
        return None
    if node.op in ("Add", "Mul", "Cast", "RotaryEmbedding") and not isinstance(node.inputs[0], gs.Constant):
        return static_heads(node.inputs[0], depth - 1)
    if node.op != "Transpose" or list(node.attrs.get("perm", [])) != [0, 2, 1, 3]:
        return None
    split = node.inputs[0].inputs[0] if len(node.inputs[0].inputs) == 1 else None
    if split is None or split.op != "Reshape":
        return None
    dims = _shape_entries(split.inputs[1])
    if dims is None:
        return None
    heads, size = dims[2], dims[3]
    hidden = split.inputs[0].shape[-1] if split.inputs[0].shape else None
    if heads is not None and heads > 0:
        return heads
    if heads == -1 and size and size > 0 and isinstance(hidden, int) and hidden % size == 0:
        return hidden // size
    return None


def _shape_entries(t: gs.Tensor) -> list[int | None] | None:
    """The 4 entries of a Reshape target (None where not constant), from a constant or a Concat."""
    v = const_value(t)
    if v is not None:
        return [int(x) for x in v.reshape(-1)] if v.size == 4 else None
    concat = t.inputs[0] if len(t.inputs) == 1 else None
    if concat is None or concat.op != "Concat" or len(concat.inputs) != 4:
        return None
    vals = [const_value(i) for i in concat.inputs]
    return [int(x.reshape(-1)[0]) if x is not None and x.size == 1 else None for x in vals]


_SHAPE_ONLY = ("Expand", "Reshape", "Unsqueeze", "Squeeze", "Identity", "Flatten")


def _all_equal_to(t: gs.Tensor, want: float, depth: int = 8) -> bool:
    """True when every element of ``t`` is ``want`` (booleans as 0/1), read through constants, shape-only ops,
    Casts, And/Or and Where."""
    v = const_value(t)
    if v is not None:
        return v.size > 0 and bool(np.all(v.astype(np.float64) == want))
    node = t.inputs[0] if len(t.inputs) == 1 else None
    if node is None or depth == 0 or node.domain not in ("", "ai.onnx", None):
        return False
    if node.op in _SHAPE_ONLY or (node.op == "Cast" and want in (0.0, 1.0)):  # a Cast keeps all-0 and all-1
        return _all_equal_to(node.inputs[0], want, depth - 1)
    if node.op in ("And", "Or") and want in (0.0, 1.0):
        both = [_all_equal_to(i, want, depth - 1) for i in node.inputs]
        return all(both) if (node.op == "And") == (want == 1.0) else any(both)
    if node.op == "Where":
        cond, a, b = node.inputs
        return ((_all_equal_to(cond, 1.0, depth - 1) and _all_equal_to(a, want, depth - 1))
                or (_all_equal_to(cond, 0.0, depth - 1) and _all_equal_to(b, want, depth - 1)))
    return False


def mask_keeps_everything(mask: gs.Tensor, kind: int, inverted: bool) -> bool:
    """True when the attention mask changes no score: an additive mask (kind 1) of zeros, a boolean keep-mask
    (kind 2) that is all True (all False when ``inverted``: the condition marks the masked positions)."""
    if kind == 1:
        return _all_equal_to(mask, 0.0)
    return kind == 2 and _all_equal_to(mask, 0.0 if inverted else 1.0)
