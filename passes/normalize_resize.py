"""normalize-resize: rewrite Resize spellings TensorRT refuses into ones it takes.

Matches:
    Resize(x, sizes = constant, keep_aspect_ratio_policy = not_larger | not_smaller) on static dims
        ⇒  Resize(x, sizes = the output size the policy yields), policy "stretch"
        (TensorRT: "Only `stretch` is supported").
    Resize(x [N,C,L], mode=cubic)  (TensorRT's cubic mode is 2-D only)
        ⇒  Unsqueeze(x, 2) → Resize on [N,C,1,L] (scale 1 on the new axis) → Squeeze(2)

Requires: opset >= 11, constant scales/sizes; static input dims for the aspect-ratio rule.

Not handled: Upsample. TensorRT parses it; onnxruntime refuses it from opset 10 on, and below 10
there is no Resize, so replacing it needs an opset raise that rewrites it (surgery.opset does not).

Rejects:
    scales-not-constant: Resize scales/sizes computed at run time.
    input-shape-unknown: the aspect-ratio rule needs the static sizes of the resized axes.
    aspect-rounding: the policy's common scale times an input size is not an integer, so "stretch"
        would sample at a slightly different scale.
    crop-and-resize: tf_crop_and_resize (the ROI has no 4-D equivalent here).

Numerics: exact. On the size-1 axis added for cubic, every coordinate transformation maps output 0 to
input 0, where the cubic weights are (0, 1, 0, 0).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import onnx_graphsurgeon as gs

from surgery.graph_utils import NameGen, const_value
from surgery.registry import register_pass
from surgery.rewrite import NodeRewritePass, Reject, State

__all__ = ["NormalizeResizePass"]


class _Stretch(NamedTuple):
    """Plan of the aspect-ratio rule: the sizes the policy yields."""

    sizes: np.ndarray


class _Cubic2d(NamedTuple):
    """Plan of the 1-D cubic rule: the constant scales or sizes, and which of the two they are."""

    values: np.ndarray
    is_sizes: bool


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _input(node: gs.Node, i: int) -> gs.Tensor | None:
    return node.inputs[i] if len(node.inputs) > i and node.inputs[i].name else None


def _static_dims(x: gs.Tensor) -> list[int] | None:
    if x.shape is None or not all(isinstance(d, (int, np.integer)) and d >= 0 for d in x.shape):
        return None
    return [int(d) for d in x.shape]


def _aspect(node: gs.Node) -> _Stretch | Reject | None:
    policy = _s(node.attrs.get("keep_aspect_ratio_policy", "stretch"))
    if policy == "stretch" or _input(node, 3) is None:
        return None
    sizes = const_value(_input(node, 3))
    if sizes is None:
        return Reject("scales-not-constant", _input(node, 3))
    dims = _static_dims(node.inputs[0])
    if dims is None:
        return Reject("input-shape-unknown", node.inputs[0])
    axes = [int(a) % len(dims) for a in node.attrs.get("axes", range(len(dims)))]
    ratios = [float(s) / dims[a] for s, a in zip(sizes.reshape(-1), axes)]
    scale = min(ratios) if policy == "not_larger" else max(ratios)
    exact = [scale * dims[a] for a in axes]
    if any(abs(v - round(v)) > 1e-9 for v in exact):
        return Reject("aspect-rounding", _input(node, 3))
    return _Stretch(np.array([round(v) for v in exact], np.int64))


def _cubic_1d(node: gs.Node) -> _Cubic2d | Reject | None:
    x = node.inputs[0]
    if _s(node.attrs.get("mode", "nearest")) != "cubic" or x.shape is None or len(x.shape) != 3:
        return None
    if _s(node.attrs.get("coordinate_transformation_mode", "half_pixel")) == "tf_crop_and_resize":
        return Reject("crop-and-resize")
    sizes = _input(node, 3)
    param = sizes if sizes is not None else _input(node, 2)
    values = const_value(param)
    if values is None:
        return Reject("scales-not-constant", param)
    return _Cubic2d(np.asarray(values), sizes is not None)


@register_pass
class NormalizeResizePass(NodeRewritePass[State]):
    """Plans are ``_Stretch`` (outcome "aspect") or ``_Cubic2d`` (outcome "cubic")."""

    name = "normalize-resize"
    summary = "Keep-aspect-ratio Resize -> stretch with explicit sizes; 1-D cubic Resize -> 2-D."
    ops = ("Resize",)

    def check(self, node: gs.Node, state: State) -> _Stretch | _Cubic2d | Reject | None:
        if int(state.graph.opset or 0) < 11:
            return None
        plan = _aspect(node)
        return plan if plan is not None else _cubic_1d(node)

    def outcome(self, node: gs.Node, plan: _Stretch | _Cubic2d) -> str:
        return "aspect" if isinstance(plan, _Stretch) else "cubic"

    def rewrite(self, node: gs.Node, plan: _Stretch | _Cubic2d, state: State, names: NameGen) -> list[gs.Node]:
        if isinstance(plan, _Stretch):
            node.inputs[3] = gs.Constant(names("/sizes"), plan.sizes)
            node.attrs["keep_aspect_ratio_policy"] = "stretch"
            return [node]
        return _lift_cubic(node, plan, names)


def _lift_cubic(node: gs.Node, plan: _Cubic2d, names: NameGen) -> list[gs.Node]:
    """Unsqueeze(x, 2) -> Resize on [N,C,1,L] with scale/size 1 on the new axis -> Squeeze(2)."""
    values, is_sizes = plan.values.reshape(-1), plan.is_sizes
    axes = [int(a) % 3 for a in node.attrs.pop("axes", [0, 1, 2])]
    full = np.array([1, 1, 1], dtype=values.dtype) if not is_sizes else np.array(node.inputs[0].shape, np.int64)
    for a, v in zip(axes, values):
        full[a] = v
    lifted = np.concatenate([full[:2], np.array([1], full.dtype), full[2:]])
    x, out = node.inputs[0], node.outputs[0]
    axis2 = gs.Constant(names("/axes"), np.array([2], np.int64))
    x4 = gs.Variable(names(), dtype=x.dtype)
    y4 = gs.Variable(names(), dtype=out.dtype)
    empty = gs.Variable.empty()
    param = gs.Constant(names("/sizes" if is_sizes else "/scales"), lifted)
    inputs = [x4, empty, empty if is_sizes else param]  # the ROI only matters for tf_crop_and_resize
    if is_sizes:
        inputs.append(param)
    attrs = dict(node.attrs)
    return [gs.Node("Unsqueeze", name=names(), inputs=[x, axis2], outputs=[x4]),
            gs.Node("Resize", name=names(), attrs=attrs, inputs=inputs, outputs=[y4]),
            gs.Node("Squeeze", name=names(), inputs=[y4, axis2], outputs=[out])]
