"""Load a model with its big embedded initializers left in the file.

The file is mapped, not read: its protobuf fields are walked (``surgery.wire``) and each main-graph
initializer whose raw data is at least ``min_bytes`` is parsed without those bytes, then pointed at
them as external data whose location is the model file itself. Nothing of a weight is read; the
pages it lies on are never touched. ``ExternalValues`` reads one if a pass asks, and the writer
copies them file to file.
"""
from __future__ import annotations

import mmap
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from surgery import wire
from surgery.weights import PLAIN_DTYPES, plain_size

_GRAPH = wire.number(onnx.ModelProto, "graph")
_INITIALIZER = wire.number(onnx.GraphProto, "initializer")
_RAW_DATA = wire.number(onnx.TensorProto, "raw_data")


def load_by_reference(path: Path, min_bytes: int) -> onnx.ModelProto | None:
    """The model at ``path`` with its big main-graph initializers referring to their bytes in ``path``; None
    where the file holds none, or is not a model this can split (the caller loads it whole and reports)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        try:
            parts, refs = _split_model(mm, min_bytes)
        except wire.WireError:
            return None
    if not refs:
        return None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(b"".join(parts))
    except (DecodeError, RuntimeError, ValueError):
        return None
    del parts
    for index, offset, length in refs:
        t = model.graph.initializer[index]
        t.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", path.name), ("offset", str(offset)), ("length", str(length))):
            t.external_data.add(key=key, value=value)
    return model


def _split_model(mm, min_bytes: int) -> tuple[list[bytes], list[tuple[int, int, int]]]:
    top = list(wire.fields(mm, 0, len(mm)))
    graphs = [f for f in top if f.number == _GRAPH]
    if len(graphs) != 1 or graphs[0].wire_type != wire.LEN:  # several are merged by protobuf: leave that to it
        raise wire.WireError("not one graph")
    parts: list[bytes] = []
    refs: list[tuple[int, int, int]] = []
    for f in top:
        if f.number != _GRAPH:
            parts.append(mm[f.start:f.end])
            continue
        graph_parts = _split_graph(mm, f.value_start, f.end, min_bytes, refs)
        parts.append(wire.header(_GRAPH, sum(map(len, graph_parts))))
        parts.extend(graph_parts)
    return parts, refs


def _split_graph(mm, start: int, end: int, min_bytes: int, refs: list) -> list[bytes]:
    parts: list[bytes] = []
    index = 0
    for f in wire.fields(mm, start, end):
        if f.number != _INITIALIZER or f.wire_type != wire.LEN:
            parts.append(mm[f.start:f.end])
            continue
        split = _split_tensor(mm, f, min_bytes)
        if split is None:
            parts.append(mm[f.start:f.end])
        else:
            stripped, offset, length = split
            parts += [wire.header(_INITIALIZER, len(stripped)), stripped]
            refs.append((index, offset, length))
        index += 1
    return parts


def _split_tensor(mm, field: wire.Field, min_bytes: int) -> tuple[bytes, int, int] | None:
    """(the tensor without its raw data, where the raw data starts, its length), or None to keep the tensor
    whole: small, not plain raw data, already external, or raw data that does not fit its dims (the load
    checks then report it as they would)."""
    inner = list(wire.fields(mm, field.value_start, field.end))
    raw = [f for f in inner if f.number == _RAW_DATA]
    if len(raw) != 1 or raw[0].end - raw[0].value_start < min_bytes:
        return None
    stripped = b"".join(mm[f.start:f.end] for f in inner if f.number != _RAW_DATA)
    try:
        meta = onnx.TensorProto.FromString(stripped)
    except DecodeError:
        return None
    length = raw[0].end - raw[0].value_start
    if meta.data_type not in PLAIN_DTYPES or plain_size(meta) != length or meta.external_data \
            or meta.data_location == onnx.TensorProto.EXTERNAL:
        return None
    return stripped, raw[0].value_start, length
