"""The tf2onnx lowering of Keras ``MultiHeadAttention``'s two einsums, as a pattern plus its soundness checks.

Keras computes ``scores = einsum("aecd,abcd->acbe", key, query)`` (transposed scores [B,H,Sk,Sq],
Softmax on axis 2) and ``out = einsum("acbe,aecd->abcd", probs, value)``. tf2onnx turns each einsum
into Unsqueeze -> 5-D Transpose -> Reshape to [B*H, ., .] -> MatMul -> Reshape to 5-D -> Squeeze, with
the Reshape targets computed at run time from ``Shape`` of the 5-D tensors when the batch is dynamic.

Variants are ``KerasVariant(scaled, dynamic)``, keyed ``<q>/<targets>:<order>``: ``scaled`` (Mul on the
query before the einsum, Keras' 1/√D) or ``plain``; ``dynamic`` (the Reshape targets are tf2onnx's run-time
Shape/Gather/ReduceProd/Max/Concat plumbing, matched with the site) or ``const`` (constant targets, e.g.
after fold-constants).
Node names: qs, <x>u/<x>t/<x>r (Unsqueeze, 5-D Transpose, Reshape for x in q,k,p,v), qrt, vrt, sc, sc5,
sc4, sm, o, o5, out; dynamic plumbing <x>sh, <x>g, <x>pr, t<x>, sc5m/tsc5, o5m/to5.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import onnx_graphsurgeon as gs

from surgery.graph_utils import commuted_patterns, const_value, scalar_value
from surgery.rewrite import Match

# (unsqueeze axis, transpose perm) of each 5-D operand; "p" is the softmax output
LAYOUT = {"q": (1, [0, 3, 1, 2, 4]), "k": (2, [0, 3, 1, 2, 4]), "v": (2, [0, 3, 2, 4, 1]), "p": (2, [0, 1, 4, 2, 3])}
FLAT = ("q", "k", "p", "v")  # Reshape <x>r: [B,H,a,b,c] -> [B*H, ., .]
UNFLAT = {"sc5": ("k", "q"), "o5": ("p", "v")}  # Reshape -> [B,H,.,.,1]; its B,H come from these operands
COMMUTATIVE = frozenset({"Mul", "Max"})


def _perm(perm: list[int]):
    return lambda node: list(node.attrs.get("perm", [])) == perm


def _softmax_axis2(node: gs.Node) -> bool:
    return node.attrs.get("axis", -1) in (2, -2)


class KerasVariant(NamedTuple):
    """``scaled``: a Mul on the query before the einsum; ``dynamic``: run-time Reshape targets."""

    scaled: bool
    dynamic: bool

    @property
    def key(self) -> str:
        return f"{'scaled' if self.scaled else 'plain'}/{'dynamic' if self.dynamic else 'const'}"

    @property
    def variables(self) -> tuple[str, ...]:
        """The pattern's variable names, in the order of ``Match.inputs``."""
        return _variables(self.scaled, self.dynamic)

    def input(self, m: Match, name: str) -> gs.Tensor:
        return m.inputs[self.variables.index(name)]


@lru_cache(maxsize=1)
def build_variants() -> dict[str, tuple[gs.GraphPattern, KerasVariant]]:
    """Every variant and operand order by pattern key; patterns are immutable, so every run shares them."""
    out: dict[str, tuple[gs.GraphPattern, KerasVariant]] = {}
    for scaled in (True, False):
        for dynamic in (True, False):
            variant = KerasVariant(scaled, dynamic)
            nodes, variables = _variant_nodes(scaled, dynamic)
            for order, pattern in commuted_patterns(variables, nodes, ["out"], COMMUTATIVE):
                out[f"{variant.key}:{order}"] = (pattern, variant)
    return out


@lru_cache(maxsize=None)
def _variables(scaled: bool, dynamic: bool) -> tuple[str, ...]:
    return tuple(_variant_nodes(scaled, dynamic)[1])


def _variant_nodes(scaled: bool, dynamic: bool) -> tuple[list[tuple], list[str]]:
    """``dynamic``: each Reshape target is the tf2onnx run-time plumbing, matched whole so it dies with the
    site: Concat(ReduceProd(Gather(Shape(x5), [0,1])), c, c) to flatten, Concat(Max(Gather.., Gather..), c, c, 1)
    to unflatten. ``const``: the targets are variables (checked to be constants)."""
    # "oax" (the last Squeeze's axes) comes first so that GraphPattern starts at the site's output and
    # climbs: entered top-down, gs 0.6 miscounts a consumer that a sibling branch mapped (the Shape
    # plumbing makes every 5-D tensor a diamond) as an outside consumer and drops the match.
    variables = ["oax", "q", "k", "v"] + ([] if dynamic else [f"t{n}" for n in (*FLAT, *UNFLAT)])
    nodes: list[tuple] = []
    q = "q"
    if scaled:
        nodes.append(("qs", "Mul", ["q", "$qscale"]))
        q = "qs"

    def five_d(name: str, src: str) -> None:
        nodes.append((f"{name}u", "Unsqueeze", [src, f"${name}ax"]))
        nodes.append((f"{name}t", "Transpose", [f"{name}u"], _perm(LAYOUT[name][1])))
        target = f"t{name}"
        if dynamic:
            nodes.extend([(f"{name}sh", "Shape", [f"{name}t"]), (f"{name}g", "Gather", [f"{name}sh", f"${name}gi"]),
                      (f"{name}pr", "ReduceProd", [f"{name}g"]), (target, "Concat", [f"{name}pr", f"${name}c1", f"${name}c2"])])
        nodes.append((f"{name}r", "Reshape", [f"{name}t", target]))

    def unflat_target(name: str) -> str:
        a, b = UNFLAT[name]
        if dynamic:
            nodes.extend([(f"{name}m", "Max", [f"{a}g", f"{b}g"]),
                      (f"t{name}", "Concat", [f"{name}m", f"${name}c1", f"${name}c2", f"${name}c3"])])
        return f"t{name}"

    five_d("q", q)
    nodes.append(("qrt", "Transpose", ["qr"], _perm([0, 2, 1])))
    five_d("k", "k")
    nodes.append(("sc", "MatMul", ["kr", "qrt"]))
    nodes += [("sc5", "Reshape", ["sc", unflat_target("sc5")]), ("sc4", "Squeeze", ["sc5", "$scax"]),
              ("sm", "Softmax", ["sc4"], _softmax_axis2)]
    five_d("p", "sm")
    five_d("v", "v")
    nodes += [("vrt", "Transpose", ["vr"], _perm([0, 2, 1])), ("o", "MatMul", ["pr", "vrt"])]
    nodes += [("o5", "Reshape", ["o", unflat_target("o5")]), ("out", "Squeeze", ["o5", "oax"])]
    return nodes, variables


def dims(m: Match[KerasVariant]) -> dict[str, int | None] | None:
    """Sq, Sk, H, D, Dv read off Q [B,Sq,H,D], K [B,Sk,H,D], V [B,Sk,H,Dv]; None unless H, D, Dv are static."""
    shapes = [m.variant.input(m, n).shape for n in ("q", "k", "v")]
    if any(s is None or len(s) != 4 for s in shapes):
        return None
    (_, sq, h, d), (_, sk, hk, dk), (_, skv, hv, dv) = shapes

    def static(x):
        return int(x) if isinstance(x, (int, np.integer)) and x > 0 else None

    h, d, dv = static(h), static(d), static(dv)
    if h is None or d is None or dv is None or static(hk) != h or static(hv) != h or static(dk) != d:
        return None
    sk = static(sk) if static(sk) is not None else static(skv)
    return {"Sq": static(sq), "Sk": sk, "H": h, "D": d, "Dv": dv}


def bad_axes(m: Match[KerasVariant]) -> gs.Tensor | None:
    """The first axes tensor that is off: Unsqueeze axes as LAYOUT says, both Squeezes dropping the trailing
    unit axis (4 or -1); None when all are right."""
    bad = next((m.constants[f"{n}ax"] for n in LAYOUT if _ints(m.constants[f"{n}ax"]) != [LAYOUT[n][0]]), None)
    if bad is not None:
        return bad
    return next((t for t in (m.constants["scax"], m.variant.input(m, "oax")) if _ints(t) not in ([4], [-1])), None)


def unproven_target(m: Match[KerasVariant], d: dict[str, int | None]) -> gs.Tensor | None:
    """The first Reshape target not proven to fold [B,H] into one dim (or unfold it) and keep the rest;
    None when every one is.

    Dynamic plumbing: Gather indices [0,1] on axis 0, a full Shape, ReduceProd over everything with
    keepdims, Concat on axis 0; constant targets: the leading entries equal the static B*H (or B, H).
    Either way the trailing entries equal the static dims, with at most one -1 (the element count
    then fixes it).
    """
    dynamic = m.variant.dynamic
    tails = {"q": [d["Sq"], d["D"]], "k": [d["Sk"], d["D"]], "v": [d["Dv"], d["Sk"]], "p": [d["Sq"], d["Sk"]],
             "sc5": [d["Sk"], d["Sq"], 1], "o5": [d["Sq"], d["Dv"], 1]}
    for name, tail in tails.items():
        reshape = m.get(f"{name}r" if name in FLAT else name)
        if dynamic:
            entries = [x for i in range(1, len(tail) + 1) for x in _ints(m.constants[f"{name}c{i}"]) or [None]]
            ok = _plumbing_ok(m, name) and None not in entries
        else:
            value = const_value(reshape.inputs[1])
            lead = 1 if name in FLAT else 2
            head = _static_head(m.get(f"{name}t" if name in FLAT else f"{UNFLAT[name][0]}t").outputs[0], lead)
            entries = None if value is None else [int(x) for x in value.reshape(-1)]
            ok = head is not None and entries is not None and entries[:lead] == head
            entries = entries[lead:] if ok else []
        if not ok or not _tail_ok(entries, tail):
            return reshape.inputs[1]
    return None


def _plumbing_ok(m: Match[KerasVariant], name: str) -> bool:
    concat = m.get(f"t{name}")
    if int(concat.attrs.get("axis", 0)) != 0:
        return False
    if name not in FLAT:
        return True  # Max of two [B,H] pairs, each checked with its own operand
    shape, gather, prod = m.get(f"{name}sh"), m.get(f"{name}g"), m.get(f"{name}pr")
    return (shape.attrs.get("start", 0) == 0 and "end" not in shape.attrs and int(gather.attrs.get("axis", 0)) == 0
            and _ints(m.constants[f"{name}gi"]) == [0, 1] and "axes" not in prod.attrs
            and int(prod.attrs.get("keepdims", 1)) == 1)


def _static_head(t: gs.Tensor, lead: int) -> list[int] | None:
    shape = t.shape or []
    if len(shape) < 2 or not all(isinstance(x, (int, np.integer)) and x > 0 for x in shape[:2]):
        return None
    return [int(shape[0]) * int(shape[1])] if lead == 1 else [int(shape[0]), int(shape[1])]


def _tail_ok(entries: list[int], tail: list[int | None]) -> bool:
    if len(entries) != len(tail) or entries.count(-1) > 1:
        return False
    return all(e == -1 or (t is not None and e == t) for e, t in zip(entries, tail))


def _ints(t: gs.Tensor) -> list[int] | None:
    v = const_value(t)
    return None if v is None else [int(a) for a in np.asarray(v).reshape(-1)]


def scale(m: Match[KerasVariant]) -> float | None:
    return scalar_value(m.constants["qscale"]) if m.variant.scaled else 1.0
