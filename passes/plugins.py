"""The plugin ops the fusion passes emit, each declared once: its ``PluginSpec`` with its numpy reference.

Importing this module registers them (``passes/__init__.py`` and the TensorRT plugin loader import it
explicitly). The TensorRT implementation of each onnx-surgery op is the only other place it appears
(``converter/plugins/trt``). A reference takes the node's input arrays (in node order) and its
attributes (plugin fields; TENSOR fields as arrays) and returns the list of output arrays.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from surgery.plugins import PluginSpec, register_plugin


def _surgery_gelu(inputs: list[np.ndarray], attrs: dict[str, Any]) -> list[np.ndarray]:
    """approximate 0: x·Φ(x) with erf; 1: the tanh approximation; 2: x·sigmoid(1.702x)."""
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


def _surgery_layernorm(inputs: list[np.ndarray], attrs: dict[str, Any]) -> list[np.ndarray]:
    """LayerNorm over the last axis with gamma/beta [C] TENSOR fields."""
    x = inputs[0]
    return [_layernorm_last_axis(x, np.asarray(attrs["gamma"]), np.asarray(attrs["beta"]), float(attrs["epsilon"])).astype(x.dtype)]


def _surgery_rmsnorm(inputs: list[np.ndarray], attrs: dict[str, Any]) -> list[np.ndarray]:
    """x / sqrt(mean(x^2, last axis) + epsilon) * gamma."""
    x = inputs[0]
    xf = x.astype(np.float64)
    y = xf / np.sqrt((xf * xf).mean(axis=-1, keepdims=True) + float(attrs["epsilon"]))
    return [(y * np.asarray(attrs["gamma"]).astype(np.float64)).astype(x.dtype)]


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


# ---- the specs ----

ATTENTION_PLUGIN = register_plugin(PluginSpec(
    "SurgeryAttention", "1", "onnx_surgery",
    fields={"num_heads": "int", "scale": "float", "causal": "int", "mask_kind": "int"},
    inputs=("q", "k", "v", "mask?"),
    notes="Q/K/V [B,H,S,D]; K/V may have H/g heads (grouped-query); mask_kind 0 none, 1 additive float, "
          "2 boolean (true = attend); causal masks the upper triangle (top-left aligned)", reference=_surgery_attention))

GELU_PLUGIN = register_plugin(PluginSpec(
    "SurgeryGelu", "1", "onnx_surgery", fields={"approximate": "int"}, inputs=("x",),
    notes="approximate: 0 = erf (exact), 1 = tanh approximation, 2 = x*sigmoid(1.702x)", reference=_surgery_gelu))

RMSNORM_PLUGIN = register_plugin(PluginSpec(
    op="SurgeryRMSNorm", version="1", namespace="onnx_surgery",
    fields={"epsilon": "float", "gamma": "tensor"}, inputs=("input",),
    notes="RMSNorm over the last axis: x / sqrt(mean(x^2) + epsilon) * gamma; statistics in fp32.", reference=_surgery_rmsnorm))

LAYERNORM_PLUGIN = register_plugin(PluginSpec(
    op="SurgeryLayerNorm", version="1", namespace="onnx_surgery",
    fields={"epsilon": "float", "gamma": "tensor", "beta": "tensor"}, inputs=("input",),
    notes="LayerNorm over the last axis: (x - mean) / sqrt(var + epsilon) * gamma + beta; statistics in fp32.", reference=_surgery_layernorm))

SKIP_LN_PLUGIN = register_plugin(PluginSpec(
    op="CustomSkipLayerNormPluginDynamic", version="1", namespace="",
    fields={"type_id": "int", "ld": "int", "beta": "tensor", "gamma": "tensor", "bias": "tensor"},
    inputs=("input", "skip"), builtin=True,
    notes="TensorRT BERT plugin: LayerNorm(input + skip + bias) over dim 2 of [S, B, E, 1, 1]; "
          "type_id 0 fp32 / 1 fp16; no epsilon field (kernel-fixed, at most FLT_EPSILON).", reference=_trt_skip_layernorm))

GROUPNORM_PLUGIN = register_plugin(PluginSpec(
    op="SurgeryGroupNorm", version="1", namespace="onnx_surgery",
    fields={"num_groups": "int", "epsilon": "float", "activation": "int", "gamma": "tensor", "beta": "tensor"},
    inputs=("input",),
    notes="GroupNorm on NCHW-like input, per-channel gamma/beta [C]; activation 0 = none, 1 = SiLU.", reference=_surgery_groupnorm))
