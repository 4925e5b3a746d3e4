"""Built-in passes. Importing this package registers every pass and preset (explicit list, no magic)."""
from __future__ import annotations

from passes import (  # noqa: F401  (imported for registration)
    canonicalize_attention_layout,
    cast_unsupported_dtypes,
    collapse_reshapes,
    convert_precision,
    cse,
    eliminate_noops,
    fold_constants,
    fuse_attention,
    fuse_gelu,
    fuse_groupnorm,
    fuse_layernorm,
    fuse_rotary,
    fuse_rmsnorm,
    fuse_skip_layernorm,
    infer_shapes,
    inline_constant_if,
    map_plugins,
    merge_transposes,
    normalize_resize,
    remove_dead_nodes,
    remove_nodes,
    rewrite_einsum,
    rewrite_static_nonzero,
    rewrite_static_scatter,
    specialize_shapes,
    unroll_loop,
)
from surgery.registry import register_preset

CLEANUP = "infer-shapes,fold-constants,remove-dead-nodes"
# infer-shapes sits in the group because folding makes more shapes static, which in turn lets
# fold-constants and eliminate-noops do more; without it a second run of the preset still changes things.
SIMPLIFY = "fixpoint(eliminate-noops,merge-transposes,collapse-reshapes,cse,fold-constants,remove-dead-nodes,infer-shapes)"
# The CLI prepends this (with a comma) to the pipeline when --input-shapes is given.
SHAPES_PREFIX = "specialize-shapes"
register_preset("default", f"{CLEANUP},{SIMPLIFY}")
# Replace what TensorRT cannot take: after CLEANUP (masks, trip counts and conditions are folded to
# constants by then) and before SIMPLIFY, which tidies what the rewrites leave.
REPLACE = ("rewrite-einsum,inline-constant-if,unroll-loop,rewrite-static-nonzero,rewrite-static-scatter,"
           "normalize-resize,cast-unsupported-dtypes")
# Fusions run after cleanup so dynamic-shape arithmetic is folded and chains are canonical; norms
# before GELU/attention (fuse-rmsnorm refuses mean-centred inputs, so LayerNorm is never taken for it).
FUSE = "fuse-layernorm,fuse-rmsnorm,fuse-groupnorm,fuse-gelu,canonicalize-attention-layout,fuse-rotary,fuse-attention,fuse-skip-layernorm"
register_preset("trt", f"{CLEANUP},{REPLACE},{SIMPLIFY},{FUSE},{SIMPLIFY}")
