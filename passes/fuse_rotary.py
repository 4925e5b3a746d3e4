"""``fuse-rotary``: fuse the rotate-half rotary position embedding into one RotaryEmbedding op.

Summary:
    Matches HF Llama's ``q * cos + rotate_half(q) * sin`` with ``rotate_half(x) = Concat(-x2, x1)``
    on a [B,H,S,D] head tensor, as both the TorchScript and the dynamo exporter emit it.
    ``ctx.options.emit`` (``plugin`` is refused: there is no rotary plugin, and the element-wise form is
    what TensorRT fuses itself; leave fuse-rotary out of a plugin pipeline):

    - ``onnx``: ``RotaryEmbedding`` (opset 23; interleaved=0, rotary_embedding_dim=D) on X [B,H,S,D]
      with half-width caches [B,S,D/2] (no position_ids: the caches are already per position).
      onnxruntime wants the caches' batch equal to X's, so a batch-1 cache is Expanded to B.
    - ``ort``: ``com.microsoft.RotaryEmbedding`` on X [B,H,S,D] with 2-D caches [S,D/2] and
      position_ids = [0] (the offset form: positions 0..S-1 of the cache).

Matches::

    X ─┬─────────────────────────────── Mul(·, cos) ─┐
       ├─ Slice[D/2:] ─ Neg ─┐                       Add ─> out
       └─ Slice[:D/2] ───── Concat(-1) ─ Mul(·, sin) ─┘
      -> RotaryEmbedding(X, cos[..., :D/2], sin[..., :D/2])

Requires:
    onnx emit: the opset raised to 23 (dry-run on a copy first; once per run).

Rejects:
    not-4d (X of another rank), head-dim-unknown (D not static and even), slice-not-halves (the two
    Slices are not [0, D/2) and [D/2, D) on the last axis with step 1), concat-axis (rotate-half not
    concatenated on the last axis), cos-sin-shape (cos/sin not [1|B, 1, S, D]), halves-unproven (cos
    or sin is not provably two equal halves: a constant, or Cos/Sin of Concat(f, f) on the last axis,
    through Unsqueeze/Cast/scalar Mul), cos-batch-not-1 (ort: the 2-D cache needs cos batch 1),
    opset-raise-refused.

Numerics:
    The same products and sums (x1·c − x2·s, x2·c + x1·s); fp32 results agree to rounding (~1e-7).
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import onnx_graphsurgeon as gs

from surgery.graph_utils import NameGen, commuted_patterns, const_value, producer, scalar_value
from surgery.registry import register_pass
from surgery.rewrite import Match, PatternRewritePass, Reject, State

MS_DOMAIN = "com.microsoft"
ROTARY_OPSET = 23
_NODES = [("lo", "Slice", ["x", "$s0", "$e0", "$a0", "$st0"]), ("hi", "Slice", ["x", "$s1", "$e1", "$a1", "$st1"]),
          ("neg", "Neg", ["hi"]), ("rot", "Concat", ["neg", "lo"]),
          ("xc", "Mul", ["x", "cos"]), ("rs", "Mul", ["rot", "sin"]), ("out", "Add", ["xc", "rs"])]


@lru_cache(maxsize=1)
def _patterns() -> dict[str, tuple[gs.GraphPattern, None]]:
    """Every operand order of the one form, keyed by the order; patterns are immutable, so every run shares them."""
    return {order: (p, None) for order, p in commuted_patterns(["x", "cos", "sin"], _NODES, ["out"])}


class RotaryPlan(NamedTuple):
    """X [B,H,S,D], the full-width caches [1|B,1,S,D], D/2, and whether the caches need X's batch."""

    x: gs.Tensor
    cos: gs.Tensor
    sin: gs.Tensor
    half: int
    expand: bool  # onnx emit: a cache batch differs from X's (onnxruntime checks it), so Expand to it


@register_pass
class FuseRotaryPass(PatternRewritePass[State, None]):
    """One form, no variant parameters: the pattern key is the operand order of the Muls and the Add."""

    name = "fuse-rotary"
    summary = "Fuse rotate-half rotary embedding (x*cos + rotate_half(x)*sin) into RotaryEmbedding-23 or com.microsoft"
    anchor_ops = ("Neg",)
    emits = ("onnx", "ort")

    def required_opset(self, state: State) -> int | None:
        return ROTARY_OPSET if state.emit == "onnx" else None

    def patterns(self, state: State) -> dict[str, tuple[gs.GraphPattern, None]]:
        return _patterns()

    def check(self, m: Match[None], state: State) -> RotaryPlan | Reject:
        x, cos, sin = m.inputs[0], m.inputs[1], m.inputs[2]
        if x.shape is not None and len(x.shape) != 4:
            return Reject("not-4d", x)
        d = x.shape[-1] if x.shape else None
        if not isinstance(d, (int, np.integer)) or d <= 0 or d % 2:
            return Reject("head-dim-unknown", x)
        half = int(d) // 2
        if not (_is_slice(m, "0", 0, half, half) and _is_slice(m, "1", half, None, half)):
            return Reject("slice-not-halves")
        if int(m.get("rot").attrs.get("axis", 0)) not in (-1, 3):
            return Reject("concat-axis")
        for t in (cos, sin):
            if t.shape is None or len(t.shape) != 4 or t.shape[1] != 1 or t.shape[-1] != d:
                return Reject("cos-sin-shape", t)
        for t in (cos, sin):
            if not _equal_halves(t, half):
                return Reject("halves-unproven", t)
        if state.emit == "ort":
            for t in (cos, sin):
                if t.shape[0] != 1:
                    return Reject("cos-batch-not-1", t)
        expand = state.emit == "onnx" and (cos.shape[0] != x.shape[0] or sin.shape[0] != x.shape[0])
        return RotaryPlan(x, cos, sin, half, expand)

    def rewrite(self, m: Match[None], plan: RotaryPlan, state: State, names: NameGen) -> list[gs.Node]:
        x, cos, sin, half, emit, new = plan.x, plan.cos, plan.sin, plan.half, state.emit, []

        def node(op, ins, attrs=None, dtype=None, out=None, domain=None):
            t = out if out is not None else gs.Variable(names("_t"), dtype=dtype if dtype is not None else x.dtype)
            new.append(gs.Node(op, name=names(), attrs=attrs or {}, inputs=ins, outputs=[t], domain=domain))
            return t

        def i64(*values):
            return gs.Constant(names("_c"), np.array(values, np.int64))

        squeeze = i64(0, 1) if emit == "ort" else i64(1)
        caches = [node("Squeeze", [node("Slice", [t, i64(0), i64(half), i64(-1)]), squeeze]) for t in (cos, sin)]
        if emit == "ort":
            node("RotaryEmbedding", [x, i64(0), *caches], {"interleaved": 0}, out=m.outputs[0], domain=MS_DOMAIN)
            return new
        if plan.expand:  # ORT checks the cache batch against X's
            batch = node("Shape", [x], {"start": 0, "end": 1}, dtype=np.int64)
            target = node("Concat", [batch, i64(1, 1)], {"axis": 0}, dtype=np.int64)
            caches = [node("Expand", [c, target]) for c in caches]
        node("RotaryEmbedding", [x, *caches], {"interleaved": 0, "rotary_embedding_dim": 2 * half}, out=m.outputs[0])
        return new

    def unmatched_reason(self, node: gs.Node, state: State) -> str:
        nxt = [c.op for c in node.outputs[0].outputs]
        if nxt != ["Concat"]:
            return f"no-rotate-half (Neg feeds {nxt}, not one Concat)"
        return "no-rotary-pattern (Neg -> Concat found; x*cos + rotate_half(x)*sin around it not recognised)"

    def site(self, nodes: list[gs.Node]) -> str:
        return next((n.name for n in nodes if n.op == "Add"), nodes[0].name)


def _is_slice(m: Match[None], i: str, start: int, end: int | None, half: int) -> bool:
    """Slice ``i`` takes [start, end) of the last axis with step 1 (``end`` None: to the end, any end >= 2·half)."""
    values = [scalar_value(m.constants[f"{k}{i}"]) for k in ("s", "e", "a", "st")]
    if any(v is None for v in values):
        return False
    s, e, a, st = (int(v) for v in values)
    end_ok = e == end if end is not None else e >= 2 * half  # the export writes INT64_MAX for "to the end"
    return a in (-1, 3) and st == 1 and s == start and end_ok


def _equal_halves(t: gs.Tensor, half: int) -> bool:
    """``t[..., :half] == t[..., half:]`` provably: a constant, or Cos/Sin of Concat(f, f) on the last axis."""
    v = const_value(t)
    if v is not None:
        return v.shape[-1] == 2 * half and bool(np.array_equal(v[..., :half], v[..., half:]))
    node = producer(t)
    while node is not None and node.op in ("Unsqueeze", "Cast", "Mul", "Cos", "Sin"):
        if node.op == "Unsqueeze":
            axes = const_value(node.inputs[1]) if len(node.inputs) > 1 else np.array(node.attrs.get("axes", []))
            rank = len(node.outputs[0].shape) if node.outputs[0].shape is not None else None
            if axes is None or rank is None or any(int(a) in (-1, rank - 1) for a in np.asarray(axes).reshape(-1)):
                return False
        if node.op == "Mul":
            if scalar_value(node.inputs[1]) is None:
                return False
        node = producer(node.inputs[0])
        if node is not None and node.op == "Concat":  # element-wise ops of Concat(f, f) keep equal halves
            shape, axis = node.outputs[0].shape, int(node.attrs.get("axis", 0))
            last = axis == -1 or (shape is not None and axis == len(shape) - 1)
            return len(node.inputs) == 2 and node.inputs[0] is node.inputs[1] and last
    return False
