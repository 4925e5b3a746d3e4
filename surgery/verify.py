"""Structural verification after a pass: the ONNX checker plus strict shape inference."""
from __future__ import annotations

import onnx
from onnx import external_data_helper as ext
import onnx_graphsurgeon as gs

from surgery.errors import VerificationError


def verify_graph(graph: gs.Graph) -> None:
    """Raise ``VerificationError`` if the exported graph is not a valid ONNX model."""
    from surgery.io import to_model  # io imports model_checks; keep verify importable alone

    try:
        model = to_model(graph)
    except Exception as exc:
        raise VerificationError(f"graph cannot be exported: {exc}") from exc
    verify_model(model)


def weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy in which external initializers become graph inputs of the same type and shape.

    The checker resolves external files against the working directory and would read them; types
    and shapes are all verification needs.
    """
    external = [t for t in model.graph.initializer if ext.uses_external_data(t)]
    if not external:
        return model
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    kept = [t for t in skeleton.graph.initializer if not ext.uses_external_data(t)]
    del skeleton.graph.initializer[:]
    skeleton.graph.initializer.extend(kept)
    declared = {vi.name for vi in skeleton.graph.input}
    skeleton.graph.input.extend(
        onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in external if t.name not in declared
    )
    return skeleton


def verify_model(model: onnx.ModelProto) -> None:
    model = weightless(model)
    try:
        onnx.checker.check_model(model)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or ["invalid"])[0]
        raise VerificationError(first) from exc
