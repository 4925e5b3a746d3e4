"""Refit an engine from an ONNX model with the same graph and new weights (``surgery refit``).

TensorRT's ``OnnxParserRefitter`` reads the model's initializers into a ``Refitter`` bound to the
deserialized engine; ``refit_cuda_engine`` swaps them in and the engine is serialized again. A
weight-stripped plan (``convert --strip-weights``) gets its weights back this way. Deserializing needs
a GPU the library supports; where there is none the refit stops with the runtime's own reason. When
the model's graph differs from the engine's, the first weight that does not match is named.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from converter.trt.backends import Backend, make_logger, require_library
from converter.trt.engine_options import write_atomically
from surgery.errors import ConversionError, UserInputError

# trt.DataType name -> onnx.TensorProto name, for comparing the engine's weights with initializers
_ONNX_DTYPE = {"FLOAT": "FLOAT", "HALF": "FLOAT16", "BF16": "BFLOAT16", "INT8": "INT8", "UINT8": "UINT8", "INT32": "INT32",
               "INT64": "INT64", "BOOL": "BOOL", "FP8": "FLOAT8E4M3FN", "INT4": "INT4", "FP4": "FLOAT4E2M1"}


@dataclass
class RefitResult:
    engine: Path
    size: int
    weights: int  # how many weights the refit replaced


def deserialize_engine(trt: Any, data: bytes) -> tuple[Any, Any, str]:
    """(runtime, engine, "") or (runtime or None, None, why this machine cannot deserialize it); the engine
    must not outlive its runtime."""
    logger = make_logger(trt)
    try:
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(data) if runtime is not None else None
    except Exception as exc:
        return None, None, f"{trt.__name__} cannot create a runtime here: {exc}"
    if engine is None:
        why = "; ".join(m.splitlines()[0] for m in logger.capture.errors()[-2:]) or "deserialization returned nothing"
        return runtime, None, f"{trt.__name__} {trt.__version__} cannot deserialize the engine on this machine: {why}"
    return runtime, engine, ""


def model_weights(model: onnx.ModelProto) -> dict[str, tuple[str, int, tuple[int, ...]]]:
    """Initializers and Constant-node values of the main graph, in graph order: name -> (dtype, count, shape)."""
    out: dict[str, tuple[str, int, tuple[int, ...]]] = {}
    tensors = [(t.name, t) for t in model.graph.initializer]
    for node in model.graph.node:
        if node.op_type == "Constant":
            tensors += [(node.output[0], a.t) for a in node.attribute if a.name == "value"]
    for name, t in tensors:
        out[name] = (onnx.TensorProto.DataType.Name(t.data_type), math.prod(t.dims), tuple(t.dims))
    return out


def first_weight_mismatch(engine: dict[str, tuple[str, int]], model: dict[str, tuple[str, int, tuple[int, ...]]]) -> str | None:
    """The first of the engine's refittable weights (``name -> (trt dtype, count)``), in the model's order, that
    the model does not hold with the same size and type; None when all match."""
    order = {name: i for i, name in enumerate(model)}
    for name in sorted(engine, key=lambda n: (order.get(n, len(order)), n)):
        dtype, count = engine[name]
        if name not in model:
            return f"the engine's weight '{name}' ({count} {dtype} values) is no initializer of the model"
        m_dtype, m_count, shape = model[name]
        if m_count != count:
            return f"weight '{name}': the engine holds {count} values, the model's initializer {m_count} (shape {list(shape)})"
        if _ONNX_DTYPE.get(dtype, dtype) != m_dtype:
            return f"weight '{name}': the engine holds {dtype} values, the model's initializer is {m_dtype}"
    return None


def refit_engine(backend: Backend, engine_path: Path, model_path: Path, out_path: Path) -> RefitResult:
    """Refit the engine at ``engine_path`` with the weights of the ONNX model at ``model_path``; write ``out_path``."""
    trt = require_library(backend, "refit")
    runtime, engine, why = deserialize_engine(trt, Path(engine_path).read_bytes())
    if engine is None:
        raise ConversionError(f"{engine_path}: {why}")
    if not getattr(engine, "refittable", False):
        raise UserInputError(f"{engine_path} was not built refittable (convert --refittable or --strip-weights)")
    logger = make_logger(trt)
    refitter = trt.Refitter(engine, logger)
    names = list(refitter.get_all_weights())
    parser = trt.OnnxParserRefitter(refitter, logger)
    ok = parser.refit_from_file(str(model_path))
    missing = list(refitter.get_missing_weights()) if ok else []
    if not ok or missing:
        from surgery.io import load_model

        protos = {n: refitter.get_weights_prototype(n) for n in names}
        engine_weights = {n: (str(p.dtype).split(".")[-1], int(p.size)) for n, p in protos.items()}
        mismatch = first_weight_mismatch(engine_weights, model_weights(load_model(model_path).model))
        errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
        detail = mismatch or (f"the model gave no value for weight '{missing[0]}'" if missing else
                              (errors or logger.capture.errors() or ["the parser refitter failed without saying why"])[0])
        raise ConversionError(f"{model_path} does not fit {engine_path}: {detail.splitlines()[0]}")
    if not refitter.refit_cuda_engine():
        raise ConversionError(f"refit failed: {(logger.capture.errors() or ['the refitter refused the new weights'])[0]}")
    data = bytes(engine.serialize())
    write_atomically(Path(out_path), data)
    del parser, refitter, engine, runtime  # the engine before its runtime
    return RefitResult(Path(out_path), len(data), len(names))
