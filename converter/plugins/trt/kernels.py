"""Launchers for the plugin kernels: torch CUDA tensors in, torch CUDA tensors out.

The TensorRT plugins' ``enqueue`` and ``bench/plugins.py`` call these. torch and triton are imported
inside the functions, so importing this module (and building engines on a CPU-only machine) needs
neither. Inputs must be contiguous (TensorRT's LINEAR format is); statistics are kept in fp32.
"""
from __future__ import annotations

from typing import Any

_SM_COUNT: dict[int, int] = {}


def _tk() -> Any:
    from converter.plugins.trt import triton_kernels

    return triton_kernels


def _empty_like(x: Any, out: Any) -> Any:
    return x.new_empty(x.shape) if out is None else out


def _row_block(n_cols: int) -> int:
    import triton

    return min(triton.next_power_of_2(max(n_cols, 1)), 4096)


def layernorm(x: Any, gamma: Any, beta: Any, epsilon: float, out: Any = None) -> Any:
    """LayerNorm over the last axis; ``gamma``/``beta`` have ``x.shape[-1]`` elements."""
    y = _empty_like(x, out)
    n_cols = x.shape[-1]
    if x.numel():
        block = _row_block(n_cols)
        _tk().norm_rows_kernel[(x.numel() // n_cols,)](x, y, gamma, beta, n_cols, float(epsilon), BLOCK=block, RMS=False,
                                                       HAS_BIAS=True, num_warps=min(max(block // 256, 1), 8))
    return y


def rmsnorm(x: Any, gamma: Any, epsilon: float, out: Any = None) -> Any:
    """x / sqrt(mean(x^2, last axis) + epsilon) * gamma."""
    y = _empty_like(x, out)
    n_cols = x.shape[-1]
    if x.numel():
        block = _row_block(n_cols)
        _tk().norm_rows_kernel[(x.numel() // n_cols,)](x, y, gamma, gamma, n_cols, float(epsilon), BLOCK=block, RMS=True,
                                                       HAS_BIAS=False, num_warps=min(max(block // 256, 1), 8))
    return y


def groupnorm(x: Any, gamma: Any, beta: Any, num_groups: int, epsilon: float, silu: bool = False, out: Any = None) -> Any:
    """GroupNorm on [N, C, ...] with per-channel gamma/beta, then SiLU when ``silu``.

    Two launches: chunked statistics per group (so even a few large groups fill the GPU), then one
    elementwise pass that merges the chunk statistics and applies scale, shift and the activation.
    """
    import torch
    import triton

    y = _empty_like(x, out)
    if not x.numel():
        return y
    n, c = x.shape[0], x.shape[1]
    spatial = x.numel() // (n * c)
    if c % num_groups:
        raise ValueError(f"GroupNorm: {c} channels do not split into {num_groups} groups")
    groups = n * num_groups
    group_size = (c // num_groups) * spatial
    dev = x.device.index or 0
    if dev not in _SM_COUNT:
        _SM_COUNT[dev] = torch.cuda.get_device_properties(dev).multi_processor_count
    want = max(1, (4 * _SM_COUNT[dev]) // groups)
    split = min(triton.next_power_of_2(want), 64, triton.next_power_of_2(triton.cdiv(group_size, 1024)))
    chunk = triton.cdiv(group_size, split)
    part = torch.empty((groups, split, 3), dtype=torch.float32, device=x.device)
    tk = _tk()
    tk.group_stats_kernel[(groups, split)](x, part, group_size, chunk, SPLIT=split, BLOCK=1024, num_warps=4)
    block = min(triton.next_power_of_2(spatial), 2048)
    tk.group_apply_kernel[(n * c, triton.cdiv(spatial, block))](x, y, gamma, beta, part, c, spatial, c // num_groups,
                                                                float(epsilon), SPLIT=split, BLOCK=block, SILU=bool(silu),
                                                                num_warps=4)
    return y


def gelu(x: Any, approximate: int = 0, out: Any = None) -> Any:
    """approximate 0: erf GELU; 1: tanh approximation; 2: x*sigmoid(1.702x)."""
    import triton

    y = _empty_like(x, out)
    n = x.numel()
    if n:
        block = 1024
        _tk().gelu_kernel[(triton.cdiv(n, block),)](x, y, n, APPROX=int(approximate), BLOCK=block, num_warps=4)
    return y


def attention(q: Any, k: Any, v: Any, mask: Any = None, *, scale: float, causal: bool = False, mask_kind: int = 0,
              out: Any = None) -> Any:
    """softmax(q·kᵀ·scale + mask)·v on [B, H, S, D]; k/v may have H/g heads; mask broadcasts to [B, H, Sq, Sk]."""
    import torch
    import triton

    bsz, heads, sq, d = q.shape
    hk, sk, dv = k.shape[1], k.shape[2], v.shape[3]
    if heads % hk:
        raise ValueError(f"attention: {heads} query heads are not a multiple of {hk} key/value heads")
    o = q.new_empty((bsz, heads, sq, dv)) if out is None else out
    if not o.numel():
        return o
    if mask_kind and mask is not None:
        m = mask if mask_kind == 1 else mask.view(torch.uint8) if mask.dtype == torch.bool else mask
        m = m.reshape((1,) * (4 - m.dim()) + tuple(m.shape)).expand(bsz, heads, sq, sk)
        mstrides = m.stride()
    else:
        mask_kind, m, mstrides = 0, q, (0, 0, 0, 0)
    block_d, block_dv = max(16, triton.next_power_of_2(d)), max(16, triton.next_power_of_2(dv))
    ieee = q.dtype == torch.float32
    # measured on an H200 at [8,12,128,64]: IEEE fp32 (FMA path) prefers short query blocks, fp16 short key blocks
    block_m = 32 if ieee else 64
    block_n = (64 if block_d <= 64 else 32) if ieee else 32
    grid = (triton.cdiv(sq, block_m), bsz * heads)
    _tk().attention_kernel[grid](q, k, v, m, o, float(scale), *q.stride(), *k.stride(), *v.stride(), *mstrides,
                                 *o.stride(), heads, heads // hk, sq, sk, d, dv,
                                 BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_DV=block_dv,
                                 MASK_KIND=int(mask_kind), CAUSAL=bool(causal), IEEE=ieee, num_warps=4, num_stages=2)
    return o
