"""Load a model with its big embedded initializers left in the file.

Its protobuf fields are walked (``surgery.wire``) through small reads, and each main-graph
initializer whose raw data is at least ``min_bytes`` is parsed without those bytes, then pointed at
them as external data whose location is the model file itself. Nothing of a weight is read.
``ExternalValues`` reads one if a pass asks, and the writer copies them file to file.
"""
from __future__ import annotations

import os
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
    with open(path, "rb") as f:
        try:
            parts, refs = _split_model(_FileView(f.fileno()), min_bytes)
        except (wire.WireError, OSError):
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


class _FileView:
    """A file's bytes, indexed and sliced like ``bytes``, read in small windows with ``os.pread``. (Mapping the
    file instead counts every page touched, and the large folio around it, in the process's RSS: about
    2 MB per weight on a freshly written model.)"""

    WINDOW = 64 << 10

    def __init__(self, fd: int) -> None:
        self.fd, self.size = fd, os.fstat(fd).st_size
        self.start, self.window = 0, b""

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key):
        if isinstance(key, slice):
            a, b = key.start, min(key.stop, self.size)
            if self.start <= a and b <= self.start + len(self.window):
                return self.window[a - self.start:b - self.start]
            data = os.pread(self.fd, b - a, a)
            if len(data) != b - a:
                raise wire.WireError("file changed while read")
            return data
        if not self.start <= key < self.start + len(self.window):
            if not 0 <= key < self.size:
                raise IndexError(key)
            self.start, self.window = key, os.pread(self.fd, self.WINDOW, key)
        return self.window[key - self.start]


def _split_model(buf, min_bytes: int) -> tuple[list[bytes], list[tuple[int, int, int]]]:
    top = list(wire.fields(buf, 0, len(buf)))
    graphs = [f for f in top if f.number == _GRAPH]
    if len(graphs) != 1 or graphs[0].wire_type != wire.LEN:  # several are merged by protobuf: leave that to it
        raise wire.WireError("not one graph")
    parts: list[bytes] = []
    refs: list[tuple[int, int, int]] = []
    for f in top:
        if f.number != _GRAPH:
            parts.append(buf[f.start:f.end])
            continue
        graph_parts = _split_graph(buf, f.value_start, f.end, min_bytes, refs)
        parts.append(wire.header(_GRAPH, sum(map(len, graph_parts))))
        parts.extend(graph_parts)
    return parts, refs


def _split_graph(buf, start: int, end: int, min_bytes: int, refs: list) -> list[bytes]:
    parts: list[bytes] = []
    index = 0
    for f in wire.fields(buf, start, end):
        if f.number != _INITIALIZER or f.wire_type != wire.LEN:
            parts.append(buf[f.start:f.end])
            continue
        split = _split_tensor(buf, f, min_bytes)
        if split is None:
            parts.append(buf[f.start:f.end])
        else:
            stripped, offset, length = split
            parts += [wire.header(_INITIALIZER, len(stripped)), stripped]
            refs.append((index, offset, length))
        index += 1
    return parts


def _split_tensor(buf, field: wire.Field, min_bytes: int) -> tuple[bytes, int, int] | None:
    """(the tensor without its raw data, where the raw data starts, its length), or None to keep the tensor
    whole: small, not plain raw data, already external, or raw data that does not fit its dims (the load
    checks then report it as they would)."""
    inner = list(wire.fields(buf, field.value_start, field.end))
    raw = [f for f in inner if f.number == _RAW_DATA]
    if len(raw) != 1 or raw[0].end - raw[0].value_start < min_bytes:
        return None
    stripped = b"".join(buf[f.start:f.end] for f in inner if f.number != _RAW_DATA)
    try:
        meta = onnx.TensorProto.FromString(stripped)
    except DecodeError:
        return None
    length = raw[0].end - raw[0].value_start
    if meta.data_type not in PLAIN_DTYPES or plain_size(meta) != length or meta.external_data \
            or meta.data_location == onnx.TensorProto.EXTERNAL:
        return None
    return stripped, raw[0].value_start, length
