"""Write a skeleton (``surgery.weights``) with its weights streamed from their sources.

External data: every stand-in, every inline tensor of at least ``EXTERNAL_MIN_BYTES`` and those
the caller names go into one data file, 4 KiB aligned: the named ones first in the caller's order
(the input's layout), then the others from files by offset, then the rest in the model's order. Embedded: the skeleton is serialized and
each stand-in's bytes are spliced in where protobuf would put them (the file equals what
``SerializeToString`` of the full model gives). Either way a weight is copied once: file to file by
the kernel where it lies in a file, from the array or proto where a pass made it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import onnx
from onnx import external_data_helper as ext

from surgery import wire
from surgery.errors import SurgeryError
from surgery.weights import ArrayBytes, FileSlice, ProtoBytes, Skeleton, Source, location_index, standin_index

EXTERNAL_MIN_BYTES = 1024  # smaller inline tensors stay inline in external-data output
_ALIGN = 4096


@dataclass
class _Sources:
    """Open files and resolved lengths for the sources being written."""

    source_dir: Path | None
    files: dict[Path, int]

    def open(self, s: FileSlice) -> int:
        path = s.path(self.source_dir)
        if path not in self.files:
            self.files[path] = os.open(path, os.O_RDONLY)
        return self.files[path]

    def length(self, s: Source) -> int:
        if isinstance(s, FileSlice) and s.length is None:
            return max(0, os.fstat(self.open(s)).st_size - s.offset)
        return s.length

    def close(self) -> None:
        for fd in self.files.values():
            os.close(fd)


def tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    yield from ext._get_all_tensors(model)


def weight_bytes(skeleton: Skeleton, source_dir: Path | None) -> int:
    """Bytes of every weight of ``skeleton``: its sources, other external tensors and inline raw data."""
    sources = _Sources(source_dir, {})
    try:
        total = sum(sources.length(s) for s in skeleton.sources)
        for t in tensors(skeleton.model):
            if standin_index(t) is None and ext.uses_external_data(t):
                total += sources.length(_file_slice(t))
        return total
    finally:
        sources.close()


def write_external(skeleton: Skeleton, onnx_path: Path, data_path: Path, data_name: str,
                   source_dir: Path | None, keep_external: tuple[str, ...] = ()) -> None:
    """Write ``skeleton.model`` (changed in place to point at ``data_name``) to ``onnx_path`` and its weights
    to ``data_path``; tensors named in ``keep_external`` go there whatever their size, first, in that order."""
    rank = {name: i for i, name in enumerate(keep_external)}
    entries = []
    for position, t in enumerate(tensors(skeleton.model)):
        source = skeleton.source_of(t)
        if source is None and ext.uses_external_data(t):
            source = _file_slice(t)
        elif source is None and t.HasField("raw_data") and (t.name in rank or len(t.raw_data) >= EXTERNAL_MIN_BYTES):
            source = ProtoBytes(t, len(t.raw_data))
        elif source is None:
            continue
        if t.name in rank:
            key = (0, rank[t.name], "", "", 0)
        elif isinstance(source, FileSlice):
            key = (1, 0, str(source.base_dir or ""), source.location, source.offset)
        else:
            key = (2, position, "", "", 0)
        entries.append((key, position, t, source))
    entries.sort(key=lambda e: (e[0], e[1]))
    sources = _Sources(source_dir, {})
    out = os.open(data_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    offset = 0
    try:
        for _, _, t, source in entries:
            pad = (-offset) % _ALIGN
            _pwrite_all(out, b"\0" * pad, offset)
            offset += pad
            length = sources.length(source)
            _put(source, length, sources, out, offset, t.name)
            t.ClearField("raw_data")
            _point_at(t, data_name, offset, length)
            offset += length
    finally:
        os.close(out)
        sources.close()
    with open(onnx_path, "wb") as f:
        f.write(skeleton.model.SerializeToString(deterministic=True))


def write_embedded(skeleton: Skeleton, onnx_path: Path, source_dir: Path | None) -> None:
    """Write ``skeleton.model`` to ``onnx_path`` with every stand-in's (and external tensor's) bytes inline."""
    data = skeleton.model.SerializeToString(deterministic=True)
    sources = _Sources(source_dir, {})
    try:
        pieces = _pieces(data, 0, len(data), _MODEL, skeleton, sources)
        out = os.open(onnx_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            offset = 0
            for piece in pieces:
                if isinstance(piece, tuple):
                    source, length, name = piece
                    _put(source, length, sources, out, offset, name)
                    offset += length
                else:
                    _pwrite_all(out, piece, offset)
                    offset += len(piece)
        finally:
            os.close(out)
    finally:
        sources.close()


# Where tensors can sit inside a serialized model: field number -> what that field holds.
_TENSOR = "tensor"
_ATTRIBUTE: dict = {}
_NODE = {wire.number(onnx.NodeProto, "attribute"): _ATTRIBUTE}
_GRAPH = {wire.number(onnx.GraphProto, "node"): _NODE, wire.number(onnx.GraphProto, "initializer"): _TENSOR}
_ATTRIBUTE.update({wire.number(onnx.AttributeProto, "t"): _TENSOR, wire.number(onnx.AttributeProto, "tensors"): _TENSOR,
                   wire.number(onnx.AttributeProto, "g"): _GRAPH, wire.number(onnx.AttributeProto, "graphs"): _GRAPH})
_MODEL = {wire.number(onnx.ModelProto, "graph"): _GRAPH,
          wire.number(onnx.ModelProto, "functions"): {wire.number(onnx.FunctionProto, "node"): _NODE}}
_RAW_DATA = wire.number(onnx.TensorProto, "raw_data")
_EXTERNAL_DATA = wire.number(onnx.TensorProto, "external_data")
_DATA_LOCATION = wire.number(onnx.TensorProto, "data_location")
_NAME = wire.number(onnx.TensorProto, "name")
_EXTERNAL_MARK = wire.encode_varint(onnx.TensorProto.EXTERNAL)

def _pieces(data: bytes, start: int, end: int, schema, skeleton: Skeleton, sources: _Sources) -> list:
    """``data[start:end]`` (a message of kind ``schema``) as byte strings and (source, length, name) pieces, with
    every tensor that needs bytes from a source rewritten to hold them inline."""
    if schema is _TENSOR:
        return _tensor_pieces(data, start, end, skeleton, sources)
    pieces: list = []
    plain = start
    for f in wire.fields(data, start, end):
        inner = schema.get(f.number) if f.wire_type == wire.LEN else None
        if inner is None or not _may_need_bytes(data, f.value_start, f.end):
            continue
        sub = _pieces(data, f.value_start, f.end, inner, skeleton, sources)
        pieces.append(data[plain:f.start])
        pieces.append(wire.header(f.number, _size(sub)))
        pieces.extend(sub)
        plain = f.end
    pieces.append(data[plain:end])
    return pieces


def _may_need_bytes(data: bytes, start: int, end: int) -> bool:
    """Whether ``data[start:end]`` may hold a stand-in or an external tensor (both name a location)."""
    return data.find(b"location", start, end) >= 0


def _tensor_pieces(data: bytes, start: int, end: int, skeleton: Skeleton, sources: _Sources) -> list:
    fields = list(wire.fields(data, start, end))
    entries = [wire.string_entries(data, f.value_start, f.end) for f in fields if f.number == _EXTERNAL_DATA]
    info = {e.get("key"): e.get("value", "") for e in entries}
    location = info.get("location", "")
    is_external = any(f.number == _DATA_LOCATION and data[f.value_start:f.end] == _EXTERNAL_MARK for f in fields)
    if not is_external or not location:
        return [data[start:end]]
    name = next((bytes(data[f.value_start:f.end]).decode("utf-8", "replace") for f in fields
                 if f.number == _NAME), "")
    index = location_index(location)
    if index is not None:
        source = skeleton.sources[index]
    else:
        offset, length = int(info.get("offset") or 0), info.get("length")
        source = FileSlice(location, offset, int(length) if length else None)
    length = sources.length(source)
    kept = [f for f in fields if f.number not in (_EXTERNAL_DATA, _DATA_LOCATION, _RAW_DATA)]
    before = [f for f in kept if f.number < _RAW_DATA]
    after = [f for f in kept if f.number > _RAW_DATA]
    pieces: list = [data[f.start:f.end] for f in before]
    pieces += [wire.header(_RAW_DATA, length), (source, length, name)]
    pieces += [data[f.start:f.end] for f in after]
    return pieces


def _size(pieces: Iterable) -> int:
    return sum(p[1] if isinstance(p, tuple) else len(p) for p in pieces)


def _file_slice(t: onnx.TensorProto) -> FileSlice:
    info = ext.ExternalDataInfo(t)
    return FileSlice(info.location, info.offset or 0, info.length)


def _put(source: Source, length: int, sources: _Sources, out: int, at: int, name: str) -> None:
    """Write ``length`` bytes of ``source`` to ``out`` at offset ``at``."""
    if isinstance(source, FileSlice):
        done = _copy_range(sources.open(source), source.offset, length, out, at)
        if done != length:
            raise SurgeryError(f"tensor '{name}': {source.location} is shorter than its external data entry")
        return
    if isinstance(source, ArrayBytes):
        array = source.array
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        data = memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    else:
        data = source.tensor.raw_data
    if len(data) != length:
        raise SurgeryError(f"tensor '{name}' holds {len(data)} bytes, its type and dims need {length}")
    _pwrite_all(out, data, at)


def _copy_range(src: int, start: int, length: int, out: int, at: int) -> int:
    """Copy by the kernel (``os.copy_file_range``) where it can: on a 400 MB model about ten times faster than
    reading each tensor into memory and writing it out. Returns the bytes copied (fewer at the end of a file)."""
    done = 0
    copy = getattr(os, "copy_file_range", None)
    while done < length and copy is not None:
        try:
            n = copy(src, out, length - done, start + done, at + done)
        except OSError:  # another filesystem or kernel that will not: fall back to plain reads
            break
        if n == 0:
            return done
        done += n
    while done < length:
        chunk = os.pread(src, min(length - done, 64 << 20), start + done)
        if not chunk:
            break
        _pwrite_all(out, chunk, at + done)
        done += len(chunk)
    return done


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _point_at(t: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Make ``t`` refer to ``location`` (``ext.set_external_data`` insists on raw_data being present)."""
    del t.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    t.data_location = onnx.TensorProto.EXTERNAL
