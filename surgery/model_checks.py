"""Structural checks run at load so that malformed models fail early with one clear line."""
from __future__ import annotations

from pathlib import Path

import onnx
from onnx import external_data_helper as ext

from surgery.errors import ModelLoadError


def check_structure(model: onnx.ModelProto, path: Path) -> None:
    """Raise ``ModelLoadError`` naming the first defect found."""
    where = str(path)
    _check_versions(model, where)
    _check_io(model.graph, where)
    _check_nodes(model.graph, where)
    _check_initializers(model.graph, where)
    _check_external_data(model, path.resolve().parent, where)
    from surgery.verify import weightless

    try:
        # the model as repaired at load (surgery.normalize), weights stood in by typed inputs
        onnx.checker.check_model(weightless(model).SerializeToString())
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
        raise ModelLoadError(f"{where}: ONNX checker: {first}") from None


def refuse_unreadable(model: onnx.ModelProto, path: Path) -> None:
    """Refuse what no pass can read right: names that are not UTF-8 (protobuf hands them over as
    bytes), and attributes with ``ref_attr_name``, which refer to an attribute of an enclosing
    function: outside a function body they are meaningless, and onnxruntime and the passes would
    silently read their default."""
    def check_names(graph: onnx.GraphProto, names) -> None:
        for name in names:
            if isinstance(name, bytes):
                shown = name.decode("utf-8", "backslashreplace")
                raise ModelLoadError(f"{path}: graph '{graph.name}' has a name that is not valid UTF-8: {shown!r}")

    def check_types(graph: onnx.GraphProto) -> None:
        for t in graph.initializer:
            if t.data_type not in _DATA_TYPES:
                raise ModelLoadError(f"{path}: initializer '{t.name}' has element type {t.data_type}, which ONNX does not define")
        for vi in (*graph.input, *graph.output, *graph.value_info):
            if (bad := _unknown_elem_type(vi.type)) is not None:
                raise ModelLoadError(f"{path}: '{vi.name}' has element type {bad}, which ONNX does not define")

    def walk(graph: onnx.GraphProto) -> None:
        check_names(graph, [graph.name])
        for group in (graph.input, graph.output, graph.value_info, graph.initializer):
            check_names(graph, (x.name for x in group))
        check_types(graph)
        for node in graph.node:
            check_names(graph, [node.name, node.op_type, node.domain, *node.input, *node.output])
            for attr in node.attribute:
                check_names(graph, [attr.name, attr.ref_attr_name])
                if attr.ref_attr_name:
                    raise ModelLoadError(f"{path}: node '{node.name or node.op_type}' attribute '{attr.name}' refers to "
                                         f"function attribute '{attr.ref_attr_name}' outside a function body")
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)
    walk(model.graph)


_DATA_TYPES = set(onnx.TensorProto.DataType.values())


def _unknown_elem_type(tp: onnx.TypeProto) -> int | None:
    kind = tp.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        elem = getattr(tp, kind).elem_type
        return elem if elem not in _DATA_TYPES else None
    if kind in ("sequence_type", "optional_type"):
        inner = getattr(tp, kind)
        return _unknown_elem_type(inner.elem_type) if inner.HasField("elem_type") else None
    if kind == "map_type":
        return _unknown_elem_type(tp.map_type.value_type)
    return None


def _check_versions(model: onnx.ModelProto, where: str) -> None:
    if model.ir_version > onnx.IR_VERSION:
        raise ModelLoadError(f"{where}: IR version {model.ir_version} is newer than this onnx supports ({onnx.IR_VERSION})")
    newest = onnx.defs.onnx_opset_version()
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx") and o.version > newest:
            raise ModelLoadError(f"{where}: opset {o.version} is from the future (newest known: {newest})")


def _check_io(graph: onnx.GraphProto, where: str) -> None:
    inits = {t.name for t in graph.initializer}
    for vi in graph.input:
        if vi.name in inits:
            continue
        if not vi.type.HasField("tensor_type") and not vi.type.HasField("sequence_type") and not vi.type.HasField("map_type") and not vi.type.HasField("optional_type"):
            raise ModelLoadError(f"{where}: graph input '{vi.name}' has no type")
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type == onnx.TensorProto.UNDEFINED:
            raise ModelLoadError(f"{where}: graph input '{vi.name}' has no element type")
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value < 0:
                raise ModelLoadError(f"{where}: graph input '{vi.name}' has a negative dimension {d.dim_value}")
    names = [o.name for o in graph.output]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ModelLoadError(f"{where}: duplicate graph output name(s): {', '.join(dup)}")
    if not graph.output:
        raise ModelLoadError(f"{where}: graph has no outputs")


def _check_nodes(graph: onnx.GraphProto, where: str) -> None:
    available = {vi.name for vi in graph.input} | {t.name for t in graph.initializer} | {""}
    producer: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        if not node.op_type:
            raise ModelLoadError(f"{where}: node {i} ('{node.name}') has an empty op type")
        for out in node.output:
            if not out:
                continue
            if out in producer or out in available:
                raise ModelLoadError(f"{where}: tensor '{out}' is produced more than once")
            producer[out] = i
    succ: list[list[int]] = [[] for _ in graph.node]
    indegree = [0] * len(graph.node)
    for i, node in enumerate(graph.node):
        for inp in node.input:
            if inp in producer:
                succ[producer[inp]].append(i)
                indegree[i] += 1
            elif inp not in available:
                raise ModelLoadError(f"{where}: node '{node.name or i}' reads '{inp}', which nothing produces")
    for out in graph.output:
        if out.name not in producer and out.name not in available:
            raise ModelLoadError(f"{where}: graph output '{out.name}' is produced by no node")
    if not _is_acyclic(succ, indegree):
        import networkx as nx  # only to name the cycle: importing it costs ~0.1 s of every start-up

        dag = nx.DiGraph()
        dag.add_nodes_from(range(len(graph.node)))
        dag.add_edges_from((i, j) for i, out in enumerate(succ) for j in out)
        cycle = nx.find_cycle(dag)
        names = [graph.node[a].name or str(a) for a, _ in cycle]
        raise ModelLoadError(f"{where}: graph has a cycle through node(s) {', '.join(names[:4])}")


def _is_acyclic(succ: list[list[int]], indegree: list[int]) -> bool:
    """Kahn's algorithm: every node can be ordered after its producers."""
    indegree = list(indegree)
    ready = [i for i, d in enumerate(indegree) if d == 0]
    done = 0
    while ready:
        n = ready.pop()
        done += 1
        for s in succ[n]:
            indegree[s] -= 1
            if indegree[s] == 0:
                ready.append(s)
    return done == len(succ)


def _check_initializers(graph: onnx.GraphProto, where: str) -> None:
    for t in graph.initializer:
        if any(d < 0 for d in t.dims):
            raise ModelLoadError(f"{where}: initializer '{t.name}' has a negative dimension")
        if ext.uses_external_data(t) or not t.HasField("raw_data"):
            continue
        need = _byte_size(t)
        if need is not None and len(t.raw_data) != need:
            raise ModelLoadError(f"{where}: initializer '{t.name}' holds {len(t.raw_data)} bytes but its dims {list(t.dims)} need {need}")


def _byte_size(t: onnx.TensorProto) -> int | None:
    """Bytes the raw data of ``t`` must hold, or None where that is not a plain product (4-bit, strings)."""
    if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4, onnx.TensorProto.STRING):
        return None
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except Exception:
        return None
    count = 1
    for d in t.dims:
        count *= d
    return count * itemsize


def _check_external_data(model: onnx.ModelProto, base: Path, where: str) -> None:
    sizes: dict[str, int] = {}
    for t in ext._get_all_tensors(model):
        if not ext.uses_external_data(t):
            continue
        try:
            info = ext.ExternalDataInfo(t)
        except ValueError as exc:  # offset or length not a non-negative integer
            raise ModelLoadError(f"{where}: tensor '{t.name}' has a bad external data entry ({str(exc).split(' for tensor')[0]})") from None
        loc = Path(info.location)
        if loc.is_absolute() or ".." in loc.parts:
            raise ModelLoadError(f"{where}: tensor '{t.name}' points outside the model folder ({info.location})")
        file = base / loc
        if info.location not in sizes:
            if not file.is_file():
                raise ModelLoadError(f"{where}: external data file '{info.location}' (tensor '{t.name}') is missing")
            sizes[info.location] = file.stat().st_size
        need = _byte_size(t)
        if info.length is not None and need is not None and info.length != need:
            raise ModelLoadError(f"{where}: tensor '{t.name}' has external length {info.length} but its dims {list(t.dims)} need {need} bytes")
        end = (info.offset or 0) + (info.length if info.length is not None else need or 0)
        if end > sizes[info.location]:
            raise ModelLoadError(f"{where}: external data file '{info.location}' is too short for tensor '{t.name}'")
