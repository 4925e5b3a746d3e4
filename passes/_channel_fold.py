"""Per-output-channel folds into Conv, ConvTranspose and Gemm: fold-batchnorm, fuse-scale-mul, fuse-bias-add.

A *layer* here is one of those three ops. Its output channels sit on axis 1 (``[N, C, ...]`` for the
convolutions, ``[N, M]`` for Gemm), and an affine map applied per output channel afterwards,
``y -> k * y + s``, folds into the layer: the weights are scaled per output channel and the bias
becomes ``k * bias + s``. The arithmetic is done in float64 and cast back to the weights' dtype.

Weight layouts (``g`` = ``group``):
    Conv           ``[C_out, C_in / g, k...]``: output channel ``o`` is slice ``W[o]``.
    ConvTranspose  ``[C_in, C_out / g, k...]``: output channel ``o = gi * C_out/g + j`` reads ``W[gi-th
                   block of C_in / g rows, j]``.
    Gemm           ``B`` is ``[K, M]`` (``transB=0``) or ``[M, K]`` (``transB=1``); the bias is
                   ``beta * C`` (``C`` broadcastable to ``[N, M]``), rewritten with ``beta = 1``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from surgery.graph_utils import NameGen, const_value
from surgery.rewrite import Reject

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm")
FOLD_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
# onnxruntime runs BatchNormalization from opset 7 on; Gemm before 7 broadcast C only with broadcast=1.
MIN_OPSET = 7


def layer_patterns(tail: list[tuple], variables: list[str]) -> list[tuple[str, list[str], list[tuple]]]:
    """``(key, variables, nodes)`` for each layer op, without and with its bias input, feeding ``tail``.

    The layer node is named ``layer`` and reads ``x``, ``w`` and (second form) ``b``; ``tail`` names
    it as an input. GraphPattern matches input counts exactly, hence one form per input count.
    """
    forms = []
    for op in LAYER_OPS:
        for bias in (False, True):
            ins = ["x", "w", "b"] if bias else ["x", "w"]
            forms.append((f"{op}{'+bias' if bias else ''}", ins + variables, [("layer", op, ins), *tail]))
    return forms


@dataclass(frozen=True)
class Layer:
    """What a fold needs to know about one layer, read before anything changes."""

    node: gs.Node
    channels: int  # output channels (axis 1 of the output)
    rank: int  # rank of the output
    bias: np.ndarray | None  # the effective constant bias (Gemm: beta * C), None when the layer has none

    @property
    def weight(self) -> gs.Tensor:
        return self.node.inputs[1]


def bias_tensor(node: gs.Node) -> gs.Tensor | None:
    """The layer's bias input, None when it is absent or omitted (an empty name)."""
    return node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None


def read_layer(node: gs.Node) -> Layer | Reject:
    """The layer's channel count, output rank and constant bias, or why they cannot be had."""
    w = node.inputs[1]
    shape = w.shape
    if shape is None or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        return Reject("weight-shape-unknown", w)
    dtype = _dtype(w)
    if dtype not in FOLD_DTYPES:
        return Reject("unsupported-dtype", w)
    if node.op == "Gemm":  # B is 2-D, a Conv's weight [C, C_in / g, k...]: the checker sees to both
        channels, rank = int(shape[0] if node.attrs.get("transB", 0) else shape[1]), 2
    else:
        group = int(node.attrs.get("group", 1))
        channels = int(shape[0]) if node.op == "Conv" else int(shape[1]) * group
        rank = len(shape)
    b = bias_tensor(node)
    if b is None:
        return Layer(node, channels, rank, None)
    values = const_value(b)
    if values is None:
        return Reject("bias-not-constant", b)
    if node.op == "Gemm":
        values = float(node.attrs.get("beta", 1.0)) * values.astype(np.float64)
    return Layer(node, channels, rank, values)


def per_channel(values: np.ndarray, layer: Layer) -> np.ndarray | None:
    """``values`` as a ``[channels]`` float64 vector when adding or multiplying them onto the layer's
    output acts per output channel and changes the output's shape in no way; else None."""
    if values.ndim > layer.rank:
        return None
    shape = (1,) * (layer.rank - values.ndim) + tuple(values.shape)
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, layer.channels):
        return None
    return np.broadcast_to(values.reshape(-1).astype(np.float64), (layer.channels,))


def scale_weight(layer: Layer, weight: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``weight`` (float64) with output channel ``o`` multiplied by ``k[o]``."""
    node = layer.node
    if node.op == "Gemm":
        return weight * (k[:, None] if node.attrs.get("transB", 0) else k[None, :])
    if node.op == "Conv":
        return weight * k.reshape(-1, *[1] * (weight.ndim - 1))
    group = int(node.attrs.get("group", 1))
    c_in, per_group = weight.shape[0], weight.shape[1]
    blocks = weight.reshape(group, c_in // group, per_group, *weight.shape[2:])
    return (blocks * k.reshape(group, 1, per_group, *[1] * (weight.ndim - 2))).reshape(weight.shape)


def folded_bias(layer: Layer, k: np.ndarray | None, shift: np.ndarray) -> np.ndarray:
    """``k * bias + shift`` (float64); a Gemm's broadcastable ``C`` keeps its broadcast shape."""
    bias = np.zeros(layer.channels) if layer.bias is None else layer.bias.astype(np.float64)
    return (bias if k is None else k * bias) + shift


def cast_back(values: np.ndarray, like: np.dtype, blame: gs.Tensor) -> np.ndarray | Reject:
    """``values`` in dtype ``like``, or a Reject when the cast overflows (a tiny variance in fp16)."""
    with np.errstate(over="ignore"):
        out = values.astype(like)
    if np.isfinite(values).all() and not np.isfinite(out).all():
        return Reject("fold-overflows-dtype", blame)
    return out


def rebuilt(layer: Layer, out: gs.Tensor, names: NameGen, weight: np.ndarray | None, bias: np.ndarray | None) -> gs.Node:
    """The layer again, writing ``out``, with new constant weights (None: the same weight input) and
    bias (None: none, for a layer that had none). The node keeps the layer's name; the new constants
    get fresh names of their own (the node's name reserves none)."""
    node = layer.node
    inputs = [node.inputs[0], node.inputs[1] if weight is None else gs.Constant(names("/weight"), weight)]
    attrs = dict(node.attrs)
    if bias is not None:
        inputs.append(gs.Constant(names("/bias"), bias))
        if node.op == "Gemm":
            attrs["beta"] = 1.0
    return gs.Node(node.op, name=node.name, attrs=attrs, inputs=inputs, outputs=[out], domain=node.domain)


def unfolded_reason(node: gs.Node, graph: gs.Graph, what: str, constant_operands: bool = False) -> str:
    """Why ``node``, an op that could follow a layer, matched no fold pattern (for ``--explain``);
    ``constant_operands``: the pattern takes its other operands as initializers only."""
    if int(graph.opset) < MIN_OPSET:
        return f"opset-below-{MIN_OPSET} (nothing is folded there)"
    if len(node.outputs) > 1:
        return f"bn-training-outputs ({what} also writes running statistics: the training form)"
    src = next((t for t in node.inputs if t.inputs and t.inputs[0].op in LAYER_OPS), None)
    if src is None:
        return f"no-layer-before ({what} reads no {', '.join(LAYER_OPS)} output)"
    if src in graph.outputs:
        return f"layer-output-is-graph-output ({src.name} must stay)"
    if len(src.outputs) > 1:
        return f"layer-output-shared ({src.name} feeds {len(src.outputs)} nodes)"
    loose = next((t for t in node.inputs if t is not src and not isinstance(t, gs.Constant)), None)
    if constant_operands and loose is not None:
        return f"operand-not-constant ({loose.name} is computed, not an initializer)"
    return "no-pattern-match (the layer has other than 2 or 3 inputs, or an operand is not the expected kind)"


def _dtype(tensor: gs.Tensor) -> np.dtype | None:
    values = const_value(tensor)
    if values is not None:
        return values.dtype
    try:
        return np.dtype(tensor.dtype) if tensor.dtype is not None else None
    except TypeError:
        return None
