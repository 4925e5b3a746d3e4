"""The pass contract: every pass mutates a ``gs.Graph`` in place and reports what it changed."""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import onnx_graphsurgeon as gs

from surgery.analysis import AnalysisManager


@dataclass
class PassResult:
    """What one run of a pass did.

    ``changed`` counts rewrites applied (0 means the pass was a no-op). ``stats`` counts events such
    as ``matched``, ``applied`` and ``rejected:<reason>``. ``notes`` are human-readable remarks, and
    ``sites`` (filled when the pass is explained) lists each candidate and its outcome.
    """

    changed: int = 0
    stats: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    sites: list[dict[str, str]] = field(default_factory=list)

    def reject(self, reason: str, site: str) -> None:
        self.stats[f"rejected:{reason}"] += 1
        self.sites.append({"site": site, "outcome": "rejected", "reason": reason})

    def apply(self, site: str, what: str = "applied") -> None:
        self.changed += 1
        self.stats["applied"] += 1
        self.sites.append({"site": site, "outcome": what, "reason": ""})


@dataclass
class PassContext:
    """Everything a pass may consult besides the graph. Passed explicitly: there are no globals."""

    options: dict[str, Any] = field(default_factory=dict)
    explain: frozenset[str] = frozenset()
    dump_dir: Path | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("surgery"))
    analyses: AnalysisManager = field(default_factory=AnalysisManager)

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


class Pass(ABC):
    """Base class of every pass.

    Subclasses set ``name`` (kebab-case, unique; the CLI and report key) and ``summary`` (one line,
    shown by ``surgery list-passes``) and implement ``run``. ``rewrites_ops`` lists op types the pass
    can take away, for remedies that point at it (a ``NodeRewritePass`` is found by its ``ops`` too).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    tags: ClassVar[frozenset[str]] = frozenset()
    preserves: ClassVar[frozenset[str]] = frozenset()
    rewrites_ops: ClassVar[tuple[str, ...]] = ()
    # (rtol, atol) a pass is allowed to move outputs by, e.g. a precision change; None: exact rewrites
    tolerance: ClassVar[tuple[float, float] | None] = None

    def requires(self, graph: gs.Graph, ctx: PassContext) -> None:
        """Raise ``PreconditionError`` if the pass cannot run on this graph."""

    @abstractmethod
    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        """Mutate ``graph`` in place and say what changed."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"
