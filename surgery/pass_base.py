"""The pass contract: every pass mutates a ``gs.Graph`` in place and reports what it changed.

Calling a pass runs its contract: ``requires`` (may raise ``PreconditionError``), ``run``, then
``ensures`` (may raise ``VerificationError``). The pass manager and the tests both call passes this way.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, ClassVar, Mapping

import onnx_graphsurgeon as gs

from surgery.errors import UserInputError


@dataclass
class PassResult:
    """What one run of a pass did.

    ``changed`` counts rewrites applied (0 means the pass was a no-op). ``stats`` counts events such
    as ``matched``, ``applied`` and ``rejected:<reason>``. ``notes`` are human-readable remarks, and
    ``sites`` (filled when the pass is explained) lists each candidate and its outcome; a rejection
    that blames one tensor names it under ``tensor``.
    """

    changed: int = 0
    stats: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    sites: list[dict[str, str]] = field(default_factory=list)

    def reject(self, reason: str, site: str, tensor: str | None = None) -> None:
        self.stats[f"rejected:{reason}"] += 1
        entry = {"site": site, "outcome": "rejected", "reason": reason}
        if tensor:
            entry["tensor"] = tensor
        self.sites.append(entry)

    def apply(self, site: str, what: str = "applied") -> None:
        self.changed += 1
        self.stats["applied"] += 1
        self.sites.append({"site": site, "outcome": what, "reason": ""})


@dataclass(frozen=True)
class PassOptions:
    """Every option a pass may read, typed. The CLI fills it from its flags; unknown keys are refused."""

    emit: str = "onnx"  # fusions: "onnx" (standard ops), "ort" (com.microsoft ops) or "plugin"
    attention_kernels: str | None = None  # "tensorrt": keep attention TensorRT has no kernel for decomposed
    precision: str | None = None  # convert-precision: "fp16" | "bf16"
    keep_io_types: bool = True  # convert-precision: graph inputs/outputs keep their dtype
    input_shapes: Mapping[str, list[int]] | None = None  # specialize-shapes
    remove_names: tuple[str, ...] = ()  # remove-nodes
    remove_ops: tuple[str, ...] = ()  # remove-nodes
    plugin_map: Mapping[str, Any] | None = None  # map-plugins: the parsed --plugin-map file
    fold_size_threshold: int | None = None  # fold-constants: larger folded tensors stay computed

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> PassOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserInputError(f"unknown pass option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**{k: tuple(v) if k in ("remove_names", "remove_ops") and v is not None else v
                      for k, v in values.items()})


@dataclass
class PassContext:
    """Everything a pass may consult besides the graph. Passed explicitly: there are no globals.

    ``options`` may be given as a plain mapping; it is checked and turned into ``PassOptions``.
    """

    options: PassOptions = field(default_factory=PassOptions)
    explain: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.options, PassOptions):
            self.options = PassOptions.from_mapping(self.options)


class Pass(ABC):
    """Base class of every pass.

    Subclasses set ``name`` (kebab-case, unique; the CLI and report key) and ``summary`` (one line,
    shown by ``surgery list-passes``) and implement ``run``. ``runs_after`` maps each pass that must come
    earlier, when both are in one pipeline, to the reason (checked when the pipeline is parsed); ``emits`` lists the
    ``emit`` values the pass honours (empty: it does not read ``emit``); ``rewrites_ops`` lists op
    types the pass can take away, for remedies that point at it (a ``NodeRewritePass`` is found by its ``ops`` too).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    runs_after: ClassVar[Mapping[str, str]] = MappingProxyType({})
    emits: ClassVar[tuple[str, ...]] = ()
    rewrites_ops: ClassVar[tuple[str, ...]] = ()
    # (rtol, atol) a pass is allowed to move outputs by, e.g. a precision change; None: exact rewrites
    tolerance: ClassVar[tuple[float, float] | None] = None
    # False for a pass that only annotates tensors with what ONNX's own inference derived (infer-shapes):
    # the pass manager does not verify after it, as nothing that verification checks has changed
    changes_graph: ClassVar[bool] = True

    def __call__(self, graph: gs.Graph, ctx: PassContext | None = None) -> PassResult:
        ctx = ctx or PassContext()
        self.requires(graph, ctx)
        result = self.run(graph, ctx)
        self.ensures(graph, ctx, result)
        return result

    def requires(self, graph: gs.Graph, ctx: PassContext) -> None:
        """Raise ``PreconditionError`` if the pass cannot run on this graph (the emit check is built in)."""
        if self.emits and ctx.options.emit not in self.emits:
            raise UserInputError(f"{self.name}: emit must be one of {', '.join(self.emits)}, got {ctx.options.emit!r}")

    @abstractmethod
    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        """Mutate ``graph`` in place and say what changed."""

    def ensures(self, graph: gs.Graph, ctx: PassContext, result: PassResult) -> None:
        """Raise ``VerificationError`` if the pass broke a promise of its own (nothing by default)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"
