"""Plugin kernel benchmark: accuracy against the numpy references, and speed against unfused torch ops.

Usage (GPU device: python 3.12, numpy, torch, triton; nothing else from this repo's dependencies)::

    python bench/plugins.py --json $OUT/plugins_bench.json            # accuracy + timing, fp32 and fp16
    python bench/plugins.py --skip-timing --runs 20                     # accuracy only

Accuracy. Each kernel of ``converter/plugins/trt/kernels.py`` runs on seeded random inputs at several
shapes (BERT-base-like: batch 8, seq 128, hidden 768, 12 heads; GroupNorm N=2, C=320, 64x64, 32 groups;
plus odd shapes that exercise masking and tails). The reference is the spec's numpy ``reference`` (``passes/plugins.py``) evaluated in
float64 on the same (fp32 or fp16) inputs. ``rel_err`` = max|out - ref| / max|ref| over the output;
``elem_rel`` = max elementwise |out - ref| / |ref| where |ref| >= 1e-2·max|ref| (informative only).
Limits: rel_err <= 1e-5 (fp32), <= 1e-3 (fp16); a failure sets exit status 1.

Timing. CUDA events around each call; 10 warm-up calls, then the median of ``--runs`` (default 100), in two
modes: ``eager`` (each call launched from Python, so launch overhead counts where it exceeds the kernel
time) and ``graph`` (one call captured in a CUDA graph and replayed: GPU time only).
``unfused`` is the op written as eager torch primitives (what the ONNX graph did before fusion:
mean/sub/pow/mean/add/sqrt/div/mul/add for LayerNorm, reshape+mean/var for GroupNorm,
matmul+softmax+matmul for attention); ``torch`` is torch's own fused op (F.layer_norm, F.group_norm,
F.gelu, F.scaled_dot_product_attention), shown for context. ``speedup`` = unfused / plugin.

Imports only numpy at module level; torch/triton and converter.plugins.trt.kernels are imported in main.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from surgery.plugins import get_plugin_spec  # noqa: E402
import passes.plugins  # noqa: E402,F401  (registers the specs with their numpy references)

LIMITS = {"fp32": 1e-5, "fp16": 1e-3}


def _cases() -> list[dict[str, Any]]:
    """(op, label, input shapes, fields) for the accuracy table; the first case of each op is also timed."""
    return [
        {"op": "SurgeryLayerNorm", "label": "bert-base [8,128,768]", "shape": (8, 128, 768), "timed": True},
        {"op": "SurgeryLayerNorm", "label": "odd [3,7,1000]", "shape": (3, 7, 1000)},
        {"op": "SurgeryLayerNorm", "label": "wide [4,6000]", "shape": (4, 6000)},
        {"op": "SurgeryRMSNorm", "label": "llama-ish [8,128,768]", "shape": (8, 128, 768), "timed": True},
        {"op": "SurgeryRMSNorm", "label": "odd [5,333]", "shape": (5, 333)},
        {"op": "SurgeryGroupNorm", "label": "unet [2,320,64,64] g32", "shape": (2, 320, 64, 64), "groups": 32, "act": 0,
         "timed": True},
        {"op": "SurgeryGroupNorm", "label": "unet [2,320,64,64] g32 +SiLU", "shape": (2, 320, 64, 64), "groups": 32,
         "act": 1, "timed": True},
        {"op": "SurgeryGroupNorm", "label": "odd [3,24,7,9] g6 +SiLU", "shape": (3, 24, 7, 9), "groups": 6, "act": 1},
        {"op": "SurgeryGelu", "label": "bert-base ffn [8,128,3072] erf", "shape": (8, 128, 3072), "approximate": 0,
         "timed": True},
        {"op": "SurgeryGelu", "label": "tanh [1000]", "shape": (1000,), "approximate": 1},
        {"op": "SurgeryGelu", "label": "quick [1000]", "shape": (1000,), "approximate": 2},
        {"op": "SurgeryAttention", "label": "bert-base [8,12,128,64] +pad mask", "q": (8, 12, 128, 64), "kv_heads": 12,
         "mask_kind": 1, "timed": True},
        {"op": "SurgeryAttention", "label": "gqa causal [2,8,100,64] kv=2", "q": (2, 8, 100, 64), "kv_heads": 2,
         "causal": 1},
        {"op": "SurgeryAttention", "label": "bool mask [2,4,77,40]", "q": (2, 4, 77, 40), "kv_heads": 4, "mask_kind": 2},
        {"op": "SurgeryAttention", "label": "no mask [1,2,8,16]", "q": (1, 2, 8, 16), "kv_heads": 2},
    ]


def _inputs(case: dict[str, Any], dtype: np.dtype, rng: np.random.Generator) -> tuple[list[np.ndarray], dict[str, Any]]:
    op = case["op"]
    if op == "SurgeryAttention":
        b, h, s, d = case["q"]
        hk = case["kv_heads"]
        q = rng.standard_normal((b, h, s, d)).astype(dtype)
        k = rng.standard_normal((b, hk, s, d)).astype(dtype)
        v = rng.standard_normal((b, hk, s, d)).astype(dtype)
        kind = case.get("mask_kind", 0)
        lengths = rng.integers(s // 2, s + 1, size=b)
        keep = np.arange(s)[None, :] < lengths[:, None]  # padding mask [B, S] -> [B, 1, 1, S]
        ins = [q, k, v]
        if kind == 1:
            ins.append(np.where(keep, 0.0, -10000.0).astype(dtype).reshape(b, 1, 1, s))
        elif kind == 2:
            ins.append(keep.reshape(b, 1, 1, s))
        return ins, {"num_heads": h, "scale": 1.0 / math.sqrt(d), "causal": case.get("causal", 0), "mask_kind": kind}
    x = (rng.standard_normal(case["shape"]) * 2.0 + 0.5).astype(dtype)
    if op == "SurgeryGelu":
        return [x], {"approximate": case["approximate"]}
    c = case["shape"][1] if op == "SurgeryGroupNorm" else case["shape"][-1]
    gamma = (1.0 + 0.1 * rng.standard_normal(c)).astype(np.float32)
    beta = (0.1 * rng.standard_normal(c)).astype(np.float32)
    if op == "SurgeryLayerNorm":
        return [x], {"epsilon": 1e-12, "gamma": gamma, "beta": beta}
    if op == "SurgeryRMSNorm":
        return [x], {"epsilon": 1e-6, "gamma": gamma}
    return [x], {"num_groups": case["groups"], "epsilon": 1e-5, "activation": case["act"], "gamma": gamma, "beta": beta}


def _plugin_call(k: Any, torch: Any, op: str, ins: list[Any], f: dict[str, Any]) -> Callable[[], Any]:
    dev = ins[0].device
    g = torch.as_tensor(f["gamma"], device=dev) if "gamma" in f else None
    b = torch.as_tensor(f["beta"], device=dev) if "beta" in f else None
    if op == "SurgeryLayerNorm":
        return lambda: k.layernorm(ins[0], g, b, f["epsilon"])
    if op == "SurgeryRMSNorm":
        return lambda: k.rmsnorm(ins[0], g, f["epsilon"])
    if op == "SurgeryGroupNorm":
        return lambda: k.groupnorm(ins[0], g, b, f["num_groups"], f["epsilon"], bool(f["activation"]))
    if op == "SurgeryGelu":
        return lambda: k.gelu(ins[0], f["approximate"])
    return lambda: k.attention(*ins[:3], ins[3] if len(ins) > 3 else None, scale=f["scale"], causal=bool(f["causal"]),
                               mask_kind=f["mask_kind"])


def _torch_calls(torch: Any, op: str, ins: list[Any], f: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """The unfused eager chain (what the graph computed before fusion) and torch's fused op."""
    F = torch.nn.functional
    x = ins[0]
    dev, dt = x.device, x.dtype
    g = torch.as_tensor(f["gamma"], device=dev).to(dt) if "gamma" in f else None
    b = torch.as_tensor(f["beta"], device=dev).to(dt) if "beta" in f else None
    if op == "SurgeryLayerNorm":
        eps = f["epsilon"]

        def unfused():
            mu = x.mean(-1, keepdim=True)
            d = x - mu
            return d / torch.sqrt(d.pow(2).mean(-1, keepdim=True) + eps) * g + b
        return {"unfused": unfused, "torch": lambda: F.layer_norm(x, x.shape[-1:], g, b, eps)}
    if op == "SurgeryRMSNorm":
        eps = f["epsilon"]
        fused = (lambda: F.rms_norm(x, x.shape[-1:], g, eps)) if hasattr(F, "rms_norm") else None
        calls = {"unfused": lambda: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g}
        return calls | ({"torch": fused} if fused else {})
    if op == "SurgeryGroupNorm":
        groups, eps, act = f["num_groups"], f["epsilon"], f["activation"]
        shape = (x.shape[1],) + (1,) * (x.dim() - 2)

        def unfused():
            r = x.reshape(x.shape[0], groups, -1)
            mu = r.mean(-1, keepdim=True)
            var = (r - mu).pow(2).mean(-1, keepdim=True)
            y = ((r - mu) / torch.sqrt(var + eps)).reshape(x.shape) * g.reshape(shape) + b.reshape(shape)
            return y * torch.sigmoid(y) if act else y

        def fused():
            y = F.group_norm(x, groups, g, b, eps)
            return F.silu(y) if act else y
        return {"unfused": unfused, "torch": fused}
    if op == "SurgeryGelu":
        approx = f["approximate"]
        if approx == 0:
            return {"unfused": lambda: 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0))), "torch": lambda: F.gelu(x)}
        if approx == 1:
            c = math.sqrt(2.0 / math.pi)
            return {"unfused": lambda: 0.5 * x * (1.0 + torch.tanh(c * (x + 0.044715 * x.pow(3)))),
                    "torch": lambda: F.gelu(x, approximate="tanh")}
        return {"unfused": lambda: x * torch.sigmoid(1.702 * x)}
    q, kk, v = ins[:3]
    mask = ins[3] if len(ins) > 3 else None
    scale = f["scale"]

    def unfused():
        s = torch.matmul(q, kk.transpose(-1, -2)) * scale
        if mask is not None:
            s = s + mask
        return torch.matmul(torch.softmax(s, dim=-1), v)
    return {"unfused": unfused,
            "torch": lambda: F.scaled_dot_product_attention(q, kk, v, attn_mask=mask, scale=scale)}


def _time(torch: Any, fn: Callable[[], Any], runs: int, graph: bool = False) -> float:
    """Median ms of ``fn`` between CUDA events. ``graph``: replay a CUDA graph of one call instead, so the
    time is the GPU's alone (no Python/launch overhead, which eager timing includes when it exceeds
    the kernel time)."""
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    call = fn
    if graph:
        g = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()  # warm-up on the capture stream
            with torch.cuda.graph(g, stream=side):
                fn()
        torch.cuda.synchronize()
        call = g.replay
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _errors(out: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    out, ref = out.astype(np.float64), ref.astype(np.float64)
    diff = np.abs(out - ref)
    scale = float(np.abs(ref).max()) or 1.0
    big = np.abs(ref) >= 1e-2 * scale
    elem = float((diff[big] / np.abs(ref[big])).max()) if big.any() else 0.0
    return float(diff.max()), float(diff.max()) / scale, elem


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import torch

    from converter.plugins.trt import kernels as k

    if not torch.cuda.is_available():
        print("no CUDA device: the plugin kernels need a GPU", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 baselines in IEEE fp32, like the kernels
    rng = np.random.default_rng(20261123)
    acc_rows, time_rows = [], []
    ok = True
    for case in _cases():
        for dname, dtype in (("fp32", np.float32), ("fp16", np.float16)):
            ins_np, fields = _inputs(case, np.dtype(dtype), rng)
            ref = get_plugin_spec(case["op"]).reference([a if a.dtype == bool else a.astype(np.float64) for a in ins_np], fields)[0]
            ins = [torch.from_numpy(a).cuda() for a in ins_np]
            plugin = _plugin_call(k, torch, case["op"], ins, fields)
            out = plugin().float().cpu().numpy()
            abs_err, rel, elem = _errors(out, ref)
            nan_ok = np.array_equal(np.isnan(out), np.isnan(ref))
            passed = bool(rel <= LIMITS[dname] and nan_ok)
            ok &= passed
            acc_rows.append({"op": case["op"], "case": case["label"], "dtype": dname, "max_abs_err": abs_err,
                             "rel_err": rel, "elem_rel": elem, "limit": LIMITS[dname], "pass": passed})
            print(f"{case['op']:<17} {case['label']:<36} {dname}  rel_err {rel:9.2e}  elem_rel {elem:9.2e}  "
                  f"abs {abs_err:9.2e}  {'ok' if passed else 'FAIL'}", flush=True)
            if case.get("timed") and not args.skip_timing:
                calls = {"plugin": plugin, **_torch_calls(torch, case["op"], ins, fields)}
                for mode in ("eager", "graph"):
                    row = {"op": case["op"], "case": case["label"], "dtype": dname, "mode": mode}
                    for name, fn in calls.items():
                        row[f"{name}_ms"] = _time(torch, fn, args.runs, graph=mode == "graph")
                    row["speedup_vs_unfused"] = row["unfused_ms"] / row["plugin_ms"]
                    if "torch_ms" in row:
                        row["plugin_vs_torch_fused"] = row["torch_ms"] / row["plugin_ms"]
                    time_rows.append(row)
    for mode in ("eager", "graph"):
        rows = [r for r in time_rows if r["mode"] == mode]
        if not rows:
            continue
        print(f"\ntiming, {mode} ({'each call launched from Python' if mode == 'eager' else 'CUDA graph replay: GPU time only'}), "
              f"median of {args.runs}")
        print(f"{'op':<17} {'case':<36} {'dtype':<5} {'plugin ms':>10} {'unfused ms':>11} {'speedup':>8} "
              f"{'torch-fused ms':>15} {'vs torch':>9}")
        for r in rows:
            tf = f"{r['torch_ms']:15.4f} {r['plugin_vs_torch_fused']:8.2f}x" if "torch_ms" in r else f"{'-':>15} {'-':>9}"
            print(f"{r['op']:<17} {r['case']:<36} {r['dtype']:<5} {r['plugin_ms']:10.4f} {r['unfused_ms']:11.4f} "
                  f"{r['speedup_vs_unfused']:7.2f}x {tf}")
    print(f"\naccuracy: {'all within limits' if ok else 'FAILURES'} (fp32 <= 1e-5, fp16 <= 1e-3, rel_err = max|d|/max|ref|)")
    if args.json:
        import triton

        meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
                "python": platform.python_version(), "runs": args.runs, "limits": LIMITS}
        args.json.write_text(json.dumps({"meta": meta, "accuracy": acc_rows, "timing": time_rows}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
