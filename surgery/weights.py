"""Weights as sources: models whose big tensors are stood in by typed, shaped references.

A *skeleton* is a model in which each big tensor carries its name, element type and dims but no
bytes; one external-data entry, whose location is ``STANDIN`` followed by a number, says which of
the skeleton's ``sources`` holds them: a slice of a file (external data, or an initializer left
inside the input model file), a numpy array a pass made, or an inline tensor proto. Verification
and shape inference read skeletons (``weightless``); the writer (``surgery.writer``) streams the
sources into the saved file. No weight is read or copied to make one.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import external_data_helper as ext

from surgery.errors import ModelLoadError

STANDIN = "\x00surgery-stand-in:"  # no file is called this: the NUL keeps it from any real location
WEIGHT_BYTES = 64 << 10  # inline tensors this big are weights, never shape data: verification stands them in
_T = onnx.TensorProto
PLAIN_DTYPES = frozenset({_T.FLOAT, _T.DOUBLE, _T.FLOAT16, _T.INT8, _T.INT16, _T.INT32, _T.INT64, _T.UINT8,
                          _T.UINT16, _T.UINT32, _T.UINT64, _T.BOOL})  # raw bytes == numpy layout


@dataclass(frozen=True)
class FileSlice:
    """Bytes of a file: ``location`` under ``base_dir`` (None: the folder given when writing)."""

    location: str
    offset: int
    length: int | None  # None: to the end of the file
    base_dir: Path | None = None
    in_model_file: bool = False  # an initializer left inside the input .onnx, not external data

    def path(self, source_dir: Path | None) -> Path:
        base = self.base_dir or source_dir
        if base is None:
            raise ModelLoadError(f"external data '{self.location}': its source folder is unknown")
        return base / self.location


@dataclass(frozen=True)
class ArrayBytes:
    """A numpy array's bytes (C order, little-endian)."""

    array: np.ndarray

    @property
    def length(self) -> int:
        return self.array.nbytes


@dataclass(frozen=True)
class ProtoBytes:
    """The raw data of an inline tensor proto."""

    tensor: onnx.TensorProto
    length: int


Source = Union[FileSlice, ArrayBytes, ProtoBytes]


@dataclass
class Skeleton:
    model: onnx.ModelProto
    sources: list[Source]

    def source_of(self, t: onnx.TensorProto) -> Source | None:
        index = standin_index(t)
        return None if index is None else self.sources[index]

    @property
    def stands_in_external_data(self) -> bool:
        """Whether a source is an external data file (not weights left inside an input model file)."""
        return any(isinstance(s, FileSlice) and not s.in_model_file for s in self.sources)


class ExternalValues(gs.ir.tensor.LazyValues):
    """Lazy values of an external tensor that resolve its file against a fixed folder."""

    def __init__(self, tensor: onnx.TensorProto, base_dir: Path, in_model_file: bool = False) -> None:
        super().__init__(tensor)
        self.base_dir = base_dir
        self.in_model_file = in_model_file

    def load(self) -> np.ndarray:
        # Read straight from the file: ``numpy_helper.to_array`` would load the bytes into the shared
        # tensor proto too (keeping them alive and leaving it half-external), then copy them again.
        t, info = self.tensor, ext.ExternalDataInfo(self.tensor)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
        count = int(np.prod(t.dims, dtype=np.int64))
        if t.data_type in PLAIN_DTYPES and (info.length or count * dtype.itemsize) == count * dtype.itemsize:
            path = self.base_dir / info.location
            values = np.fromfile(path, dtype=dtype.newbyteorder("<"), count=count, offset=info.offset or 0)
            if values.size != count:
                raise ModelLoadError(f"tensor '{t.name}': {path.name} is shorter than its external data entry")
            return values.astype(dtype, copy=False).reshape(tuple(t.dims))
        meta = onnx.TensorProto()
        meta.CopyFrom(t)
        del meta.external_data[:]
        meta.data_location = onnx.TensorProto.DEFAULT
        path = self.base_dir / info.location
        with open(path, "rb") as f:
            f.seek(info.offset or 0)
            meta.raw_data = f.read(info.length) if info.length else f.read()
        return onnx.numpy_helper.to_array(meta)

    def source(self) -> FileSlice:
        info = ext.ExternalDataInfo(self.tensor)
        return FileSlice(info.location, info.offset or 0, info.length if info.length is not None else plain_size(self.tensor),
                         self.base_dir, self.in_model_file)


class _StandIn(gs.ir.tensor.LazyValues):
    """What a constant holds while it is exported as a stand-in: a tensor proto without bytes."""

    def __init__(self, meta: onnx.TensorProto, original) -> None:
        super().__init__(meta)
        self.original = original

    def load(self) -> np.ndarray:  # nobody should ask during an export; if someone does, answer truly
        return self.original.load() if isinstance(self.original, gs.ir.tensor.LazyValues) else self.original


def standin_index(t: onnx.TensorProto) -> int | None:
    """Which source holds the bytes of ``t``, or None if ``t`` is no stand-in."""
    if t.data_location != _T.EXTERNAL:
        return None
    return next((location_index(e.value) for e in t.external_data if e.key == "location"), None)


def location_index(location: str) -> int | None:
    return int(location[len(STANDIN):]) if location.startswith(STANDIN) else None


def make_standin(meta_of: onnx.TensorProto | None, name: str, data_type: int, dims, index: int) -> onnx.TensorProto:
    """A tensor proto named ``name`` with type and dims (and whatever else ``meta_of`` says of itself, its bytes
    and where they lie excepted) whose bytes are source ``index``."""
    t = onnx.TensorProto()
    if meta_of is not None:
        _copy_fields(meta_of, t, skip=("raw_data", "external_data", "data_location", "name", "dims", "data_type"))
    t.name, t.data_type = name, data_type
    t.dims.extend(dims)
    t.data_location = _T.EXTERNAL
    t.external_data.add(key="location", value=f"{STANDIN}{index}")
    return t


def source_of_values(values, min_bytes: int) -> tuple[Source, int] | None:
    """(source, onnx element type) for a constant's values worth standing in, or None to export it as it is:
    external data always, inline protos and arrays of a plain type from ``min_bytes`` on."""
    if isinstance(values, ExternalValues):
        return values.source(), values.tensor.data_type
    if isinstance(values, gs.ir.tensor.SparseValues) or isinstance(values, _StandIn):
        return None
    if isinstance(values, gs.ir.tensor.LazyValues):
        t = values.tensor
        if ext.uses_external_data(t):  # imported from a bare ModelProto: its folder is given when writing
            info = ext.ExternalDataInfo(t)
            return FileSlice(info.location, info.offset or 0, info.length if info.length is not None else plain_size(t)), t.data_type
        size = plain_size(t)
        if size is None or size < min_bytes or not t.HasField("raw_data"):
            return None
        return ProtoBytes(t, size), t.data_type
    if isinstance(values, np.ndarray) and values.nbytes >= min_bytes and values.dtype.kind in "biuf":
        try:
            data_type = onnx.helper.np_dtype_to_tensor_dtype(values.dtype)
        except (KeyError, ValueError, TypeError):
            return None
        return (ArrayBytes(values), data_type) if data_type in PLAIN_DTYPES else None
    return None


def plain_size(t: onnx.TensorProto) -> int | None:
    """Bytes of ``t``'s raw data for a plain element type (None for others)."""
    if t.data_type not in PLAIN_DTYPES:
        return None
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return int(np.prod(t.dims, dtype=np.int64)) * itemsize


def graph_constants(graph: gs.Graph) -> Iterator[gs.Constant]:
    """Every constant of ``graph`` and its subgraphs, once."""
    seen: set[int] = set()
    for g in [graph, *graph.subgraphs(recursive=True)]:
        for t in g.tensors().values():
            if isinstance(t, gs.Constant) and id(t) not in seen:
                seen.add(id(t))
                yield t


@contextlib.contextmanager
def standing_in(graph: gs.Graph, min_bytes: int) -> Iterator[list[Source]]:
    """While inside, the graph's big constants hold stand-ins (their values come back on exit); yields the
    sources, in stand-in order."""
    sources: list[Source] = []
    swapped: list[tuple[gs.Constant, object]] = []
    try:
        for c in graph_constants(graph):
            found = source_of_values(c._values, min_bytes)
            if found is None or c.export_dtype != c.dtype:  # gs converts those on export (bf16, fp8 from fp32)
                continue
            source, data_type = found
            meta_of = c._values.tensor if isinstance(c._values, gs.ir.tensor.LazyValues) else None
            standin = make_standin(meta_of, c.name, data_type, c.shape, len(sources))
            swapped.append((c, c._values))
            c._values = _StandIn(standin, c._values)
            sources.append(source)
        yield sources
    finally:
        for c, values in reversed(swapped):
            c._values = values


def skeleton_of_model(model: onnx.ModelProto, min_bytes: int) -> Skeleton:
    """A skeleton of ``model`` (left as it is) in which the main graph's external initializers and inline ones
    of at least ``min_bytes`` are stood in. Only the small rest is copied; tensors elsewhere (subgraphs,
    attributes) are copied as they are, external ones still pointing at their files."""
    skeleton, sources = onnx.ModelProto(), []
    _copy_fields(model, skeleton, skip=("graph",))
    _copy_fields(model.graph, skeleton.graph, skip=("initializer",))
    for t in model.graph.initializer:
        size = plain_size(t)
        if ext.uses_external_data(t):
            info = ext.ExternalDataInfo(t)
            source = FileSlice(info.location, info.offset or 0, info.length if info.length is not None else size)
        elif size is not None and size >= min_bytes and t.HasField("raw_data"):
            source = ProtoBytes(t, size)
        else:
            skeleton.graph.initializer.add().CopyFrom(t)
            continue
        skeleton.graph.initializer.append(make_standin(t, t.name, t.data_type, t.dims, len(sources)))
        sources.append(source)
    return Skeleton(skeleton, sources)


def _copy_fields(src, dst, skip: tuple[str, ...]) -> None:
    for fd, value in src.ListFields():
        if fd.name in skip:
            continue
        repeated = fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED  # protobuf < 5.28
        if repeated:
            getattr(dst, fd.name).extend(value)
        elif fd.type == fd.TYPE_MESSAGE:
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


def standins_as_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turn the initializers of ``model`` (in any graph) that are stand-ins or external, and the outputs of
    Constant nodes whose value is, into typed inputs of the main graph, in place: the checker would look
    for their files, and types and shapes are all that shape inference needs of them. A subgraph sees a
    main-graph input as an outer-scope value."""
    declared = {vi.name for vi in model.graph.input}
    inputs = []

    def declare(name: str, t: onnx.TensorProto) -> None:
        if name not in declared:
            declared.add(name)
            inputs.append(onnx.helper.make_tensor_value_info(name, t.data_type, list(t.dims)))

    def strip(graph: onnx.GraphProto) -> None:
        kept = [t for t in graph.initializer if not ext.uses_external_data(t)]
        if len(kept) != len(graph.initializer):
            for t in graph.initializer:
                if ext.uses_external_data(t):
                    declare(t.name, t)
            del graph.initializer[:]
            graph.initializer.extend(kept)
        constants = [n for n in graph.node if n.op_type == "Constant" and n.domain in ("", "ai.onnx")
                     and any(a.name == "value" and ext.uses_external_data(a.t) for a in n.attribute)]
        for node in constants:
            declare(node.output[0], next(a.t for a in node.attribute if a.name == "value"))
            graph.node.remove(node)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    strip(attr.g)
                for g in attr.graphs:
                    strip(g)

    strip(model.graph)
    model.graph.input.extend(inputs)
    return model
