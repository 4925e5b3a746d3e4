"""Triton kernels behind the onnx-surgery TensorRT plugins (imported only where a GPU runs them).

Every kernel keeps its statistics and accumulators in fp32 whatever the storage type (fp32 or fp16),
so fp16 results differ from the float64 references only by the final rounding. fp32 matrix products
use IEEE fp32 (no TF32), so fp32 attention matches the reference to ~1e-6.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def norm_rows_kernel(X, Y, W, B, n_cols, eps, BLOCK: tl.constexpr, RMS: tl.constexpr, HAS_BIAS: tl.constexpr):
    """One program per row of a [rows, n_cols] view: LayerNorm (two-pass mean/variance) or RMSNorm."""
    row = tl.program_id(0).to(tl.int64)
    x_row = X + row * n_cols
    y_row = Y + row * n_cols
    mean = 0.0
    if not RMS:
        acc = tl.zeros([BLOCK], tl.float32)
        for off in range(0, n_cols, BLOCK):
            cols = off + tl.arange(0, BLOCK)
            acc += tl.load(x_row + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        mean = tl.sum(acc, axis=0) / n_cols
    acc2 = tl.zeros([BLOCK], tl.float32)
    for off in range(0, n_cols, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        m = cols < n_cols
        d = tl.where(m, tl.load(x_row + cols, mask=m, other=0.0).to(tl.float32) - mean, 0.0)
        acc2 += d * d
    rstd = 1.0 / tl.sqrt_rn(tl.sum(acc2, axis=0) / n_cols + eps)
    for off in range(0, n_cols, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        m = cols < n_cols
        x = tl.load(x_row + cols, mask=m, other=0.0).to(tl.float32)
        y = (x - mean) * rstd * tl.load(W + cols, mask=m, other=0.0).to(tl.float32)
        if HAS_BIAS:
            y += tl.load(B + cols, mask=m, other=0.0).to(tl.float32)
        tl.store(y_row + cols, y.to(Y.dtype.element_ty), mask=m)


@triton.jit
def group_stats_kernel(X, PART, group_size, chunk, SPLIT: tl.constexpr, BLOCK: tl.constexpr):
    """Program (group, split): mean and M2 (sum of squared deviations) of one chunk of one group."""
    grp = tl.program_id(0).to(tl.int64)
    sp = tl.program_id(1)
    start = sp * chunk
    end = tl.minimum(start + chunk, group_size)
    base = X + grp * group_size
    acc = tl.zeros([BLOCK], tl.float32)
    for off in range(start, end, BLOCK):
        idx = off + tl.arange(0, BLOCK)
        acc += tl.load(base + idx, mask=idx < end, other=0.0).to(tl.float32)
    count = tl.maximum(end - start, 0).to(tl.float32)
    mean = tl.sum(acc, axis=0) / tl.maximum(count, 1.0)
    acc2 = tl.zeros([BLOCK], tl.float32)
    for off in range(start, end, BLOCK):
        idx = off + tl.arange(0, BLOCK)
        m = idx < end
        d = tl.where(m, tl.load(base + idx, mask=m, other=0.0).to(tl.float32) - mean, 0.0)
        acc2 += d * d
    out = PART + (grp * SPLIT + sp) * 3
    tl.store(out, count)
    tl.store(out + 1, mean)
    tl.store(out + 2, tl.sum(acc2, axis=0))


@triton.jit
def group_apply_kernel(X, Y, W, B, PART, C, spatial, channels_per_group, eps,
                       SPLIT: tl.constexpr, BLOCK: tl.constexpr, SILU: tl.constexpr):
    """Program (n*C + c, block): combine the group's chunk statistics (Chan et al.), normalize, affine, SiLU."""
    nc = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    c = nc % C
    grp = (nc // C) * (C // channels_per_group) + c // channels_per_group
    s = tl.arange(0, SPLIT)
    part = PART + (grp * SPLIT + s) * 3
    cnt = tl.load(part)
    mu = tl.load(part + 1)
    m2 = tl.load(part + 2)
    total = tl.sum(cnt, axis=0)
    mean = tl.sum(cnt * mu, axis=0) / total
    dev = mu - mean
    var = tl.sum(m2 + cnt * dev * dev, axis=0) / total
    rstd = 1.0 / tl.sqrt_rn(var + eps)
    scale = tl.load(W + c).to(tl.float32) * rstd
    shift = tl.load(B + c).to(tl.float32) - mean * scale
    idx = blk * BLOCK + tl.arange(0, BLOCK)
    m = idx < spatial
    x = tl.load(X + nc * spatial + idx, mask=m, other=0.0).to(tl.float32)
    y = x * scale + shift
    if SILU:
        y = y / (1.0 + tl.exp(-y))
    tl.store(Y + nc * spatial + idx, y.to(Y.dtype.element_ty), mask=m)


@triton.jit
def gelu_kernel(X, Y, n, APPROX: tl.constexpr, BLOCK: tl.constexpr):
    """0: x*Phi(x) (erf); 1: tanh approximation; 2: x*sigmoid(1.702x). Math in fp32."""
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = idx < n
    x = tl.load(X + idx, mask=m, other=0.0).to(tl.float32)
    if APPROX == 0:
        y = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    elif APPROX == 1:
        inner = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        y = x * (1.0 - 1.0 / (tl.exp(2.0 * inner) + 1.0))  # 0.5*(1+tanh(u)) = 1 - 1/(e^{2u}+1)
    else:
        y = x / (1.0 + tl.exp(-1.702 * x))
    tl.store(Y + idx, y.to(Y.dtype.element_ty), mask=m)


@triton.jit
def attention_kernel(Q, K, V, M, O, sm_scale,
                     sqb, sqh, sqs, sqd, skb, skh, sks, skd, svb, svh, svs, svd,
                     smb, smh, sms, smk, sob, soh, sos, sod,
                     H, GROUP, SQ, SK, D, DV,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
                     MASK_KIND: tl.constexpr, CAUSAL: tl.constexpr, IEEE: tl.constexpr):
    """Flash-attention forward: program (query block, batch*head); online softmax in fp32.

    K/V head = query head // GROUP (grouped-query). MASK_KIND 1 adds a float mask, 2 keeps where the
    boolean mask is true; the mask arrives expanded to [B, H, SQ, SK] by strides (0 = broadcast).
    Rows with every key masked give NaN, as the reference does (0/0).
    """
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    hk = h // GROUP
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = offs_m < SQ
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqs + offs_d[None, :] * sqd,
                mask=row_ok[:, None] & (offs_d[None, :] < D), other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    hi = SK
    if CAUSAL:
        hi = tl.minimum(SK, (pid_m + 1) * BLOCK_M)
    for start in range(0, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        col_ok = offs_n < SK
        k = tl.load(K + b * skb + hk * skh + offs_n[None, :] * sks + offs_d[:, None] * skd,
                    mask=col_ok[None, :] & (offs_d[:, None] < D), other=0.0)
        if IEEE:
            s = tl.dot(q, k, input_precision="ieee")
        else:
            s = tl.dot(q, k)
        s = s * sm_scale
        valid = row_ok[:, None] & col_ok[None, :]
        if MASK_KIND == 1:
            s += tl.load(M + b * smb + h * smh + offs_m[:, None] * sms + offs_n[None, :] * smk,
                         mask=valid, other=0.0).to(tl.float32)
        if MASK_KIND == 2:
            keep = tl.load(M + b * smb + h * smh + offs_m[:, None] * sms + offs_n[None, :] * smk, mask=valid, other=0)
            valid = valid & (keep != 0)
        if CAUSAL:
            valid = valid & (offs_n[None, :] <= offs_m[:, None])
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(V + b * svb + hk * svh + offs_n[:, None] * svs + offs_dv[None, :] * svd,
                    mask=col_ok[:, None] & (offs_dv[None, :] < DV), other=0.0)
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(O + b * sob + h * soh + offs_m[:, None] * sos + offs_dv[None, :] * sod, out.to(O.dtype.element_ty),
             mask=row_ok[:, None] & (offs_dv[None, :] < DV))
