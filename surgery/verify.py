"""Structural verification after a pass: the ONNX checker plus strict shape inference, on weightless views."""
from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs
from onnx import external_data_helper as ext

from surgery.errors import VerificationError
from surgery.weights import WEIGHT_BYTES, plain_size, skeleton_of_model, standins_as_inputs


def verify_graph(graph: gs.Graph) -> None:
    """Raise ``VerificationError`` if the exported graph is not a valid ONNX model."""
    from surgery.io import weightless_model  # io imports model_checks, which imports this

    try:
        model = weightless_model(graph)
    except Exception as exc:
        raise VerificationError(f"graph cannot be exported: {exc}") from exc
    _check(model)


def weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (itself when it has no weights, else a copy without them) in which weight initializers
    (external, or inline of at least ``WEIGHT_BYTES``) are graph inputs of the same type and shape.

    The checker resolves external files against the working directory and would read them; types
    and shapes are all verification needs, and big inline weights only cost serialization time.
    """
    if not any(ext.uses_external_data(t) or (plain_size(t) or 0) >= WEIGHT_BYTES for t in model.graph.initializer):
        return model
    return standins_as_inputs(skeleton_of_model(model, WEIGHT_BYTES).model)


def verify_model(model: onnx.ModelProto) -> None:
    _check(weightless(model))


def _check(model: onnx.ModelProto) -> None:
    # One serialization: ``full_check`` runs strict, type-checking shape inference inside the checker,
    # without the parse back into a proto that ``onnx.shape_inference.infer_shapes`` does.
    try:
        onnx.checker.check_model(model.SerializeToString(), full_check=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or ["invalid"])[0]
        raise VerificationError(first) from exc
