"""Structural verification after a pass: the ONNX checker plus strict shape inference."""
from __future__ import annotations

import onnx
from onnx import external_data_helper as ext
import onnx_graphsurgeon as gs

from surgery.errors import VerificationError


# Inline initializers at least this big are weights, not shape data: verification drops their bytes.
WEIGHT_BYTES = 64 << 10


def verify_graph(graph: gs.Graph) -> None:
    """Raise ``VerificationError`` if the exported graph is not a valid ONNX model."""
    from surgery.io import to_model  # io imports model_checks; keep verify importable alone

    try:
        model = to_model(graph)
    except Exception as exc:
        raise VerificationError(f"graph cannot be exported: {exc}") from exc
    _check(_strip_weights(model))  # the export is ours: strip in place, no copy


def _is_weight(t: onnx.TensorProto) -> bool:
    return ext.uses_external_data(t) or len(t.raw_data) >= WEIGHT_BYTES


def weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy in which weight initializers (external, or inline of at least ``WEIGHT_BYTES``) become
    graph inputs of the same type and shape.

    The checker resolves external files against the working directory and would read them; types
    and shapes are all verification needs, and big inline weights only cost serialization time.
    """
    if not any(_is_weight(t) for t in model.graph.initializer):
        return model
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    return _strip_weights(skeleton)


def _strip_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    weights = [t for t in model.graph.initializer if _is_weight(t)]
    if not weights:
        return model
    kept = [t for t in model.graph.initializer if not _is_weight(t)]
    declared = {vi.name for vi in model.graph.input}
    inputs = [onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in weights
              if t.name not in declared]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    model.graph.input.extend(inputs)
    return model


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
