"""specialize-shapes: fix the dynamic dims of graph inputs to user-given sizes.

Summary: ``ctx.options["input_shapes"]`` maps input names to lists of ints, e.g.
``{"x": [1, 3, 224, 224]}``. Each named input gets that static shape. Intermediate shapes that were
derived from the old symbolic dims are then stale, so every non-static intermediate annotation is
cleared (dtype kept) for the next infer-shapes to recompute. Followed by fold-constants, the shape
arithmetic (Shape → Gather → Concat → Reshape ...) becomes constant and disappears.

Matches: graph input ``x: [N, 3, H, W]`` ⇒ ``x: [1, 3, 224, 224]``.

Requires: every name is a graph input, ranks agree, and static dims are not contradicted; otherwise
``UserInputError`` with a one-line message (these are user mistakes, not pass failures).

Rejects: nothing; with no ``input_shapes`` the pass changes nothing.

Numerics: unchanged for inputs of the given shape; other shapes are no longer accepted.
"""
from __future__ import annotations

from typing import Any

import onnx_graphsurgeon as gs

from passes._noop_rules import static_shape
from surgery.errors import UserInputError
from surgery.pass_base import Pass, PassContext, PassResult
from surgery.registry import register_pass

__all__ = ["SpecializeShapesPass"]


def _validated(tensor: gs.Tensor, dims: Any) -> list[int]:
    """The requested shape for ``tensor``, or ``UserInputError`` saying what is wrong with it."""
    if not isinstance(dims, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise UserInputError(f"input_shapes['{tensor.name}']: expected a list of positive ints, got {dims!r}")
    dims = list(dims)
    if tensor.shape is None:
        return dims
    if len(tensor.shape) != len(dims):
        raise UserInputError(
            f"input_shapes['{tensor.name}']: rank {len(dims)} does not match the input's rank {len(tensor.shape)} "
            f"(shape {list(tensor.shape)})")
    for axis, (have, want) in enumerate(zip(tensor.shape, dims)):
        if isinstance(have, int) and have >= 0 and have != want:
            raise UserInputError(
                f"input_shapes['{tensor.name}']: dim {axis} is fixed to {have} in the model, cannot set it to {want}")
    return dims


@register_pass
class SpecializeShapesPass(Pass):
    name = "specialize-shapes"
    summary = "Fix dynamic input dims to given sizes (input_shapes option) so shape arithmetic can fold."

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        result = PassResult()
        wanted = ctx.options.input_shapes or {}
        if not isinstance(wanted, dict):
            raise UserInputError(f"input_shapes: expected a mapping of input name to dims, got {type(wanted).__name__}")
        inputs = {t.name: t for t in graph.inputs}
        for name in wanted:
            if name not in inputs:
                known = ", ".join(inputs) or "none"
                raise UserInputError(f"input_shapes: '{name}' is not a graph input (inputs: {known})")
        shapes = {name: _validated(inputs[name], dims) for name, dims in wanted.items()}
        for name in sorted(shapes):
            tensor = inputs[name]
            if tensor.shape is not None and list(tensor.shape) == shapes[name]:
                continue
            result.notes.append(f"input '{name}': {tensor.shape} -> {shapes[name]}")
            tensor.shape = shapes[name]
            result.apply(name, "specialized")
        if result.changed:
            result.stats["cleared-shapes"] = _clear_stale_shapes(graph)
        result.stats = +result.stats
        return result


def _clear_stale_shapes(graph: gs.Graph) -> int:
    """Forget non-static shapes of intermediate tensors; return how many were cleared."""
    keep = {id(t) for t in graph.inputs} | {id(t) for t in graph.outputs}
    cleared = 0
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant) or id(tensor) in keep or tensor.shape is None:
            continue
        if static_shape(tensor) is None:
            tensor.shape = None
            cleared += 1
    return cleared
