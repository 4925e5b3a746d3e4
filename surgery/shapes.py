"""Parse input shapes in Polygraphy (``x:[1,3,224,224]``) or trtexec (``x:1x3x224x224``) syntax."""
from __future__ import annotations

import re

from surgery.errors import UserInputError

_ENTRY_SPLIT = re.compile(r"[\s,]+(?![^\[]*\])")  # separators outside brackets


def parse_shapes(text: str | list[str]) -> dict[str, list[int]]:
    """``"x:[1,3,8,8] y:1x4"`` or ``"x:1x3x8x8,y:1x4"`` -> ``{"x": [1,3,8,8], "y": [1,4]}``."""
    parts = text if isinstance(text, list) else [text]
    entries = [e for part in parts for e in _ENTRY_SPLIT.split(part.strip()) if e]
    shapes: dict[str, list[int]] = {}
    for entry in entries:
        name, sep, dims = entry.rpartition(":")
        if not sep or not name:
            raise UserInputError(f"bad shape '{entry}': expected NAME:[d0,d1,...] or NAME:d0xd1x...")
        shapes[name] = _parse_dims(entry, dims)
    if not shapes:
        raise UserInputError("no shapes given")
    return shapes


def _parse_dims(entry: str, dims: str) -> list[int]:
    body = dims[1:-1] if dims.startswith("[") and dims.endswith("]") else dims
    items = [d for d in re.split(r"[,x]", body) if d != ""] if body else []
    if dims.startswith("[") != dims.endswith("]") or (not items and body):
        raise UserInputError(f"bad shape '{entry}'")
    try:
        values = [int(d) for d in items]
    except ValueError:
        raise UserInputError(f"bad shape '{entry}': dimensions must be integers") from None
    if any(v <= 0 for v in values):
        raise UserInputError(f"bad shape '{entry}': dimensions must be positive")
    return values
