"""Numpy reference implementations of plugin ops, keyed by plugin op type.

Every ``PluginSpec`` (surgery/plugins.py) needs one; a test enforces it. A reference takes the
node's input arrays (in node order) and its attributes (plugin fields; TENSOR fields as arrays)
and returns the list of output arrays.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

Reference = Callable[[list[np.ndarray], dict[str, Any]], list[np.ndarray]]
_REFS: dict[str, Reference] = {}


def reference(op: str) -> Callable[[Reference], Reference]:
    def deco(fn: Reference) -> Reference:
        _REFS[op] = fn
        return fn
    return deco


def get_reference(op: str) -> Reference | None:
    return _REFS.get(op)


def references() -> dict[str, Reference]:
    return dict(_REFS)

# ---- references are defined below, one per plugin op ----
