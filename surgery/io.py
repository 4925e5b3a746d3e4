"""Model I/O: load without pulling external weights into memory, save atomically and deterministically.

Models are loaded with external data left on disk. When converted to a ``gs.Graph`` such tensors stay
lazy (``ExternalValues``) and are read only if a pass asks for their values. Saving streams every
tensor's bytes into one data file per model, so a 2 GB+ model is never held whole in memory.
"""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import external_data_helper as ext

from surgery import gs_compat
from surgery.errors import ModelLoadError, SurgeryError, UserInputError
from surgery.normalize import MIN_IR_VERSION, normalize
from surgery.provenance import carry_metadata

gs_compat.install()


MAX_IR_VERSION = 10  # onnxruntime >= 1.17 and TensorRT 10 read it; onnx 1.23 would write 14
PROTOBUF_LIMIT = 2**31 - 1
EXTERNAL_MIN_BYTES = 1024  # smaller tensors stay inline when saving with external data
_ALIGN = 4096
_T = onnx.TensorProto
_PLAIN_DTYPES = frozenset({_T.FLOAT, _T.DOUBLE, _T.FLOAT16, _T.INT8, _T.INT16, _T.INT32, _T.INT64, _T.UINT8,
                           _T.UINT16, _T.UINT32, _T.UINT64, _T.BOOL})  # raw bytes == numpy layout


@dataclass
class LoadedModel:
    """A model proto whose external tensors (if any) live under ``base_dir``."""

    model: onnx.ModelProto
    path: Path
    base_dir: Path
    notes: list[str] = field(default_factory=list)  # load-time repairs (surgery.normalize)

    @property
    def has_external_data(self) -> bool:
        return any(ext.uses_external_data(t) for t in _all_tensors(self.model))


class ExternalValues(gs.ir.tensor.LazyValues):
    """Lazy values of an external tensor that resolve its file against a fixed folder."""

    def __init__(self, tensor: onnx.TensorProto, base_dir: Path) -> None:
        super().__init__(tensor)
        self.base_dir = base_dir

    def load(self) -> np.ndarray:
        # Read straight from the file: ``numpy_helper.to_array`` would load the bytes into the shared
        # tensor proto too (keeping them alive and leaving it half-external), then copy them again.
        t, info = self.tensor, ext.ExternalDataInfo(self.tensor)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
        count = int(np.prod(t.dims, dtype=np.int64))
        if t.data_type in _PLAIN_DTYPES and (info.length or count * dtype.itemsize) == count * dtype.itemsize:
            path = self.base_dir / info.location
            values = np.fromfile(path, dtype=dtype.newbyteorder("<"), count=count, offset=info.offset or 0)
            if values.size != count:
                raise ModelLoadError(f"tensor '{t.name}': {path.name} is shorter than its external data entry")
            return values.astype(dtype, copy=False).reshape(tuple(t.dims))
        meta = onnx.TensorProto()
        meta.CopyFrom(t)
        del meta.external_data[:]
        meta.data_location = onnx.TensorProto.DEFAULT
        meta.raw_data = _read_external(t, self.base_dir)
        return onnx.numpy_helper.to_array(meta)


def load_model(path: str | os.PathLike) -> LoadedModel:
    """Load and sanity-check a model, raising ``ModelLoadError`` with one line on any defect."""
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file")
    if p.is_dir():
        raise ModelLoadError(f"{p}: is a directory, expected an .onnx file")
    if p.stat().st_size == 0:
        raise ModelLoadError(f"{p}: file is empty")
    try:
        model = onnx.load_model(str(p), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelLoadError(f"{p}: not an ONNX model ({type(exc).__name__})") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise ModelLoadError(f"{p}: not an ONNX model (no graph)")
    from surgery.model_checks import check_structure, refuse_unreadable  # local import keeps io light
    refuse_unreadable(model, p)
    notes = normalize(model)
    check_structure(model, p)
    assign_names(model.graph)
    return LoadedModel(model, p.resolve(), p.resolve().parent, notes)


def assign_names(graph: onnx.GraphProto) -> int:
    """Give every unnamed or duplicate-named node a deterministic unique name; return how many."""
    seen: Counter[str] = Counter(n.name for n in graph.node if n.name)
    used = set(seen)
    renamed = 0
    dup_seen: set[str] = set()
    for i, node in enumerate(graph.node):
        if node.name and (seen[node.name] == 1 or node.name not in dup_seen):
            dup_seen.add(node.name)
            continue
        base = f"{node.op_type}_{i}" if not node.name else f"{node.name}_{i}"
        name, k = base, 1
        while name in used:
            name, k = f"{base}_{k}", k + 1
        node.name = name
        used.add(name)
        renamed += 1
    return renamed


def to_graph(loaded: LoadedModel | onnx.ModelProto) -> gs.Graph:
    """Import into onnx-graphsurgeon, keeping external tensors lazy."""
    if isinstance(loaded, onnx.ModelProto):
        return gs.import_onnx(loaded)
    graph = gs.import_onnx(loaded.model)
    for tensor in _graph_constants(graph):
        values = tensor._values
        if isinstance(values, gs.ir.tensor.LazyValues) and ext.uses_external_data(values.tensor):
            tensor._values = ExternalValues(values.tensor, loaded.base_dir)
    return graph


def to_model(graph: gs.Graph, like: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """Export a graph, keeping the original model's metadata (its nodes' too: ``carry_metadata``) and a
    readable IR version."""
    model = gs.export_onnx(graph, do_type_check=False)
    if like is not None:
        for field in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
            setattr(model, field, getattr(like, field))
        del model.metadata_props[:]
        model.metadata_props.extend(like.metadata_props)
        known = {o.domain for o in model.opset_import}
        for o in like.opset_import:
            if o.domain not in known:
                model.opset_import.append(o)
        functions = {(f.domain, f.name) for f in model.functions}
        model.functions.extend(f for f in like.functions if (f.domain, f.name) not in functions)
        carry_metadata(model, like)  # gs drops node metadata_props: the exporter's source traces
    ir = min(model.ir_version, MAX_IR_VERSION) if model.ir_version else MAX_IR_VERSION
    model.ir_version = max(ir, MIN_IR_VERSION)
    for t in _all_tensors(model):
        # gs keeps an imported Constant's data_location after a pass replaced its lazy values by an
        # array, which exports as "external" tensors with inline bytes and no file.
        if t.data_location == onnx.TensorProto.EXTERNAL and not t.external_data:
            t.data_location = onnx.TensorProto.DEFAULT
    return model


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike,
    *,
    source_dir: Path | None = None,
    external: bool | None = None,
    protect: Path | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically.

    Args:
        model: the model; external tensors in it are read from ``source_dir``.
        path: destination .onnx file.
        source_dir: folder the model's external data locations are relative to.
        external: force (True) or forbid (False) an external data file; default: only when over 2 GB.
        protect: a path that must not be overwritten (the input model).

    Returns:
        The path written.
    """
    out = Path(path)
    if protect is not None and out.resolve() == Path(protect).resolve():
        raise UserInputError(f"{out}: output would overwrite the input model (use --in-place to allow it)")
    if out.exists() and out.is_dir():
        raise UserInputError(f"{out}: is a directory")
    if not out.parent.exists():
        raise UserInputError(f"{out.parent}: output folder does not exist")
    if not os.access(out.parent, os.W_OK):
        raise UserInputError(f"{out.parent}: output folder is not writable")
    if external is None:
        external = _estimated_size(model) > PROTOBUF_LIMIT
    model = _shallow_copy_tensors(model)
    data_name = out.name + ".data"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".onnx", dir=out.parent)
    except OSError as exc:
        raise SurgeryError(f"{out}: cannot write here ({exc.strerror})") from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a saved model should look like any other file
    tmp_data = Path(tmp + ".data")
    try:
        if external:
            _stream_external(model, tmp_data, data_name, source_dir)
        else:
            _inline_external(model, source_dir)
        with open(tmp, "wb") as f:
            f.write(model.SerializeToString(deterministic=True))
        if external:
            os.chmod(tmp_data, 0o666 & ~_umask())
            os.replace(tmp_data, out.parent / data_name)
        os.replace(tmp, out)
    except OSError as exc:
        raise SurgeryError(f"{out}: cannot write ({exc.strerror})") from None
    finally:
        for leftover in (Path(tmp), tmp_data):
            leftover.unlink(missing_ok=True)
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _all_tensors(model: onnx.ModelProto):
    yield from ext._get_all_tensors(model)


def _graph_constants(graph: gs.Graph):
    for sub in graph.subgraphs(recursive=True) if hasattr(graph, "subgraphs") else []:
        yield from (t for t in sub.tensors().values() if isinstance(t, gs.Constant))
    yield from (t for t in graph.tensors().values() if isinstance(t, gs.Constant))


def _estimated_size(model: onnx.ModelProto) -> int:
    total = 0
    for t in _all_tensors(model):
        if ext.uses_external_data(t):
            info = ext.ExternalDataInfo(t)
            total += info.length or 0
        else:
            total += len(t.raw_data)
    return total + 1_000_000


def _shallow_copy_tensors(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy we may edit freely (tensor protos can be shared with lazy graph constants)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _read_external(t: onnx.TensorProto, source_dir: Path | None) -> bytes:
    if source_dir is None:
        raise UserInputError(f"tensor '{t.name}' has external data but its source folder is unknown")
    info = ext.ExternalDataInfo(t)
    with open(source_dir / info.location, "rb") as f:
        f.seek(info.offset or 0)
        return f.read(info.length) if info.length else f.read()


def _inline_external(model: onnx.ModelProto, source_dir: Path | None) -> None:
    for t in _all_tensors(model):
        if ext.uses_external_data(t):
            t.raw_data = _read_external(t, source_dir)
            t.data_location = onnx.TensorProto.DEFAULT
            del t.external_data[:]


def _stream_external(model: onnx.ModelProto, data_path: Path, data_name: str, source_dir: Path | None) -> None:
    """Move every tensor of at least EXTERNAL_MIN_BYTES into ``data_path``, one at a time.

    External tensors are copied file to file by the kernel (``os.copy_file_range``) where it can:
    on a 400 MB model that is about ten times faster than reading each tensor into memory and
    writing it out, and no tensor's bytes pass through this process.
    """
    offset = 0
    sources: dict[Path, int] = {}
    out = os.open(data_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for t in _all_tensors(model):
            if ext.uses_external_data(t):
                data = None
            elif t.HasField("raw_data") and len(t.raw_data) >= EXTERNAL_MIN_BYTES:
                data = t.raw_data
            else:
                continue
            pad = (-offset) % _ALIGN
            _pwrite_all(out, b"\0" * pad, offset)
            offset += pad
            if data is None:
                length = _copy_external(t, source_dir, sources, out, offset)
            else:
                _pwrite_all(out, data, offset)
                length = len(data)
            t.ClearField("raw_data")
            _point_at(t, data_name, offset, length)
            offset += length
            del data
    finally:
        os.close(out)
        for fd in sources.values():
            os.close(fd)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _copy_external(t: onnx.TensorProto, source_dir: Path | None, sources: dict[Path, int], out: int, at: int) -> int:
    """Copy ``t``'s external bytes to ``out`` at offset ``at``; return how many (a short file gives fewer,
    as reading it would)."""
    if source_dir is None:
        raise UserInputError(f"tensor '{t.name}' has external data but its source folder is unknown")
    info = ext.ExternalDataInfo(t)
    path = source_dir / info.location
    if path not in sources:
        sources[path] = os.open(path, os.O_RDONLY)
    src, start = sources[path], info.offset or 0
    length = info.length if info.length else max(0, os.fstat(src).st_size - start)
    done = 0
    copy = getattr(os, "copy_file_range", None)
    while done < length and copy is not None:
        try:
            n = copy(src, out, length - done, start + done, at + done)
        except OSError:  # another filesystem or kernel that will not: fall back to plain reads
            break
        if n == 0:
            return done  # end of the source file
        done += n
    while done < length:
        chunk = os.pread(src, min(length - done, 64 << 20), start + done)
        if not chunk:
            break
        _pwrite_all(out, chunk, at + done)
        done += len(chunk)
    return done


def _point_at(t: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Make ``t`` refer to ``location`` (``ext.set_external_data`` insists on raw_data being present)."""
    del t.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    t.data_location = onnx.TensorProto.EXTERNAL
