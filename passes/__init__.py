"""Built-in passes. Importing this package registers every pass and preset (explicit list, no magic)."""
from __future__ import annotations

from passes import (  # noqa: F401  (imported for registration)
    fold_constants,
    infer_shapes,
    remove_dead_nodes,
)
from surgery.registry import register_preset

CLEANUP = "infer-shapes,fold-constants,remove-dead-nodes"
register_preset("default", CLEANUP)
