"""onnxruntime CUDA latency of real-size exports: ``surgery optimize`` against onnxruntime's transformers optimizer.

Usage, on a machine with a GPU, torch and transformers (the package itself needs neither)::

    python3 bench/gpu.py --work /tmp/gpu --json gpu.json                  # all models, both exporters
    python3 bench/gpu.py --work /tmp/gpu --models bert,vit --exporters ts --skip-optimize

Steps: (1) ``bench/real_exports.py`` exports BERT-base, GPT-2 small, ViT-B/16, ResNet-50 and a ~1 GB GQA
Llama with random weights (TorchScript and dynamo, weights embedded) into ``--work``; (2) every variant is
made in its own process, its wall time recorded: ``ours`` = ``surgery optimize --preset trt --emit ort``,
``ours-onnx`` = the same with ``--emit onnx``, ``ort-t`` = ``python -m onnxruntime.transformers.optimizer
--use_gpu`` (model type, heads and hidden size from the export's ``.bench.json``), each again in fp16
(``--precision fp16`` / ``--float16``); (3) one onnxruntime session per variant on the CUDA execution provider
with I/O binding (inputs on the GPU, outputs left there), graph optimizations as ``--graph-opt`` says, at the
batch sizes of ``BATCH``; warm-up, then ``--blocks`` blocks of ``--iters`` runs, the variants interleaved
block by block so drift hits all alike; the figure is the median of the block means. Each variant's first
output is compared with the raw export's fp32 output on the same GPU (relative L2 error). A variant that
fails to build or run is a row ``error: ...``, never a missing row.

Printed per model: ms, speed-up over the raw export, ours / ort-t, error; then the geometric means. The JSON
has every figure, the machine and the library versions.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("bert", "gpt2", "vit", "resnet50", "llama")
EXPORTERS = {"ts": "ts", "dynamo": "dynamo"}
# dims of the measured inputs (the spec's batch 1 / sequence 128 replaced)
BATCH = {"bert": (8, 128), "gpt2": (8, 128), "vit": (8, None), "resnet50": (32, None), "llama": (2, 256)}
VARIANTS = ("raw", "ours", "ours-onnx", "ort-t", "ours-fp16", "ort-t-fp16")
FP16_VARIANTS = ("ours-fp16", "ort-t-fp16")
MAX_REL_L2 = {"fp32": 1e-3, "fp16": 2e-2}


@dataclass
class Variant:
    name: str
    path: str = ""
    optimize_s: float = 0.0
    error: str = ""
    ms: float = float("nan")
    rel_l2: float = float("nan")
    block_ms: list[float] = field(default_factory=list)
    op_ms: dict[str, float] = field(default_factory=dict)  # --profile: kernel ms per run, by op type
    session_ops: dict[str, int] = field(default_factory=dict)  # --profile: ops onnxruntime runs after its optimizer


def one_line(text: str) -> str:
    lines = [x for x in str(text).strip().splitlines() if x.strip()]
    return lines[-1][:240] if lines else "failed"


def command_for(variant: str, src: Path, dst: Path, meta: dict) -> list[str]:
    py = sys.executable
    if variant.startswith("ours"):
        cmd = [py, "-m", "surgery", "optimize", str(src), "-o", str(dst), "--preset", "trt",
               "--emit", "onnx" if variant == "ours-onnx" else "ort"]
        return cmd + (["--precision", "fp16"] if variant in FP16_VARIANTS else [])
    cmd = [py, "-m", "onnxruntime.transformers.optimizer", "--input", str(src), "--output", str(dst),
           "--model_type", meta["ort_model_type"], "--num_heads", str(meta["num_heads"]),
           "--hidden_size", str(meta["hidden_size"]), "--use_gpu"]
    return cmd + (["--float16"] if variant in FP16_VARIANTS else [])


def make_variants(src: Path, meta: dict, skip: bool, timeout: float) -> dict[str, Variant]:
    out = {"raw": Variant("raw", str(src))}
    for name in VARIANTS[1:]:
        dst = src.with_name(f"{src.stem}.{name}.onnx")
        var = out[name] = Variant(name, str(dst))
        if skip and dst.exists():
            continue
        start = time.perf_counter()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
        try:
            proc = subprocess.run(command_for(name, src, dst, meta), capture_output=True, text=True, timeout=timeout,
                                  env=env, cwd=ROOT)
        except subprocess.TimeoutExpired:
            var.error = f"optimizer timed out after {timeout:.0f}s"
            continue
        var.optimize_s = time.perf_counter() - start
        if proc.returncode != 0 or not dst.exists():
            var.error = "optimizer: " + one_line(proc.stderr or proc.stdout)
        print(f"  {name:<11} {var.optimize_s:6.1f}s {var.error or 'ok'}", flush=True)
    return out


def feeds_for(spec: dict, family: str, seed: int = 0) -> dict[str, np.ndarray]:
    batch, seq = BATCH[family]
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in spec["inputs"]:
        shape = list(inp["shape"])
        shape[0] = batch
        if seq and len(shape) == 2:
            shape[1] = seq
        dtype = np.dtype(inp["dtype"])
        if np.issubdtype(dtype, np.integer):
            feeds[inp["name"]] = rng.integers(inp["low"], inp["high"], size=shape).astype(dtype)
        else:
            feeds[inp["name"]] = rng.standard_normal(shape).astype(dtype)
    return feeds


class Runner:
    """One session on the CUDA provider with inputs bound on the GPU and outputs left there (or all on the CPU)."""

    def __init__(self, ort, path: str, feeds: dict[str, np.ndarray], graph_opt: str, device: str,
                 profile_prefix: str = "") -> None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        options.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                            "off": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[graph_opt]
        provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
        self.session = ort.InferenceSession(path, options, providers=[provider])
        if provider not in self.session.get_providers():
            raise RuntimeError(f"{provider} not used")
        self.binding = self.session.io_binding()
        types = {i.name: i.type for i in self.session.get_inputs()}
        for name, value in feeds.items():
            if types.get(name) == "tensor(float16)":
                value = value.astype(np.float16)
            self.binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, device, 0))
        for out in self.session.get_outputs():
            self.binding.bind_output(out.name, device)

    def step(self) -> None:
        self.session.run_with_iobinding(self.binding)
        self.binding.synchronize_outputs()

    def first_output(self) -> np.ndarray:
        return self.binding.copy_outputs_to_cpu()[0].astype(np.float32)


def profile_ops(ort, path: str, feeds: dict[str, np.ndarray], graph_opt: str, device: str, runs: int,
                folder: Path) -> dict[str, float]:
    """onnxruntime's profiler: the kernel milliseconds per run of each op type over the last ``runs`` of
    ``runs + 3`` runs (the first three warm up), largest first."""
    folder.mkdir(parents=True, exist_ok=True)
    runner = Runner(ort, path, feeds, graph_opt, device, profile_prefix=str(folder / Path(path).stem))
    for _ in range(runs + 3):
        runner.step()
    per_node: dict[str, tuple[str, list[float]]] = {}
    for event in json.loads(Path(runner.session.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            per_node.setdefault(event["name"], (op, []))[1].append(event.get("dur", 0) / 1000)
    totals: dict[str, float] = {}
    for op, durations in per_node.values():
        totals[op] = totals.get(op, 0.0) + sum(durations[-runs:]) / runs
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def session_ops(ort, path: str, graph_opt: str, device: str, folder: Path) -> dict[str, int]:
    """Op counts of the graph onnxruntime runs after its own optimizations (Memcpy nodes show host round trips)."""
    import onnx  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                        "off": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[graph_opt]
    dumped = folder / f"{Path(path).stem}.session.onnx"
    options.optimized_model_filepath = str(dumped)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", dumped.name + ".data")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    ort.InferenceSession(path, options, providers=[provider])
    counts: dict[str, int] = {}
    for node in onnx.load(str(dumped), load_external_data=False).graph.node:
        key = f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def rel_l2(ref: np.ndarray, got: np.ndarray) -> float:
    if ref.shape != got.shape:
        return float("inf")
    return float(np.linalg.norm((got - ref).ravel()) / max(np.linalg.norm(ref.ravel()), 1e-30))


def measure(ort, variants: dict[str, Variant], feeds: dict[str, np.ndarray], graph_opt: str, blocks: int,
            iters: int, warmup: int, device: str, profile: Path | None = None) -> None:
    runners: dict[str, Runner] = {}
    for name, var in variants.items():
        if var.error:
            continue
        try:
            runners[name] = Runner(ort, var.path, feeds, graph_opt, device)
            for _ in range(warmup):
                runners[name].step()
        except Exception as exc:  # a broken variant is a row, not a crash
            var.error = f"run: {type(exc).__name__}: {one_line(exc)}"
            runners.pop(name, None)
    if "raw" not in runners:
        return
    ref = runners["raw"].first_output()
    for name, runner in runners.items():
        variants[name].rel_l2 = rel_l2(ref, runner.first_output())
    for _ in range(blocks):
        for name, runner in runners.items():
            start = time.perf_counter()
            for _ in range(iters):
                runner.step()
            variants[name].block_ms.append((time.perf_counter() - start) * 1000 / iters)
    for name in runners:
        variants[name].ms = statistics.median(variants[name].block_ms)
    for name, var in variants.items():
        limit = MAX_REL_L2["fp16" if name in FP16_VARIANTS else "fp32"]
        if not var.error and not var.rel_l2 <= limit:
            var.error = f"output differs: rel L2 {var.rel_l2:.2e} > {limit:g}"
    del runners
    for name, var in variants.items():
        if profile is not None and not var.error:
            try:
                var.op_ms = profile_ops(ort, var.path, feeds, graph_opt, device, 5, profile)
                var.session_ops = session_ops(ort, var.path, graph_opt, device, profile)
            except Exception as exc:  # the profile is a diagnosis: its failure does not fail the row
                var.op_ms = {"error": float("nan")}
                print(f"  profile of {name} failed: {one_line(exc)}", flush=True)


def print_model(model: str, variants: dict[str, Variant]) -> None:
    raw = variants["raw"].ms
    print(f"\n{model}")
    print(f"  {'variant':<11} {'ms':>8} {'vs raw':>7} {'rel L2':>9} {'optimize':>9}  note")
    for name, var in variants.items():
        speed = raw / var.ms if var.ms == var.ms else float("nan")
        print(f"  {name:<11} {var.ms:8.3f} {speed:6.2f}x {var.rel_l2:9.1e} {var.optimize_s:8.1f}s  {var.error}")
    for ours, theirs in (("ours", "ort-t"), ("ours-fp16", "ort-t-fp16")):
        a, b = variants[ours], variants[theirs]
        if not a.error and not b.error:
            print(f"  {ours} vs {theirs}: {b.ms / a.ms:.3f}x (>1: ours faster)")
    for name, var in variants.items():
        if var.op_ms:
            top = ", ".join(f"{op} {ms:.3f}" for op, ms in list(var.op_ms.items())[:8])
            print(f"  profile {name:<11} {sum(v for v in var.op_ms.values() if v == v):7.3f} ms kernels: {top}")
        if var.session_ops:
            print(f"  session {name:<11} {sum(var.session_ops.values())} nodes: {var.session_ops}")


def geomean(values: list[float]) -> float:
    values = [v for v in values if v == v and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


def summary(results: dict[str, dict[str, Variant]]) -> dict[str, float]:
    out = {}
    for ours, theirs in (("ours", "ort-t"), ("ours-fp16", "ort-t-fp16"), ("ours-onnx", "raw")):
        ratios = [r[theirs].ms / r[ours].ms for r in results.values() if not r[ours].error and not r[theirs].error]
        out[f"{ours} vs {theirs}"] = geomean(ratios)
        out[f"{ours} vs {theirs} min"] = min(ratios) if ratios else float("nan")
    for name in VARIANTS[1:]:
        out[f"{name} vs raw"] = geomean([r["raw"].ms / r[name].ms for r in results.values() if not r[name].error])
    return out


def machine(ort) -> dict[str, str]:
    gpu = ""
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        pass
    return {"gpu": gpu, "cpus": str(os.cpu_count()), "python": platform.python_version(),
            "onnxruntime": ort.__version__}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, required=True, help="folder of the exports and the optimized models")
    p.add_argument("--models", default=",".join(FAMILIES), help="comma-separated subset of " + ",".join(FAMILIES))
    p.add_argument("--exporters", default="ts,dynamo", help="ts, dynamo or both")
    p.add_argument("--graph-opt", default="all", choices=("all", "off"), help="onnxruntime graph optimizations")
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--iters", type=int, default=20, help="runs per timed block")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--skip-optimize", action="store_true", help="reuse optimized models already in --work")
    p.add_argument("--timeout", type=float, default=600, help="seconds per optimizer run")
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument("--profile", type=Path, help="also profile each variant (kernel ms by op type); traces go here")
    p.add_argument("--cpu", action="store_true", help="a smoke test on the CPU provider (no GPU figures)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torch  # noqa: F401  (loads the CUDA and cuDNN libraries onnxruntime's CUDA provider needs)
    except ImportError:
        pass
    import onnxruntime as ort

    families = [m for m in args.models.split(",") if m]
    exporters = [EXPORTERS[e] for e in args.exporters.split(",") if e]
    args.work.mkdir(parents=True, exist_ok=True)
    missing = [f for f in families if not all((args.work / f"{f}_{e}.bench.json").exists() for e in exporters)]
    if missing:
        subprocess.run([sys.executable, str(ROOT / "bench" / "real_exports.py"), "--out", str(args.work), "--only",
                        *missing], check=True)
    results: dict[str, dict[str, Variant]] = {}
    for family in families:
        for exporter in exporters:
            name = f"{family}_{exporter}"
            src = args.work / f"{name}.onnx"
            meta = json.loads(src.with_suffix(".bench.json").read_text())
            spec = json.loads(src.with_suffix(".spec.json").read_text())
            print(f"{name}: optimizing", flush=True)
            variants = make_variants(src, meta, args.skip_optimize, args.timeout)
            measure(ort, variants, feeds_for(spec, family), args.graph_opt, args.blocks, args.iters, args.warmup,
                    "cpu" if args.cpu else "cuda", args.profile)
            results[name] = variants
            print_model(name, variants)
    totals = summary(results)
    print("\ngeometric means (>1: the first is faster)")
    for key, value in totals.items():
        print(f"  {key:<28} {value:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(ort), "graph_opt": args.graph_opt, "batch": BATCH,
                                         "summary": totals,
                                         "models": {m: {k: asdict(v) for k, v in r.items()} for m, r in results.items()}},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
