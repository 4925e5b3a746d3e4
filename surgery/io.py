"""Model I/O: load without pulling weights into memory, save atomically and deterministically.

Models are loaded with external data left on disk, and with ``lazy_weights`` big embedded
initializers are left in the model file too (``surgery.embedded``). In a ``gs.Graph`` such tensors
stay lazy (``ExternalValues``) and are read only if a pass asks for their values. Saving exports a
skeleton (``surgery.weights``) and streams each weight from where it lies into the output
(``surgery.writer``): external data in, external data out; embedded in, embedded out (above 2 GB
external, as protobuf requires). No model is held whole in memory.
"""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import onnx
import onnx_graphsurgeon as gs
from onnx import external_data_helper as ext

from surgery import gs_compat, writer
from surgery.embedded import load_by_reference
from surgery.errors import ModelLoadError, SurgeryError, UserInputError
from surgery.normalize import MIN_IR_VERSION, normalize
from surgery.weights import (WEIGHT_BYTES, ExternalValues, Skeleton, graph_constants, skeleton_of_model, standin_index,
                             standing_in, standins_as_inputs)
from surgery.writer import EXTERNAL_MIN_BYTES
from surgery.provenance import carry_metadata

gs_compat.install()


MAX_IR_VERSION = 10  # onnxruntime >= 1.17 and TensorRT 10 read it; onnx 1.23 would write 14
PROTOBUF_LIMIT = 2**31 - 1


@dataclass
class LoadedModel:
    """A model proto whose external tensors (if any) live under ``base_dir``."""

    model: onnx.ModelProto
    path: Path
    base_dir: Path
    notes: list[str] = field(default_factory=list)  # load-time repairs (surgery.normalize)

    @property
    def has_external_data(self) -> bool:
        """Whether the model keeps weights in external data files (weights left inside the model file by
        ``lazy_weights`` are not that)."""
        return bool(self.external_names)

    @property
    def external_names(self) -> tuple[str, ...]:
        """Names of the tensors kept in external data files, in the order of their bytes there."""
        found = [(ext.ExternalDataInfo(t).location, ext.ExternalDataInfo(t).offset or 0, t.name)
                 for t in _all_tensors(self.model) if ext.uses_external_data(t) and not self.in_model_file(t)]
        return tuple(name for _, _, name in sorted(found))

    def in_model_file(self, t: onnx.TensorProto) -> bool:
        """Whether external tensor ``t`` refers to bytes inside the model file itself (``lazy_weights``)."""
        return any(e.key == "location" and e.value == self.path.name for e in t.external_data)


def load_model(path: str | os.PathLike, *, lazy_weights: bool = False) -> LoadedModel:
    """Load and sanity-check a model, raising ``ModelLoadError`` with one line on any defect.

    ``lazy_weights``: leave main-graph initializers of at least ``WEIGHT_BYTES`` in the file, as external
    data whose location is the model file itself; they are read only if a pass needs their values.
    ``loaded.model`` then lacks those bytes: reach them through ``to_graph(loaded)`` and ``save_graph``.
    """
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file")
    if p.is_dir():
        raise ModelLoadError(f"{p}: is a directory, expected an .onnx file")
    if p.stat().st_size == 0:
        raise ModelLoadError(f"{p}: file is empty")
    model = load_by_reference(p, WEIGHT_BYTES) if lazy_weights else None
    try:
        if model is None:
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
    for tensor in graph_constants(graph):
        values = tensor._values
        if isinstance(values, gs.ir.tensor.LazyValues) and ext.uses_external_data(values.tensor):
            tensor._values = ExternalValues(values.tensor, loaded.base_dir, loaded.in_model_file(values.tensor))
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


def weightless_model(graph: gs.Graph, like: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """``graph`` exported for the checker and shape inference: weights (external, or inline of at least
    ``WEIGHT_BYTES``) become typed graph inputs; no weight is read or copied. ``like`` as for ``to_model``."""
    with standing_in(graph, WEIGHT_BYTES):
        model = to_model(graph, like=like)
    return standins_as_inputs(model)


def save_graph(graph: gs.Graph, path: str | os.PathLike, *, like: onnx.ModelProto | None = None,
               source_dir: Path | None = None, external: bool | None = None, protect: Path | None = None,
               keep_external: Iterable[str] = ()) -> Path:
    """Export ``graph`` (as ``to_model(graph, like)``) and write it like ``save_model``, each weight streamed from
    where it lies (input file, external data, a pass's array) into the output, never held twice.

    ``keep_external``: names of tensors that stay in external data (when written with it) whatever their size,
    in this order: those the input kept there (``LoadedModel.external_names``), even the ones a pass read
    into memory.
    """
    with standing_in(graph, EXTERNAL_MIN_BYTES) as sources:
        model = to_model(graph, like=like)
    return _save(Skeleton(model, sources), path, source_dir=source_dir, external=external, protect=protect,
                 keep_external=tuple(keep_external))


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike,
    *,
    source_dir: Path | None = None,
    external: bool | None = None,
    protect: Path | None = None,
) -> Path:
    """Write ``model`` (left as it is) to ``path`` atomically.

    Args:
        model: the model; external tensors in it are read from ``source_dir``.
        path: destination .onnx file.
        source_dir: folder the model's external data locations are relative to.
        external: force (True) or forbid (False) an external data file ``path.data``; default: when the model
            has external data, or is over 2 GB.
        protect: a path that must not be overwritten (the input model).

    Returns:
        The path written.
    """
    return _save(skeleton_of_model(model, EXTERNAL_MIN_BYTES), path, source_dir=source_dir, external=external,
                 protect=protect)


def _save(skeleton: Skeleton, path: str | os.PathLike, *, source_dir: Path | None, external: bool | None,
          protect: Path | None, keep_external: tuple[str, ...] = ()) -> Path:
    out = Path(path)
    if protect is not None and out.resolve() == Path(protect).resolve():
        raise UserInputError(f"{out}: output would overwrite the input model (use --in-place to allow it)")
    if out.exists() and out.is_dir():
        raise UserInputError(f"{out}: is a directory")
    if not out.parent.exists():
        raise UserInputError(f"{out.parent}: output folder does not exist")
    if not os.access(out.parent, os.W_OK):
        raise UserInputError(f"{out.parent}: output folder is not writable")
    too_big = external is not True and writer.weight_bytes(skeleton, source_dir) + skeleton.model.ByteSize() > PROTOBUF_LIMIT
    if external is False and too_big:
        raise UserInputError(f"{out}: over 2 GB, which protobuf cannot hold in one file: save with external data")
    if external is None:
        external = too_big or skeleton.stands_in_external_data or any(
            ext.uses_external_data(t) and standin_index(t) is None for t in _all_tensors(skeleton.model))
    data_name = out.name + ".data"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".onnx", dir=out.parent)
    except OSError as exc:
        raise SurgeryError(f"{out}: cannot write here ({exc.strerror})") from None
    os.close(fd)
    tmp_data = Path(tmp + ".data")
    try:
        if external:
            writer.write_external(skeleton, Path(tmp), tmp_data, data_name, source_dir, keep_external)
            os.chmod(tmp_data, 0o666 & ~_umask())
        else:
            writer.write_embedded(skeleton, Path(tmp), source_dir)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a saved model should look like any other file
        if external:
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


