"""Where each node of an exported model came from: a source line, a module path, the full stack.

Three exporters leave three kinds of trace:

- PyTorch's dynamo exporter writes node ``metadata_props``: ``pkg.torch.onnx.stack_trace`` (the Python
  frames that created the node), ``pkg.torch.onnx.name_scopes`` (the module path, one qualified name
  per nesting level, ending with the FX node), ``pkg.torch.onnx.class_hierarchy`` and ``namespace``.
- The TorchScript exporter names nodes by scope: ``/encoder/layer.0/attention/self/MatMul_1`` is the
  ``MatMul_1`` of module ``encoder.layer.0.attention.self`` (``/Unique`` belongs to the top module).
- tf2onnx names nodes by TensorFlow name scope: ``model/dense/MatMul_0`` is in layer ``model/dense``.

A node with no trace of its own (TorchScript's unscoped ``Identity_87`` weight aliases, ``Constant_25``)
takes the module of its first consumer that has one, and says so. Passes that replace nodes keep the
trace through ``carry_metadata``: a new node that produces a tensor an original node produced inherits
that node's metadata and records its name under ``DERIVED_FROM``.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any, Collection

import onnx

STACK_TRACE = "pkg.torch.onnx.stack_trace"
NAME_SCOPES = "pkg.torch.onnx.name_scopes"
CLASS_HIERARCHY = "pkg.torch.onnx.class_hierarchy"
NAMESPACE = "namespace"
DERIVED_FROM = "pkg.onnx_surgery.derived_from"  # the original node a rewritten node replaced

_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')
# torch's own frames, absolute ("/venv/site-packages/torch/...") or relative ("torch/nn/...")
_LIBRARY_PATH = re.compile(r"(?:^|[/\\])(torch|torch_onnx|onnxscript|transformers[/\\]utils)[/\\]")
_SHORT = 160  # characters of the one-line form


@dataclass(frozen=True)
class Frame:
    file: str
    line: int
    function: str
    code: str = ""

    def text(self) -> str:
        base = self.file.replace("\\", "/").rsplit("/", 1)[-1]
        return f"{base}:{self.line} in {self.function}" + (f": {self.code}" if self.code else "")


@dataclass(frozen=True)
class Source:
    """What is known about where a node came from. ``origin`` says which trace gave it."""

    origin: str  # "dynamo metadata", "TorchScript scope", "tf2onnx scope", "node-name scope"
    module: str = ""  # module path ("encoder.layer.0.attention.self"; "" = the top module)
    classes: tuple[str, ...] = ()  # module classes, outermost first (dynamo only)
    frames: tuple[Frame, ...] = ()  # the stack, outermost first (dynamo only)
    via: str = ""  # the node whose trace this is, when not the node's own (a consumer, a replaced node)

    @property
    def frame(self) -> Frame | None:
        """The innermost frame outside torch's own code: the model line that made the node."""
        user = [f for f in self.frames if not _LIBRARY_PATH.search(f.file)]
        return (user or list(self.frames) or [None])[-1]

    def line(self) -> str:
        """One short line: module path, then the source line where one is recorded."""
        module = self.module or "top-level module"
        cls = f" ({self.classes[-1].rsplit('.', 1)[-1]})" if self.classes else ""
        text = f"{module}{cls}"
        frame = self.frame
        if frame is not None:
            text += f" at {frame.text()}"
        if self.via:
            text += f" [via {self.via}]"
        return text if len(text) <= _SHORT else text[: _SHORT - 3] + "..."

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"line": self.line(), "origin": self.origin, "module": self.module}
        if self.classes:
            out["classes"] = list(self.classes)
        if self.frames:
            out["stack"] = [{"file": f.file, "line": f.line, "function": f.function, "code": f.code} for f in self.frames]
        if self.via:
            out["via"] = self.via
        return out


@dataclass
class SourceMap:
    """Node name -> Source for one model; ``get`` returns None for a node nothing is known about."""

    sources: dict[str, Source] = field(default_factory=dict)

    def get(self, name: str) -> Source | None:
        return self.sources.get(name)

    def line(self, name: str) -> str:
        src = self.sources.get(name)
        return src.line() if src else ""

    def json(self, name: str) -> dict[str, Any] | None:
        src = self.sources.get(name)
        return src.to_json() if src else None

    def mentioned(self, text: str) -> list[str]:
        """Names of the nodes with a source that ``text`` (a pass note, say) names, sorted."""
        return sorted(name for name in self.sources
                      if name and name in text and re.search(rf"(?<![\w/.]){re.escape(name)}(?![\w/])", text))

    def __len__(self) -> int:
        return len(self.sources)


def parse_stack(text: str) -> tuple[Frame, ...]:
    """Frames of a Python stack trace as torch.fx records it (``File "...", line N, in f`` + code)."""
    frames: list[Frame] = []
    lines = text.splitlines()
    for i, raw in enumerate(lines):
        m = _FRAME.search(raw)
        if not m:
            continue
        code = lines[i + 1].strip() if i + 1 < len(lines) and not _FRAME.search(lines[i + 1]) else ""
        frames.append(Frame(m.group("file"), int(m.group("line")), m.group("func"), code))
    return tuple(frames)


def _literal_list(text: str) -> list[str]:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else []


def from_metadata(props: dict[str, str]) -> Source | None:
    """The dynamo exporter's trace, or None when the node carries none of its keys."""
    if not any(k in props for k in (STACK_TRACE, NAME_SCOPES, NAMESPACE)):
        return None
    scopes = _literal_list(props.get(NAME_SCOPES, ""))
    classes = _literal_list(props.get(CLASS_HIERARCHY, ""))
    if not scopes and props.get(NAMESPACE):  # "name: Class/name: Class/.../fx_node: target"
        parts = [p.split(": ", 1) for p in props[NAMESPACE].split("/")]
        scopes = [p[0] for p in parts]
        classes = classes or [p[1] for p in parts if len(p) == 2]
    modules = scopes[:-1] if len(scopes) > 1 else scopes  # the last scope is the FX node itself
    module = next((s for s in reversed(modules) if s), "")
    return Source("dynamo metadata", module, tuple(classes[:-1] if len(classes) > 1 else classes),
                  parse_stack(props.get(STACK_TRACE, "")))


def from_name(name: str, producer: str, passes: Collection[str] | None = None) -> Source | None:
    """The scope a TorchScript or tf2onnx node name carries, or None for an unscoped name or one a pass
    gave (``<pass>/<n>``; ``passes``: the registered pass names, looked up when not given)."""
    if "/" not in name or name.split("/", 1)[0] in (_pass_names() if passes is None else passes):
        return None
    scope = name.rsplit("/", 1)[0]
    if producer == "pytorch" and name.startswith("/"):
        return Source("TorchScript scope", ".".join(p for p in scope.split("/") if p))
    if producer == "tf2onnx":
        return Source("tf2onnx scope", scope)
    return Source("node-name scope", scope)


def _pass_names() -> set[str]:
    from surgery.registry import list_passes

    return {p.name for p in list_passes()}


def _props(node: onnx.NodeProto) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def source_map(model: onnx.ModelProto) -> SourceMap:
    """The source of every node of ``model``'s main graph that has one."""
    producer, passes = model.producer_name, _pass_names()
    nodes = list(model.graph.node)
    out: dict[str, Source] = {}
    for node in nodes:
        props = _props(node)
        origin = props.get(DERIVED_FROM, "")  # a rewritten node's own name is the pass's, not the exporter's
        src = from_metadata(props) or from_name(origin or node.name, producer, passes)
        if src is not None and origin:
            src = Source(src.origin, src.module, src.classes, src.frames, via=f"replaced {origin}")
        if src is not None:
            out[node.name] = src
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in nodes:  # unscoped helpers (weight aliases, constants): the module that uses them
        if node.name in out:
            continue
        users = [c for o in node.output for c in consumers.get(o, []) if c.name in out]
        if users:
            src = out[users[0].name]
            out[node.name] = Source(src.origin, src.module, src.classes, src.frames, via=f"consumer {users[0].name}")
    return SourceMap(out)


def carry_metadata(model: onnx.ModelProto, like: onnx.ModelProto) -> int:
    """Give ``model``'s nodes the metadata of ``like``'s nodes they stand for; returns how many got some.

    A node keeps the metadata of the original node with its name; a node without such a twin (a
    fusion's result) takes that of the original node that produced its first output, plus
    ``DERIVED_FROM`` naming it. Nodes that already carry metadata are left alone.
    """
    originals = [n for n in like.graph.node if n.metadata_props or "/" in n.name]
    if not originals:
        return 0
    by_name = {n.name: n for n in originals}
    by_output = {o: n for n in originals for o in n.output if o}
    carried = 0
    for node in model.graph.node:
        if node.metadata_props:
            continue
        twin = by_name.get(node.name)
        if twin is not None:
            node.metadata_props.extend(twin.metadata_props)
            carried += bool(twin.metadata_props)
            continue
        origin = next((by_output[o] for o in node.output if o in by_output), None)
        if origin is not None:
            node.metadata_props.extend(origin.metadata_props)
            node.metadata_props.add(key=DERIVED_FROM, value=origin.name)
            carried += 1
    return carried

