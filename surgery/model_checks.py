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


def refuse_outside_functions(model: onnx.ModelProto, path: Path) -> None:
    """An attribute with ``ref_attr_name`` refers to an attribute of an enclosing function: outside a
    function body it is meaningless, and onnxruntime and the passes would silently read its default."""
    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            for attr in node.attribute:
                if attr.ref_attr_name:
                    raise ModelLoadError(f"{path}: node '{node.name or node.op_type}' attribute '{attr.name}' refers to "
                                         f"function attribute '{attr.ref_attr_name}' outside a function body")
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)
    walk(model.graph)


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
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        except Exception:
            continue
        count = 1
        for d in t.dims:
            count *= d
        if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
            continue
        if len(t.raw_data) != count * itemsize:
            raise ModelLoadError(
                f"{where}: initializer '{t.name}' holds {len(t.raw_data)} bytes but its dims {list(t.dims)} need {count * itemsize}"
            )


def _check_external_data(model: onnx.ModelProto, base: Path, where: str) -> None:
    sizes: dict[str, int] = {}
    for t in ext._get_all_tensors(model):
        if not ext.uses_external_data(t):
            continue
        info = ext.ExternalDataInfo(t)
        loc = Path(info.location)
        if loc.is_absolute() or ".." in loc.parts:
            raise ModelLoadError(f"{where}: tensor '{t.name}' points outside the model folder ({info.location})")
        file = base / loc
        if info.location not in sizes:
            if not file.is_file():
                raise ModelLoadError(f"{where}: external data file '{info.location}' (tensor '{t.name}') is missing")
            sizes[info.location] = file.stat().st_size
        end = (info.offset or 0) + (info.length or 0)
        if end > sizes[info.location]:
            raise ModelLoadError(f"{where}: external data file '{info.location}' is too short for tensor '{t.name}'")
