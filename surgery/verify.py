"""Structural verification after a pass: the ONNX checker plus strict shape inference."""
from __future__ import annotations

import onnx
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


def verify_model(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or ["invalid"])[0]
        raise VerificationError(first) from exc
