"""The built-in presets, as data. Ordering constraints are not kept here: each pass declares the passes
it must follow (``Pass.runs_after``) and ``parse_pipeline`` checks them for presets and user pipelines alike."""
from __future__ import annotations

CLEANUP = "infer-shapes,fold-constants,remove-dead-nodes"
# infer-shapes sits in the group because folding makes more shapes static, which in turn lets
# fold-constants and eliminate-noops do more; without it a second run of the preset still changes things.
# The CNN folds (MatMul+Add -> Gemm; BatchNormalization, constant per-channel Mul and Add into the layer
# before them) sit in the group: eliminate-noops and fold-constants can expose new layer -> op pairs,
# and each fold can bring the next op to its layer (Conv -> BN -> Mul -> Add folds in one sweep, in
# this order). They come before cse, which would otherwise merge layers that share constant weights
# and so leave each one's output shared.
FOLD = "matmul-add-to-gemm,fold-batchnorm,fuse-scale-mul,fuse-bias-add"
SIMPLIFY = f"fixpoint(eliminate-noops,merge-transposes,unflatten-gemm,resolve-reshape-targets,collapse-reshapes,{FOLD},cse,fold-constants,remove-dead-nodes,infer-shapes)"
# Replace what TensorRT cannot take: after CLEANUP (masks, trip counts and conditions are folded to
# constants by then) and before SIMPLIFY, which tidies what the rewrites leave.
REPLACE = ("rewrite-einsum,inline-constant-if,unroll-loop,rewrite-static-nonzero,rewrite-static-scatter,"
           "normalize-resize,cast-unsupported-dtypes")
# Fusions run after cleanup, so dynamic-shape arithmetic is folded and chains are canonical.
FUSE = ("fuse-layernorm,fuse-rmsnorm,fuse-groupnorm,fuse-gelu,fuse-swish,canonicalize-attention-layout,fuse-rotary,"
        "fuse-attention,fuse-skip-layernorm")

PRESETS = {
    "default": f"{CLEANUP},{SIMPLIFY}",
    "trt": f"{CLEANUP},{REPLACE},{SIMPLIFY},{FUSE},{SIMPLIFY}",
}

# Passes that options imply, and the option that implies each (shown in the optimize report).
SHAPES_PASS = "specialize-shapes"  # first: every later pass sees the static shapes
PRECISION_PASS = "convert-precision"  # last: fusions see fp32 patterns
PLUGIN_MAP_PASS = "map-plugins"  # last: it may take the nodes the fusions made
