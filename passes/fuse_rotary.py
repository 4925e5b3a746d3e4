"""``fuse-rotary``: fuse the rotate-half rotary position embedding into one RotaryEmbedding op.

Summary:
    Matches HF Llama's ``q * cos + rotate_half(q) * sin`` with ``rotate_half(x) = Concat(-x2, x1)``
    on a [B,H,S,D] head tensor, as both the TorchScript and the dynamo exporter emit it.
    ``ctx.option("emit", "onnx")``:

    - ``onnx``: ``RotaryEmbedding`` (opset 23; interleaved=0, rotary_embedding_dim=D) on X [B,H,S,D]
      with half-width caches [B,S,D/2] (no position_ids: the caches are already per position).
      onnxruntime wants the caches' batch equal to X's, so a batch-1 cache is Expanded to B.
    - ``ort``: ``com.microsoft.RotaryEmbedding`` on X [B,H,S,D] with 2-D caches [S,D/2] and
      position_ids = [0] (the offset form: positions 0..S-1 of the cache).
    - ``plugin``: nothing is fused: there is no rotary plugin, and the element-wise form is what
      TensorRT fuses itself; the run notes this.

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

import numpy as np
import onnx_graphsurgeon as gs

from surgery.graph_utils import NameGen, commuted_patterns, const_value, producer, scalar_value
from surgery.pass_base import PassContext, PassResult
from surgery.registry import register_pass
from surgery.rewrite import PatternRewritePass

MS_DOMAIN = "com.microsoft"
ROTARY_OPSET = 23
_NODES = [("lo", "Slice", ["x", "$s0", "$e0", "$a0", "$st0"]), ("hi", "Slice", ["x", "$s1", "$e1", "$a1", "$st1"]),
          ("neg", "Neg", ["hi"]), ("rot", "Concat", ["neg", "lo"]),
          ("xc", "Mul", ["x", "cos"]), ("rs", "Mul", ["rot", "sin"]), ("out", "Add", ["xc", "rs"])]


@register_pass
class FuseRotaryPass(PatternRewritePass):
    name = "fuse-rotary"
    summary = "Fuse rotate-half rotary embedding (x*cos + rotate_half(x)*sin) into RotaryEmbedding-23 or com.microsoft"
    tags = frozenset({"fusion"})
    anchor_ops = ("Neg",)
    emits = ("onnx", "ort", "plugin")

    def __init__(self) -> None:
        self._patterns = dict(commuted_patterns(["x", "cos", "sin"], _NODES, ["out"]))

    def required_opset(self, ctx: PassContext) -> int | None:
        return ROTARY_OPSET if self.emit(ctx) == "onnx" else None

    def patterns(self, ctx: PassContext) -> dict[str, gs.GraphPattern]:
        return self._patterns

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        if self.emit(ctx) == "plugin":
            return PassResult(notes=["plugin emit: rotary embedding left element-wise (no rotary plugin; TensorRT fuses it)"])
        return super().run(graph, ctx)

    def check(self, m: gs.PatternMapping, variant: str, graph: gs.Graph, ctx: PassContext) -> str | None:
        x, cos, sin = m.inputs[0], m.inputs[1], m.inputs[2]
        if x.shape is not None and len(x.shape) != 4:
            return "not-4d"
        d = x.shape[-1] if x.shape else None
        if not isinstance(d, (int, np.integer)) or d <= 0 or d % 2:
            return "head-dim-unknown"
        half = int(d) // 2
        if not (_is_slice(m, "0", 0, half, half) and _is_slice(m, "1", half, None, half)):
            return "slice-not-halves"
        if int(m.get("rot").attrs.get("axis", 0)) not in (-1, 3):
            return "concat-axis"
        for t in (cos, sin):
            if t.shape is None or len(t.shape) != 4 or t.shape[1] != 1 or t.shape[-1] != d:
                return "cos-sin-shape"
        if not (_equal_halves(cos, half) and _equal_halves(sin, half)):
            return "halves-unproven"
        if self.emit(ctx) == "ort" and (cos.shape[0] != 1 or sin.shape[0] != 1):
            return "cos-batch-not-1"
        return None

    def rewrite(self, graph: gs.Graph, m: gs.PatternMapping, variant: str, ctx: PassContext, names: NameGen) -> list[gs.Node]:
        x, cos, sin = m.inputs[0], m.inputs[1], m.inputs[2]
        half, emit, new = int(x.shape[-1]) // 2, self.emit(ctx), []

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
        if cos.shape[0] != x.shape[0] or sin.shape[0] != x.shape[0]:  # ORT checks the cache batch against X's
            batch = node("Shape", [x], {"start": 0, "end": 1}, dtype=np.int64)
            target = node("Concat", [batch, i64(1, 1)], {"axis": 0}, dtype=np.int64)
            caches = [node("Expand", [c, target]) for c in caches]
        node("RotaryEmbedding", [x, *caches], {"interleaved": 0, "rotary_embedding_dim": 2 * half}, out=m.outputs[0])
        return new

    def unmatched_reason(self, node: gs.Node, graph: gs.Graph) -> str:
        nxt = [c.op for c in node.outputs[0].outputs]
        if nxt != ["Concat"]:
            return f"no-rotate-half (Neg feeds {nxt}, not one Concat)"
        return "no-rotary-pattern (Neg -> Concat found; x*cos + rotate_half(x)*sin around it not recognised)"

    def site_name(self, m: gs.PatternMapping) -> str:
        return m.get("out").name

    def site_name_from(self, nodes: list[gs.Node]) -> str:
        return next((n.name for n in nodes if n.op == "Add"), nodes[0].name)


def _is_slice(m: gs.PatternMapping, i: str, start: int, end: int | None, half: int) -> bool:
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
