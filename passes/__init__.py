"""Built-in passes. Importing this package registers every pass and preset (explicit list, no magic)."""
from __future__ import annotations

from passes import (  # noqa: F401  (imported for registration)
    canonicalize_attention_layout,
    cast_unsupported_dtypes,
    collapse_reshapes,
    convert_precision,
    cse,
    eliminate_noops,
    fold_batchnorm,
    fold_constants,
    fuse_attention,
    fuse_bias_add,
    fuse_gelu,
    fuse_groupnorm,
    fuse_layernorm,
    fuse_rotary,
    fuse_rmsnorm,
    fuse_scale_mul,
    fuse_skip_layernorm,
    fuse_swish,
    infer_shapes,
    inline_constant_if,
    map_plugins,
    matmul_add_to_gemm,
    plugins,
    merge_transposes,
    normalize_resize,
    remove_dead_nodes,
    remove_nodes,
    resolve_reshape_targets,
    rewrite_einsum,
    rewrite_static_nonzero,
    rewrite_static_scatter,
    specialize_shapes,
    unflatten_gemm,
    unroll_loop,
)
from passes.presets import PRESETS
from surgery.registry import register_preset

for _name, _spec in PRESETS.items():
    register_preset(_name, _spec)
