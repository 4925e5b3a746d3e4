"""``fuse-gelu``: fuse decomposed GELU activations into one op.

Summary:
    Finds the three GELU formulas exporters decompose and replaces each with a single op chosen by
    ``ctx.options.emit``:

    ===========  ===========================  ====================  ==========================
    form         onnx (opset 20)              ort (com.microsoft)   plugin
    ===========  ===========================  ====================  ==========================
    erf          Gelu                         Gelu / BiasGelu       SurgeryGelu approximate=0
    tanh         Gelu approximate="tanh"      FastGelu (+bias)      SurgeryGelu approximate=1
    quick        rejected: no-onnx-op         QuickGelu alpha       SurgeryGelu approximate=2
    ===========  ===========================  ====================  ==========================

    With ``emit="ort"`` a preceding ``Add(h, bias)`` (bias a 1-D constant) is folded in as well, since
    BiasGelu and FastGelu take the bias as an input. (It is read off the producer of x in ``rewrite``:
    GraphPattern 0.6 cannot match an internal tensor that fans out to several pattern nodes.)

    Plugin choice: TensorRT's only built-in GELU plugin, ``CustomGeluPluginDynamic``, is an IPluginV2
    creator (that plugin API is deprecated since TensorRT 10.0) and TensorRT-RTX 1.7 registers no
    plugin creators at all; both parse Gelu-20 natively. So the plugin emit uses the project plugin
    ``SurgeryGelu``; prefer the onnx emit for TensorRT.

Matches (every operand order of Add/Mul, x may feed any number of pattern nodes)::

    erf:   x*(1+erf(x/√2))*0.5 | (0.5x)*(1+erf(x·(1/√2))) | x*((1+erf(..))*0.5)     -> Gelu(x)
    tanh:  same three outer forms around 1+tanh(√(2/π)·(x+0.044715·x³)),
           x³ as Pow(x,3) or (x*x)*x                                            -> Gelu(x, "tanh")
    quick: x*Sigmoid(1.702x)                                                      -> QuickGelu(x)

Requires:
    Scalar constants (any float dtype, shape [] or [1]); onnx emit needs the opset raised to 20,
    done once per run through ``raise_opset`` before the first rewrite.

Rejects:
    erf-constant-mismatch, tanh-constant-mismatch, sigmoid-constant-mismatch (a constant is not the
    GELU constant within 1e-3 relative, or not a scalar), no-onnx-op (quick GELU with onnx emit),
    opset-raise-refused (the detail goes to notes). The ort bias fold only happens when the Add's
    other operand is a 1-D constant over the last dim and the Add output feeds nothing but the match.

Numerics:
    The fused op evaluates the exact formula. Constants up to 1e-3 relative off (fp16-rounded √2,
    0.7978...) are accepted, which moves outputs by at most about 1e-3·|x|; fp32 exports carry
    constants within 1e-7 and fuse with no measurable change.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from surgery.graph_utils import NameGen, commuted_patterns, const_value, is_const, scalar_value
from surgery.pass_base import PassContext
from surgery.plugins import make_plugin_node
from passes.plugins import GELU_PLUGIN
from surgery.registry import register_pass
from surgery.rewrite import Match, PatternRewritePass, Reject, State

MS_DOMAIN = "com.microsoft"
GELU_OPSET = 20
RTOL = 1e-3
_EXPECTED = {
    "erf": {"k:Div": math.sqrt(2.0), "k:Mul": 1 / math.sqrt(2.0), "one": 1.0, "half": 0.5},
    "tanh": {"three": 3.0, "kappa": 0.044715, "beta": math.sqrt(2.0 / math.pi), "one": 1.0, "half": 0.5},
    "quick": {"alpha": 1.702},
}
_OUTER = {
    "x-first": [("mx", "Mul", ["x", "one"]), ("out", "Mul", ["mx", "$half"])],
    "half-first": [("hx", "Mul", ["x", "$half"]), ("out", "Mul", ["hx", "one"])],
    "half-inner": [("h1", "Mul", ["one", "$half"]), ("out", "Mul", ["x", "h1"])],
}


def _cores() -> dict[str, list[tuple]]:
    tanh_tail = [("kc", "Mul", ["cube", "$kappa"]), ("inner", "Add", ["x", "kc"]), ("sc", "Mul", ["inner", "$beta"]),
                 ("t", "Tanh", ["sc"]), ("one", "Add", ["t", "$one"])]
    return {
        "erf-div": [("scaled", "Div", ["x", "$k"]), ("erf", "Erf", ["scaled"]), ("one", "Add", ["erf", "$one"])],
        "erf-mul": [("scaled", "Mul", ["x", "$k"]), ("erf", "Erf", ["scaled"]), ("one", "Add", ["erf", "$one"])],
        "tanh-pow": [("cube", "Pow", ["x", "$three"])] + tanh_tail,
        "tanh-mul": [("xx", "Mul", ["x", "x"]), ("cube", "Mul", ["xx", "x"])] + tanh_tail,
    }


# family -> its commuted variants; patterns are immutable, so every pass instance shares them
_BUILT: dict[str, list[tuple[str, gs.GraphPattern]]] = {}


def _families() -> list[tuple[str, list[tuple]]]:
    """(name, nodes) of each GELU form, in matching order: every core with every outer form, then quick."""
    out = [(f"{core}:{outer}", core_nodes + outer_nodes)
           for core, core_nodes in _cores().items() for outer, outer_nodes in _OUTER.items()]
    out.append(("quick", [("sx", "Mul", ["x", "$alpha"]), ("sig", "Sigmoid", ["sx"]), ("out", "Mul", ["x", "sig"])]))
    return out


@dataclass
class GeluState(State):
    ops: Counter  # op counts of the graph: only variants it can supply are built and matched


@register_pass
class FuseGeluPass(PatternRewritePass[GeluState, str]):
    """Variants are ``form`` ("erf", "tanh", "quick"); the pattern name says which operand order matched."""

    name = "fuse-gelu"
    summary = "Fuse erf/tanh/sigmoid GELU decompositions into Gelu (onnx), com.microsoft Gelu ops, or SurgeryGelu"
    anchor_ops = ("Erf", "Tanh", "Sigmoid")
    emits = ("onnx", "ort", "plugin")

    def prepare(self, graph: gs.Graph, ctx: PassContext) -> GeluState:
        return GeluState(graph, ctx, Counter(n.op for n in graph.nodes))

    def required_opset(self, state: GeluState) -> int | None:
        return GELU_OPSET if state.emit == "onnx" else None

    def patterns(self, state: GeluState) -> dict[str, tuple[gs.GraphPattern, str]]:
        # only variants whose op counts the graph can supply: building and matching cost grows with
        # variants x nodes, and the operand orders alone make 2^k variants per form
        out: dict[str, tuple[gs.GraphPattern, str]] = {}
        for family, nodes in _families():
            if any(state.ops[op] < n for op, n in Counter(n[1] for n in nodes).items()):
                continue
            if family not in _BUILT:
                _BUILT[family] = commuted_patterns(["x"], nodes, ["out"])
            form = family.split(":")[0].split("-")[0]
            out.update((f"{family}:{order}", (p, form)) for order, p in _BUILT[family])
        return out

    def check(self, m: Match[str], state: GeluState) -> bool | Reject:
        form = m.variant
        expected = dict(_EXPECTED[form])
        if form == "erf":
            key = f"k:{m.get('scaled').op}"
            expected = {"k": expected[key], "one": 1.0, "half": 0.5}
        for name, want in expected.items():
            if name not in m.constants:
                continue  # x*x*x carries no exponent constant
            got = scalar_value(m.constants[name])
            if got is None or not math.isclose(got, want, rel_tol=RTOL) or (name == "three" and got != 3.0):
                reason = {"erf": "erf-constant-mismatch", "tanh": "tanh-constant-mismatch"}.get(form, "sigmoid-constant-mismatch")
                return Reject(reason, m.constants[name])
        return Reject("no-onnx-op") if form == "quick" and state.emit == "onnx" else True

    def rewrite(self, m: Match[str], plan: bool, state: GeluState, names: NameGen) -> list[gs.Node]:
        form, emit = m.variant, state.emit
        x, out = m.inputs[0], m.outputs[0]
        if emit == "plugin":
            approx = {"erf": 0, "tanh": 1, "quick": 2}[form]
            return [make_plugin_node(GELU_PLUGIN, [x], [out], {"approximate": approx}, name=names())]
        if emit == "onnx":
            attrs = {"approximate": "tanh"} if form == "tanh" else {}
            return [gs.Node("Gelu", name=names(), attrs=attrs, inputs=[x], outputs=[out])]
        if form == "quick":
            return [gs.Node("QuickGelu", name=names(), attrs={"alpha": float(scalar_value(m.constants["alpha"]))},
                            inputs=[x], outputs=[out], domain=MS_DOMAIN)]
        bias = []
        found = _bias_add(x, m.nodes, state.graph)
        if found is not None:  # BiasGelu/FastGelu take the bias: absorb the producing Add
            add, x, b = found
            bias = [_as_float_like(b, x, names)]
            add.inputs.clear()
            add.outputs.clear()
        op = "FastGelu" if form == "tanh" else ("BiasGelu" if bias else "Gelu")
        return [gs.Node(op, name=names(), inputs=[x, *bias], outputs=[out], domain=MS_DOMAIN)]

    def unmatched_reason(self, node: gs.Node, state: GeluState) -> str:
        if node.op == "Sigmoid":
            return "no-gelu-pattern (x*Sigmoid(1.702x) not found around this Sigmoid)"
        users = node.outputs[0].outputs if node.outputs else []
        if len(users) != 1:
            return f"{node.op}-output-has-{len(users)}-consumers"
        return f"no-gelu-pattern around {node.op} (operand structure differs from the erf/tanh forms)"

    def site(self, nodes: list[gs.Node]) -> str:
        anchor = [n for n in nodes if n.op in ("Erf", "Tanh", "Sigmoid")]
        return (anchor or nodes)[0].name


def _bias_add(x: gs.Tensor, matched: list[gs.Node], graph: gs.Graph) -> tuple[gs.Node, gs.Tensor, gs.Tensor] | None:
    """``x = Add(h, bias)`` with a 1-D constant bias over the last dim, read only by the match."""
    add = x.inputs[0] if len(x.inputs) == 1 else None
    ids = {id(n) for n in matched}
    if add is None or add.op != "Add" or x in graph.outputs or any(id(c) not in ids for c in x.outputs):
        return None
    for h, b in (add.inputs, add.inputs[::-1]):
        v = const_value(b)
        last = h.shape[-1] if h.shape else None
        if v is not None and v.ndim == 1 and not is_const(h) and not (isinstance(last, int) and last != v.shape[0]):
            return add, h, b
    return None


def _as_float_like(bias: gs.Tensor, x: gs.Tensor, names: NameGen) -> gs.Tensor:
    values = const_value(bias)
    if x.dtype is not None and values.dtype != np.dtype(x.dtype):
        return gs.Constant(names("_bias"), values.astype(x.dtype))
    return bias
