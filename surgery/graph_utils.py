"""Small graph-editing helpers shared by passes."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import onnx_graphsurgeon as gs


def const_value(tensor: gs.Tensor | None) -> np.ndarray | None:
    """Values of a Constant tensor (or of a tensor produced by a Constant node), else None."""
    if tensor is None:
        return None
    if isinstance(tensor, gs.Constant):
        return tensor.values
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        attrs = tensor.inputs[0].attrs
        if "value" in attrs and isinstance(attrs["value"], gs.Constant):
            return attrs["value"].values
    return None


def scalar_value(tensor: gs.Tensor | None) -> float | None:
    """The single value of a constant holding exactly one element, else None."""
    v = const_value(tensor)
    if v is None or v.size != 1:
        return None
    return float(v.reshape(-1)[0])


def is_const(tensor: gs.Tensor | None) -> bool:
    return const_value(tensor) is not None


def producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if len(tensor.inputs) == 1 else None


def disconnect(nodes: Iterable[gs.Node]) -> None:
    """Detach nodes from all their tensors so ``cleanup`` removes them."""
    for node in nodes:
        node.inputs.clear()
        node.outputs.clear()


def bypass(node: gs.Node, graph: gs.Graph, keep: gs.Tensor) -> None:
    """Remove a single-output node by routing its consumers to ``keep``.

    If the node's output is a graph output, the producer of ``keep`` is re-pointed instead, so the
    graph output keeps its name.
    """
    out = node.outputs[0]
    if out in graph.outputs and keep not in graph.outputs and len(keep.inputs) == 1 and not isinstance(keep, gs.Constant) \
            and keep not in graph.inputs:
        src = keep.inputs[0]
        idx = src.outputs.index(keep)
        for consumer in list(keep.outputs):
            if consumer is node:
                continue
            for j, t in enumerate(consumer.inputs):
                if t is keep:
                    consumer.inputs[j] = out
        node.outputs.clear()
        src.outputs[idx] = out
        node.inputs.clear()
        return
    for consumer in list(out.outputs):
        for j, t in enumerate(consumer.inputs):
            if t is out:
                consumer.inputs[j] = keep
    if out in graph.outputs:
        ident = gs.Node("Identity", name=f"{node.name}/keep-output", inputs=[keep], outputs=[out])
        node.outputs.clear()
        graph.nodes.append(ident)
    node.inputs.clear()
    node.outputs.clear()


def bypass_needs_identity(node: gs.Node, graph: gs.Graph, keep: gs.Tensor) -> bool:
    """True when ``bypass(node, graph, keep)`` could only swap ``node`` for an Identity.

    That happens when the node's output is a graph output and ``keep`` cannot take over its name
    (``keep`` is a graph input, a constant or another graph output). Passes that remove Identity
    nodes use it to stay idempotent.
    """
    out = node.outputs[0]
    if out not in graph.outputs:
        return False
    renamable = keep not in graph.outputs and len(keep.inputs) == 1 and not isinstance(keep, gs.Constant) \
        and keep not in graph.inputs
    return not renamable


def toposort(graph: gs.Graph) -> gs.Graph:
    """``graph.toposort()``, skipped when it would leave the graph as it is (most calls, in the
    fixed-point sweeps; gs's sort walks every node's producers recursively and costs a few ms).

    gs orders nodes by a stable sort on their level (1 + the highest level among their producers,
    0 without any). A node list in which every producer comes first and the levels never decrease
    is therefore its own sort. Graphs with subgraphs or functions (gs sorts those too) always sort.
    """
    if not _in_sorted_order(graph):
        graph.toposort()
    return graph


def _in_sorted_order(graph: gs.Graph) -> bool:
    if graph.functions:
        return False
    level: dict[int, int] = {}
    last = 0
    for node in graph.nodes:
        here = 0
        for t in node.inputs:
            if not t.name:
                continue  # an omitted optional input: gs does not count its producer
            for p in t.inputs:
                lv = level.get(id(p))
                if lv is None:
                    return False  # a producer later in the list (or outside it)
                here = max(here, lv + 1)
        if here < last or any(isinstance(a, gs.Graph) for a in node.attrs.values()):
            return False
        level[id(node)] = last = here
    return True


class NameGen:
    """Deterministic unique names ``<prefix>/<n>`` that never collide with existing ones."""

    def __init__(self, graph: gs.Graph, prefix: str) -> None:
        self.prefix = prefix
        self.taken = {n.name for n in graph.nodes} | set(graph.tensors().keys())
        self.n = 0

    def __call__(self, suffix: str = "") -> str:
        while True:
            name = f"{self.prefix}/{self.n}{suffix}"
            self.n += 1
            if name not in self.taken:
                self.taken.add(name)
                return name


PatternNode = tuple  # (name, op, input names[, check_func]): inputs name variables, '$const' constants or earlier nodes


def commuted_patterns(variables: list[str], nodes: list[PatternNode], outputs: list[str],
                      commutative: frozenset[str] = frozenset({"Add", "Mul", "And", "Or"})) -> list[tuple[str, gs.GraphPattern]]:
    """Every operand order of a pattern whose binary commutative nodes may list their inputs either way.

    ``nodes`` are listed producers first; an input is a variable name, ``$name`` for a constant, or an
    earlier node's name. GraphPattern matches inputs positionally, so each order is its own pattern.
    Matching starts at the first listed consumer of the first variable.

    Returns:
        ``(order, pattern)`` pairs; ``order`` is a bit string saying which nodes were swapped.
    """
    flips = [i for i, n in enumerate(nodes) if n[1] in commutative and len(n[2]) == 2 and n[2][0] != n[2][1]]
    base = _build_pattern(variables, nodes, outputs)
    names = [n[0] for n in nodes]
    result = []
    for mask in range(2 ** len(flips)):
        swapped = {flips[b] for b in range(len(flips)) if mask >> b & 1}
        p = _with_swapped_inputs(base, {names[i] for i in swapped}) if swapped else base
        result.append(("".join("s" if i in swapped else "k" for i in flips), p))
    return result


def _build_pattern(variables: list[str], nodes: list[PatternNode], outputs: list[str]) -> gs.GraphPattern:
    p = gs.GraphPattern()
    tensors: dict[str, int] = {v: p.variable() for v in variables}
    for spec in nodes:
        ids = []
        for t in spec[2]:
            if t not in tensors:
                tensors[t] = p.constant(t[1:]) if t.startswith("$") else None
            ids.append(tensors[t])
        tensors[spec[0]] = p.add(spec[0], spec[1], check_func=spec[3] if len(spec) > 3 else None, inputs=ids)
    p.set_output_tensors([tensors[o] for o in outputs])
    return p


def _with_swapped_inputs(base: gs.GraphPattern, swapped: set[str]) -> gs.GraphPattern:
    """``base`` with the two inputs of each ``swapped`` node exchanged.

    Building every order from scratch dominated a fusion pass's start-up (2^k variants, each node a
    new single-op GraphPattern). A swap changes only the order of that node's input list: which tensor
    each node reads and produces, and each tensor's consumer list (kept in node order), stay the same.
    The single-op sub-patterns are shared; nothing mutates a pattern once built.
    """
    p = gs.GraphPattern()
    p.nodes = dict(base.nodes)
    p.node_inputs = {k: (v[::-1] if k in swapped else list(v)) for k, v in base.node_inputs.items()}
    p.node_outputs = {k: list(v) for k, v in base.node_outputs.items()}
    p.num_tensors = base.num_tensors
    p.tensor_inputs = {k: list(v) for k, v in base.tensor_inputs.items()}
    p.tensor_outputs = {k: list(v) for k, v in base.tensor_outputs.items()}
    p.input_tensors = list(base.input_tensors)
    p.output_tensors = list(base.output_tensors)
    p.constant_tensors = dict(base.constant_tensors)
    return p


# ---- helpers for normalization fusions (shared by passes/fuse_*norm*.py) ----

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


def tensor_rank(tensor: gs.Tensor) -> int | None:
    shape = tensor.shape
    return None if shape is None else len(shape)


def last_dim(tensor: gs.Tensor) -> int | None:
    """The static size of the last axis, else None."""
    shape = tensor.shape
    if not shape or not isinstance(shape[-1], (int, np.integer)) or shape[-1] <= 0:
        return None
    return int(shape[-1])


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


def add_rsqrt_normalize(pattern: gs.GraphPattern, num: int, var: int, form: str, eps: int) -> int:
    """Add ``num / sqrt(var + eps)`` to ``pattern`` in one of the exported spellings.

    Make ``eps`` the pattern's first variable: GraphPattern starts matching at the first consumer of
    input 0, and starting mid-chain (at the eps Add) avoids a GraphPattern 0.6 false mismatch where a
    consumer mapped while recursing into a sibling branch is later counted as an outside consumer.

    Forms: ``div`` Div(num, s); ``recip-mul``/``recip-mulr`` Mul(num, Reciprocal(s)) in either operand
    order; ``div1-mul``/``div1-mulr`` Mul(num, Div(1, s)). Node names: eps_add, sqrt, inv, norm.
    """
    a = pattern.add("eps_add", "Add", inputs=[var, eps])
    s = pattern.add("sqrt", "Sqrt", inputs=[a])
    if form == "div":
        return pattern.add("norm", "Div", inputs=[num, s])
    kind, order = form.split("-")
    inv = pattern.add("inv", "Reciprocal", inputs=[s]) if kind == "recip" else pattern.add("inv", "Div", inputs=[pattern.variable(), s])
    return pattern.add("norm", "Mul", inputs=[num, inv] if order == "mul" else [inv, num])


RSQRT_FORMS = ("div", "recip-mul", "recip-mulr", "div1-mul", "div1-mulr")
RSQRT_FORM_OPS = {"div": {"Div"}, "recip-mul": {"Reciprocal", "Mul"}, "recip-mulr": {"Reciprocal", "Mul"},
                  "div1-mul": {"Div", "Mul"}, "div1-mulr": {"Div", "Mul"}}


def rsqrt_normalize_eps(m: gs.PatternMapping) -> tuple[float | None, str | None]:
    """Epsilon of a matched ``add_rsqrt_normalize`` and a rejection reason (None when it is sound)."""
    add = m.get("eps_add")
    eps_t = add.inputs[1]
    if not is_const(eps_t):
        return None, "eps-not-constant"
    eps = scalar_value(eps_t)
    if eps is None:
        return None, "eps-not-scalar"
    if "inv" in m and m.get("inv").op == "Div" and scalar_value(m.get("inv").inputs[0]) != 1.0:
        return None, "reciprocal-numerator-not-1"
    return eps, None


def add_affine_tail(pattern: gs.GraphPattern, t: int, cast: bool, affine: str) -> int:
    """Optional exit Cast, then ``affine``: '' none, 'g'/'gr' Mul by gamma (r: gamma first), then '-b'/'-br' Add beta."""
    if cast:
        t = pattern.add("cast", "Cast", inputs=[t])
    parts = affine.split("-") if affine else []
    for part in parts:
        op, name = ("Mul", "gamma") if part[0] == "g" else ("Add", "beta")
        w = pattern.variable()
        t = pattern.add(name, op, inputs=[w, t] if part.endswith("r") else [t, w])
    return t


AFFINE_TAILS = ("g-b", "g-br", "gr-b", "gr-br", "g", "gr", "")


def present_variants(graph: gs.Graph, variants: Iterable[Any]) -> dict[str, Any]:
    """The variants (objects with ``key`` and ``ops``) whose ops all occur in ``graph``, by key, in order.

    A pattern that needs an op the graph lacks cannot match, and building it costs start-up time.
    """
    present = {n.op for n in graph.nodes}
    return {v.key: v for v in variants if v.ops <= present}


def other_input(node: gs.Node, internal: gs.Tensor) -> gs.Tensor:
    """The input of a binary node that is not ``internal``."""
    return node.inputs[1] if node.inputs[0] is internal else node.inputs[0]


def cast_island_source(x: gs.Tensor, exit_cast: gs.Node) -> gs.Tensor | None:
    """For ``x = Cast(src)`` whose block ends in ``exit_cast`` back to src's dtype, return ``src``, else None.

    This is the fp16 export idiom (upcast to fp32, compute, cast back); a fused op that computes in
    fp32 internally (``stash_type=1``) can then read ``src`` directly.
    """
    entry = producer(x)
    if entry is None or entry.op != "Cast" or entry.inputs[0].dtype is None:
        return None
    import onnx  # local: keep this module's import surface small

    back = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(exit_cast.attrs["to"])))
    return entry.inputs[0] if np.dtype(entry.inputs[0].dtype) == back else None


def norm_input_and_scale(
    x: gs.Tensor, exit_cast: gs.Node | None, gamma: np.ndarray | None, size: int | None,
) -> tuple[gs.Tensor | None, np.ndarray | None, str | None]:
    """A fused normalization's input and scale, or a rejection reason as the third item.

    The input is x, or the source of its fp16 Cast island when ``exit_cast`` closes one; the scale is
    ``gamma`` (ones over the last dim, of ``size``, when there is none) in the input's dtype.
    """
    x_in = x if exit_cast is None else cast_island_source(x, exit_cast)
    if x_in is None:
        return None, None, "cast-island-unbalanced"
    dtype = x_in.dtype if x_in.dtype is not None else (gamma.dtype if gamma is not None else np.float32)
    if gamma is None:
        if size is None:
            return None, None, "hidden-size-unknown"
        gamma = np.ones(size, dtype=dtype)
    return x_in, gamma.astype(dtype), None
