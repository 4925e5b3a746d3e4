"""A one-line pass progress display for the terminal (nothing when stderr is not a terminal)."""
from __future__ import annotations

import sys

import onnx_graphsurgeon as gs

from surgery.pass_base import Pass, PassContext
from surgery.pass_manager import PassHook


class StepProgress(PassHook):
    """Shows ``[n] pass (nodes)`` on one rewritten stderr line; ``done()`` clears it."""

    def __init__(self) -> None:
        self.n = 0
        self.enabled = sys.stderr.isatty()

    def before(self, step: Pass, graph: gs.Graph, ctx: PassContext) -> None:
        self.n += 1
        if self.enabled:
            print(f"\r\033[K[{self.n}] {step.name} ({len(graph.nodes)} nodes)", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.enabled and self.n:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
