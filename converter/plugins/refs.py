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


@reference("SurgeryGelu")
def _surgery_gelu(inputs: list[np.ndarray], attrs: dict[str, Any]) -> list[np.ndarray]:
    """approximate 0: x·Φ(x) with erf; 1: the tanh approximation; 2: x·sigmoid(1.702x)."""
    import math

    x = inputs[0]
    xf = x.astype(np.float64)
    approx = int(attrs.get("approximate", 0))
    if approx == 0:
        y = 0.5 * xf * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(xf / math.sqrt(2.0)))
    elif approx == 1:
        y = 0.5 * xf * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (xf + 0.044715 * xf**3)))
    else:
        y = xf / (1.0 + np.exp(-1.702 * xf))
    return [y.astype(x.dtype)]


@reference("SurgeryAttention")
def _surgery_attention(inputs: list[np.ndarray], attrs: dict[str, Any]) -> list[np.ndarray]:
    """softmax(Q·K^T·scale + mask)·V on [B,H,S,D]; K/V with fewer heads are repeated (grouped-query)."""
    q, k, v = (a.astype(np.float64) for a in inputs[:3])
    mask = inputs[3] if len(inputs) > 3 else None
    if k.shape[1] != q.shape[1]:
        k, v = (np.repeat(a, q.shape[1] // a.shape[1], axis=1) for a in (k, v))
    scores = q @ np.swapaxes(k, -1, -2) * float(attrs["scale"])
    kind = int(attrs.get("mask_kind", 0))
    if kind == 1:
        scores = scores + mask.astype(np.float64)
    elif kind == 2:
        scores = np.where(mask.astype(bool), scores, -np.inf)
    if int(attrs.get("causal", 0)):
        sq, sk = scores.shape[-2:]
        scores = np.where(np.tril(np.ones((sq, sk), bool)), scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs = probs / probs.sum(axis=-1, keepdims=True)
    return [(probs @ v).astype(inputs[0].dtype)]


# ---- normalization plugins (passes/fuse_layernorm.py, fuse_rmsnorm.py, fuse_groupnorm.py, fuse_skip_layernorm.py) ----

def _layernorm_last_axis(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    xf = x.astype(np.float64)
    mean = xf.mean(axis=-1, keepdims=True)
    var = ((xf - mean) ** 2).mean(axis=-1, keepdims=True)
    return (xf - mean) / np.sqrt(var + eps) * gamma.astype(np.float64) + beta.astype(np.float64)


@reference("SurgeryLayerNorm")
def _surgery_layernorm(inputs: list[np.ndarray], attrs: dict[str, Any]) -> list[np.ndarray]:
    """LayerNorm over the last axis with gamma/beta [C] TENSOR fields."""
    x = inputs[0]
    return [_layernorm_last_axis(x, np.asarray(attrs["gamma"]), np.asarray(attrs["beta"]), float(attrs["epsilon"])).astype(x.dtype)]


@reference("SurgeryRMSNorm")
def _surgery_rmsnorm(inputs: list[np.ndarray], attrs: dict[str, Any]) -> list[np.ndarray]:
    """x / sqrt(mean(x^2, last axis) + epsilon) * gamma."""
    x = inputs[0]
    xf = x.astype(np.float64)
    y = xf / np.sqrt((xf * xf).mean(axis=-1, keepdims=True) + float(attrs["epsilon"]))
    return [(y * np.asarray(attrs["gamma"]).astype(np.float64)).astype(x.dtype)]


@reference("SurgeryGroupNorm")
def _surgery_groupnorm(inputs: list[np.ndarray], attrs: dict[str, Any]) -> list[np.ndarray]:
    """GroupNorm on [N, C, ...] with per-channel gamma/beta; activation 1 applies SiLU afterwards."""
    x = inputs[0]
    n, c, groups = x.shape[0], x.shape[1], int(attrs["num_groups"])
    xf = x.astype(np.float64).reshape(n, groups, -1)
    mean = xf.mean(axis=-1, keepdims=True)
    var = ((xf - mean) ** 2).mean(axis=-1, keepdims=True)
    y = ((xf - mean) / np.sqrt(var + float(attrs["epsilon"]))).reshape(x.shape)
    per_channel = (c,) + (1,) * (x.ndim - 2)
    y = y * np.asarray(attrs["gamma"]).reshape(per_channel) + np.asarray(attrs["beta"]).reshape(per_channel)
    if int(attrs.get("activation", 0)) == 1:
        y = y / (1.0 + np.exp(-y))
    return [y.astype(x.dtype)]


# TensorRT's skip-LN kernels take no epsilon field: they add at most FLT_EPSILON (and nothing at all
# in the generic kernel), so the reference uses FLT_EPSILON.
TRT_SKIP_LN_EPSILON = float(np.finfo(np.float32).eps)


@reference("CustomSkipLayerNormPluginDynamic")
def _trt_skip_layernorm(inputs: list[np.ndarray], attrs: dict[str, Any]) -> list[np.ndarray]:
    """LayerNorm(input + skip [+ bias]) over the hidden axis (dim 2 of [S, B, E, 1, 1]); ld = E."""
    x, skip = inputs[0], inputs[1]
    ld = int(attrs["ld"])
    s = x.astype(np.float64) + skip.astype(np.float64)
    if attrs.get("bias") is not None:
        s = s + np.asarray(attrs["bias"]).reshape(ld, *([1] * (x.ndim - 3)))
    moved = np.moveaxis(s, 2, -1) if x.ndim == 5 else s
    y = _layernorm_last_axis(moved, np.asarray(attrs["gamma"]).reshape(-1), np.asarray(attrs["beta"]).reshape(-1), TRT_SKIP_LN_EPSILON)
    return [(np.moveaxis(y, -1, 2) if x.ndim == 5 else y).astype(x.dtype)]
