"""Fusion benchmark: what ``surgery optimize --preset trt`` fuses in the sample transformer/diffusion exports,
against its peers, and what that does to onnxruntime latency.

Usage::

    .venv/bin/python bench/fusion.py                                  # CPU: fusion table + latency, all models
    .venv/bin/python bench/fusion.py --models bert_ts,llama_dynamo --runs 50 --json /tmp/fusion.json
    .venv/bin/python bench/fusion.py --skip-peers                     # ours only
    .venv/bin/python bench/fusion.py --export-optimized out/fusion    # write our outputs, then stop

    # GPU device (python 3.12, onnx, numpy, torch; onnxruntime-gpu carried in): no optimizer runs there
    python bench/fusion.py --cuda --optimized-dir out/fusion [--batch 8]

Fusion table. For each model and fused kind (layernorm, rmsnorm, gelu, attention, groupnorm) it prints the
number of modules in the source model (``blocks`` in sample_models/manifest.json), the fused ops the exporter
already emitted (``native``), and per tool ``total (+done)``: fused ops of that kind in the tool's output,
and how many of them the tool added (total - native). Ops counted, in any domain:

* layernorm: LayerNormalization, SkipLayerNormalization, EmbedLayerNormalization
* rmsnorm: RMSNormalization, SimplifiedLayerNormalization, SkipSimplifiedLayerNormalization
* gelu: Gelu, FastGelu, BiasGelu, BiasFastGelu, QuickGelu
* attention: Attention, MultiHeadAttention, GroupQueryAttention, PackedAttention, PackedMultiHeadAttention
* groupnorm: GroupNormalization, GroupNorm, SkipGroupNorm

Tools: ``ours`` = trt preset, emit onnx (what TensorRT gets); ``ours-ort`` = trt preset, emit ort
(com.microsoft ops); ``ort-optimizer`` = onnxruntime.transformers.optimizer.optimize_model, every
candidate model_type of the family at opt_level 0 and 1, the best (most fused ops) kept and named;
``onnxslim`` = onnxslim.slim; ``onnxsim`` = onnxsim.simplify. Peers run in subprocesses of the peers'
python (``--peers-python``, default /work/benchvenv or /work/fusionvenv; bench/requirements-fusion.txt).
A peer failure is a table cell ``error: ...``. The last line says whether ``ours`` >= every peer on every row.

Latency. onnxruntime sessions (graph optimizations ORT_ENABLE_ALL unless ``--graph-opt``, intra/inter-op
threads 1) of the original and of each optimized model, fed the seeded inputs of ``<model>.spec.json``
(dim 0 replaced by ``--batch``); warm-up, then ``--runs`` timed runs interleaved across the variants
(one run of each per round, so drift hits all alike). Medians in ms; ``speedup`` = original / variant;
``maxdiff`` = max |output - original output| over all outputs. ``--cuda`` uses CUDAExecutionProvider with
IO binding (inputs on the GPU, outputs left there; Run synchronizes), skips the peers and the optimizer,
and takes our outputs from ``--optimized-dir`` (``<name>.onnx`` = emit onnx, ``<name>.ort.onnx`` = emit ort).

This file needs only onnx and numpy at import time (the --cuda path imports nothing from surgery/passes/
converter); our optimizer is imported lazily, only when it runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"

KINDS: dict[str, tuple[str, ...]] = {
    "layernorm": ("LayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization"),
    "rmsnorm": ("RMSNormalization", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"),
    "gelu": ("Gelu", "FastGelu", "BiasGelu", "BiasFastGelu", "QuickGelu"),
    "attention": ("Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention",
                  "PackedMultiHeadAttention"),
    "groupnorm": ("GroupNormalization", "GroupNorm", "SkipGroupNorm"),
}
OP_KIND = {op: kind for kind, ops in KINDS.items() for op in ops}

# Families benchmarked, with heads / hidden size from sample_models/README.md (passed to the ORT optimizer)
# and the ORT optimizer model types to try, first = the natural one. onnxruntime 1.32 has no "llama" type:
# gpt2 (decoder, causal mask), bert and qwen3 (RMSNorm + GQA decoder) are tried and the best is kept.
FAMILIES: dict[str, dict] = {
    "bert": {"heads": 2, "hidden": 32, "ort_types": ["bert"]},
    "gpt2": {"heads": 2, "hidden": 32, "ort_types": ["gpt2", "bert"]},
    "vit": {"heads": 2, "hidden": 32, "ort_types": ["vit", "bert"]},
    "llama": {"heads": 4, "hidden": 64, "ort_types": ["gpt2", "bert", "qwen3"]},
    "unet": {"heads": 2, "hidden": 32, "ort_types": ["unet"]},
    "keras_mha": {"heads": 2, "hidden": 32, "ort_types": ["bert", "bert_tf", "bert_keras"]},
}
ORT_OPT_LEVELS = (0, 1)
OURS, OURS_ORT, ORT_OPT, SLIM, SIM = "ours", "ours-ort", "ort-optimizer", "onnxslim", "onnxsim"
PEERS = (ORT_OPT, SLIM, SIM)
ORIGINAL = "original"


# ----------------------------------------------------------------------------------------------- helpers

def load_spec(path: Path) -> list[dict]:
    """``<model>.spec.json`` inputs (same format as converter.runtime.numerics.load_spec, inlined: no surgery import)."""
    return json.loads(path.read_text())["inputs"]


def random_feeds(specs: list[dict], seed: int = 0, batch: int | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs, identical to converter.runtime.numerics.random_feeds for the same spec and seed."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for s in specs:
        shape = tuple(s["shape"])
        if batch is not None and shape:
            shape = (batch, *shape[1:])
        dt = np.dtype(s["dtype"])
        low, high = s.get("low"), s.get("high")
        if dt.kind in "iu":
            feeds[s["name"]] = rng.integers(0 if low is None else int(low), 2 if high is None else int(high),
                                            size=shape).astype(dt)
        elif dt.kind == "b":
            feeds[s["name"]] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            feeds[s["name"]] = rng.uniform(-1.0 if low is None else float(low), 1.0 if high is None else float(high),
                                           size=shape).astype(dt)
    return feeds


def count_fused(model: onnx.ModelProto) -> dict[str, int]:
    counts = {kind: 0 for kind in KINDS}

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            kind = OP_KIND.get(node.op_type)
            if kind:
                counts[kind] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    return counts


def one_line(exc: BaseException | str) -> str:
    if isinstance(exc, BaseException):
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
    return exc.strip().splitlines()[0][:200] if exc.strip() else "failed"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def default_peers_python() -> str:
    for venv in ("/work/benchvenv", "/work/fusionvenv"):
        exe = Path(venv) / "bin" / "python"
        if exe.exists():
            return str(exe)
    return sys.executable


# ----------------------------------------------------------------------------------------------- selection

def select_models(names: str | None) -> list[dict]:
    manifest = json.loads((SAMPLES / "manifest.json").read_text())
    eligible = [e for e in manifest if e["family"] in FAMILIES]
    if not names:
        return eligible
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    by_name = {e["name"]: e for e in eligible}
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise SystemExit(f"error: not a transformer/diffusion sample model: {', '.join(unknown)} "
                         f"(known: {', '.join(by_name)})")
    return [e for e in eligible if e["name"] in wanted]  # manifest order: deterministic


# ----------------------------------------------------------------------------------------------- tools

@dataclass
class ToolResult:
    counts: dict[str, int] | None = None
    path: str | None = None
    error: str | None = None
    variant: str | None = None
    seconds: float | None = None
    tried: list[dict] = field(default_factory=list)


def run_ours(src: Path, dst: Path, emit: str) -> ToolResult:
    """In-process ``surgery optimize --preset trt --emit EMIT`` (imports our package lazily)."""
    try:
        import passes  # noqa: F401  (registers passes and presets)
        from converter.optimize import OptimizeOptions, optimize_file

        t0 = time.perf_counter()
        optimize_file(src, dst, OptimizeOptions(preset="trt", emit=emit))
        seconds = time.perf_counter() - t0
        return ToolResult(counts=count_fused(onnx.load(dst)), path=str(dst), seconds=seconds)
    except Exception as exc:  # noqa: BLE001 - reported as a cell, like a peer failure
        return ToolResult(error=one_line(exc))


def run_peer(peers_python: str, tool: str, src: Path, prefix: Path, opts: dict, timeout: float) -> ToolResult:
    argv = [peers_python, str(ROOT / "bench" / "_peers.py"), tool, str(src), str(prefix), json.dumps(opts)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return ToolResult(error=f"timed out after {timeout:.0f} s")
    except OSError as exc:
        return ToolResult(error=one_line(exc))
    seconds = time.perf_counter() - t0
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    try:
        outputs = json.loads(last)["outputs"]
    except (ValueError, KeyError):
        tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return ToolResult(error=f"exit {proc.returncode}: {tail[-1][:200] if tail else 'no output'}")
    best: ToolResult | None = None
    tried = []
    for out in outputs:
        if out["path"]:
            try:
                counts = count_fused(onnx.load(out["path"]))
            except Exception as exc:  # noqa: BLE001 - unreadable output
                out = {**out, "path": None, "error": one_line(exc)}
            else:
                tried.append({"variant": out["variant"], "counts": counts})
                if best is None or sum(counts.values()) > sum(best.counts.values()):
                    best = ToolResult(counts=counts, path=out["path"], variant=out["variant"])
                continue
        tried.append({"variant": out["variant"], "error": out["error"]})
    if best is None:
        best = ToolResult(error=tried[0]["error"] if tried else "no output")
    best.tried, best.seconds = tried, seconds
    return best


# ----------------------------------------------------------------------------------------------- latency

def make_session(path: str, provider: str, graph_opt: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[graph_opt]
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if provider == "cuda" else ["CPUExecutionProvider"]
    sess = ort.InferenceSession(path, so, providers=providers)
    if provider == "cuda" and sess.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"CUDAExecutionProvider not used by the session (got {sess.get_providers()})")
    return sess


class Runner:
    """One model variant, ready to run: ``step()`` is one timed inference; ``outputs()`` gives numpy outputs."""

    def __init__(self, path: str, feeds: dict[str, np.ndarray], provider: str, graph_opt: str) -> None:
        import onnxruntime as ort

        self.sess = make_session(path, provider, graph_opt)
        wanted = [i.name for i in self.sess.get_inputs()]
        self.feeds = {k: feeds[k] for k in wanted}
        self.names = [o.name for o in self.sess.get_outputs()]
        self.binding = None
        if provider == "cuda":
            self.binding = self.sess.io_binding()
            self._device_inputs = {k: ort.OrtValue.ortvalue_from_numpy(v, "cuda", 0) for k, v in self.feeds.items()}
            for k, v in self._device_inputs.items():
                self.binding.bind_ortvalue_input(k, v)
            for name in self.names:
                self.binding.bind_output(name, "cuda", 0)

    def step(self) -> None:
        if self.binding is not None:
            self.sess.run_with_iobinding(self.binding)  # synchronizes the CUDA stream before returning
        else:
            self.sess.run(self.names, self.feeds)

    def outputs(self) -> list[np.ndarray]:
        if self.binding is not None:
            self.step()
            return [np.asarray(v) for v in self.binding.copy_outputs_to_cpu()]
        return list(self.sess.run(self.names, self.feeds))


def max_abs_diff(ref: list[np.ndarray], cand: list[np.ndarray]) -> float:
    if len(ref) != len(cand):
        return float("nan")
    worst = 0.0
    for a, b in zip(ref, cand):
        if a.shape != b.shape:
            return float("nan")
        if a.size:
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
    return worst


def measure_latency(paths: dict[str, str], feeds: dict[str, np.ndarray], provider: str, graph_opt: str,
                    warmup: int, runs: int) -> dict[str, dict]:
    """Median ms per variant (runs interleaved round-robin), speedup vs the original, max abs output diff."""
    runners: dict[str, Runner] = {}
    result: dict[str, dict] = {}
    for name, path in paths.items():
        try:
            runners[name] = Runner(path, feeds, provider, graph_opt)
        except Exception as exc:  # noqa: BLE001
            if provider == "cuda" and name == ORIGINAL:
                raise
            result[name] = {"error": one_line(exc)}
    ref = runners[ORIGINAL].outputs() if ORIGINAL in runners else None
    for name, r in runners.items():
        try:
            out = r.outputs()
        except Exception as exc:  # noqa: BLE001
            result[name] = {"error": one_line(exc)}
            continue
        result[name] = {"maxdiff": max_abs_diff(ref, out) if ref is not None else float("nan")}
    live = {n: r for n, r in runners.items() if "error" not in result[n]}
    for _ in range(warmup):
        for r in live.values():
            r.step()
    times: dict[str, list[float]] = {n: [] for n in live}
    clock = time.perf_counter
    for _ in range(runs):
        for n, r in live.items():
            t0 = clock()
            r.step()
            times[n].append(clock() - t0)
    for n, ts in times.items():
        result[n]["median_ms"] = statistics.median(ts) * 1e3
    base = result.get(ORIGINAL, {}).get("median_ms")
    for n in live:
        result[n]["speedup"] = base / result[n]["median_ms"] if base else float("nan")
    return {n: result[n] for n in paths}


# ----------------------------------------------------------------------------------------------- printing

def fmt_cell(native: int, res: ToolResult | None, kind: str, width: int = 40) -> str:
    if res is None:
        return "-"
    if res.error:
        text = f"error: {res.error}"
        return text if len(text) <= width else text[: width - 1] + "…"
    total = res.counts[kind]
    return f"{total} ({total - native:+d})"


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def fusion_rows(models: list[dict], ours_tool: str = OURS) -> tuple[list[list[str]], list[str]]:
    """Table rows, and the rows where ``ours_tool`` fused fewer ops of the kind than some peer."""
    rows, violations = [], []
    for m in models:
        for kind in KINDS:
            cells = [m["tools"].get(t) for t in (OURS, OURS_ORT, *PEERS)]
            totals = [c.counts[kind] for c in cells if c is not None and c.counts]
            if m["blocks"].get(kind, 0) == 0 and m["native"][kind] == 0 and not any(totals):
                continue
            rows.append([m["name"], kind, str(m["blocks"].get(kind, 0)), str(m["native"][kind]),
                         *(fmt_cell(m["native"][kind], c, kind) for c in cells)])
            ours = m["tools"].get(ours_tool)
            for peer in PEERS:
                p = m["tools"].get(peer)
                if p is None or p.counts is None:
                    continue
                if ours is None or ours.counts is None:
                    violations.append(f"{m['name']}/{kind}: {ours_tool} failed ({ours.error if ours else 'not run'}), "
                                      f"{peer} {p.counts[kind]}")
                elif ours.counts[kind] < p.counts[kind]:
                    violations.append(f"{m['name']}/{kind}: {ours_tool} {ours.counts[kind]} < {peer} {p.counts[kind]}")
    return rows, violations


def fmt_ms(d: dict | None) -> tuple[str, str, str]:
    if d is None:
        return "-", "-", "-"
    if "error" in d:
        return "error (below)", "-", "-"
    return f"{d['median_ms']:.3f}", f"{d['speedup']:.2f}x", f"{d['maxdiff']:.1e}"


# ----------------------------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", help="comma-separated sample names (default: every bert/gpt2/vit/llama/unet/keras_mha export)")
    p.add_argument("--runs", type=int, default=200, help="timed runs per variant (median reported)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up runs per variant (default 10 CPU, 20 CUDA)")
    p.add_argument("--json", type=Path, help="write all results to this file")
    p.add_argument("--skip-peers", action="store_true", help="do not run onnxruntime optimizer / onnxslim / onnxsim")
    p.add_argument("--skip-latency", action="store_true", help="fusion table only")
    p.add_argument("--cuda", action="store_true", help="latency on CUDAExecutionProvider (implies --skip-peers; needs --optimized-dir)")
    p.add_argument("--batch", type=int, default=None, help="replace dim 0 of every spec input (default: the spec's)")
    p.add_argument("--graph-opt", choices=("all", "extended", "basic", "disable"), default="all",
                   help="onnxruntime graph optimization level of the timed sessions (default all)")
    p.add_argument("--optimized-dir", type=Path, help="take our outputs from DIR/<name>.onnx and DIR/<name>.ort.onnx "
                   "instead of running the optimizer")
    p.add_argument("--export-optimized", type=Path, metavar="DIR", help="write our outputs to DIR and stop")
    p.add_argument("--peers-python", default=default_peers_python(), help="python with the peers installed")
    p.add_argument("--peer-timeout", type=float, default=600.0)
    p.add_argument("--work", type=Path, help="keep every output model here (default: a temporary folder)")
    args = p.parse_args(argv)
    if args.warmup is None:
        args.warmup = 20 if args.cuda else 10
    if args.cuda:
        args.skip_peers = True
        if args.optimized_dir is None:
            p.error("--cuda needs --optimized-dir DIR (make it on CPU: bench/fusion.py --export-optimized DIR)")
    if args.runs < 1 or (args.batch is not None and args.batch < 1):
        p.error("--runs and --batch must be >= 1")
    return args


def export_optimized(models: list[dict], out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for m in models:
        src = SAMPLES / m["file"]
        for emit, dst in (("onnx", out / f"{m['name']}.onnx"), ("ort", out / f"{m['name']}.ort.onnx")):
            res = run_ours(src, dst, emit)
            status = f"error: {res.error}" if res.error else f"{sum(res.counts.values())} fused ops, {res.seconds:.2f} s"
            failed += bool(res.error)
            print(f"{m['name']:<14} emit {emit:<4} -> {dst}  {status}")
    return 1 if failed else 0


def init_cuda() -> str:
    """Load the CUDA libraries (torch first, else onnxruntime.preload_dlls) and check the provider."""
    how = "none"
    try:
        import torch  # noqa: F401  (loads the CUDA / cuDNN libraries the CUDA provider links against)
        how = f"torch {torch.__version__}"
    except ImportError:
        pass
    import onnxruntime as ort

    if how == "none" and hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
            how = "onnxruntime.preload_dlls()"
        except Exception:  # noqa: BLE001
            pass
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise SystemExit(f"error: CUDAExecutionProvider unavailable in onnxruntime {ort.__version__} "
                         f"(providers: {ort.get_available_providers()}); install onnxruntime-gpu")
    return how


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    models = select_models(args.models)
    if args.export_optimized:
        return export_optimized(models, args.export_optimized)

    provider = "cuda" if args.cuda else "cpu"
    cuda_libs = init_cuda() if args.cuda else None
    import onnxruntime as ort

    gpu = ""
    if args.cuda:
        try:
            import torch

            gpu = f", GPU {torch.cuda.get_device_name(0)}"
        except Exception:  # noqa: BLE001
            pass
    print(f"machine: {machine()}{gpu}")
    print(f"onnxruntime {ort.__version__} ({provider}; graph optimizations {args.graph_opt}; 1 thread), onnx {onnx.__version__}"
          + (f", CUDA libs via {cuda_libs}" if cuda_libs else "")
          + (f", peers from {args.peers_python}" if not args.skip_peers else ", peers skipped"))
    print(f"latency: warm-up {args.warmup}, median of {args.runs} interleaved runs, batch "
          f"{args.batch if args.batch else 'as in spec'}")
    print()

    tmp = None
    if args.work:
        work = args.work
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="fusion-bench-")
        work = Path(tmp)
    results = []
    try:
        for m in models:
            name, fam = m["name"], FAMILIES[m["family"]]
            src = SAMPLES / m["file"]
            print(f"[{name}] ...", file=sys.stderr, flush=True)
            entry = {"name": name, "family": m["family"], "exporter": m["exporter"], "blocks": m["blocks"],
                     "native": count_fused(onnx.load(src)), "tools": {}}
            # ours
            for tool, emit, fname in ((OURS, "onnx", f"{name}.onnx"), (OURS_ORT, "ort", f"{name}.ort.onnx")):
                if args.optimized_dir:
                    path = args.optimized_dir / fname
                    entry["tools"][tool] = (ToolResult(counts=count_fused(onnx.load(path)), path=str(path))
                                            if path.is_file() else ToolResult(error=f"missing {path}"))
                else:
                    entry["tools"][tool] = run_ours(src, work / f"{name}.{tool}.onnx", emit)
            # peers
            if not args.skip_peers:
                cands = [[t, lvl] for lvl in ORT_OPT_LEVELS for t in fam["ort_types"]]
                jobs = {ORT_OPT: ("ort", {"candidates": cands, "num_heads": fam["heads"], "hidden_size": fam["hidden"]}),
                        SLIM: ("onnxslim", {}), SIM: ("onnxsim", {})}
                for tool, (peer, opts) in jobs.items():
                    entry["tools"][tool] = run_peer(args.peers_python, peer, src, work / f"{name}.{tool}", opts,
                                                    args.peer_timeout)
            # latency
            if not args.skip_latency:
                paths = {ORIGINAL: str(src)}
                for tool in (OURS, OURS_ORT, ORT_OPT):
                    res = entry["tools"].get(tool)
                    if res is not None and res.path:
                        paths[tool] = res.path
                feeds = random_feeds(load_spec(src.with_suffix(".spec.json")), seed=0, batch=args.batch)
                entry["latency"] = measure_latency(paths, feeds, provider, args.graph_opt, args.warmup, args.runs)
            results.append(entry)

        # ---- fusion table
        if not args.cuda:
            print("Fused ops per kind: `total (+done)` = fused ops in the output (done = total - native)")
            header = ["model", "kind", "blocks", "native", OURS, OURS_ORT, ORT_OPT, SLIM, SIM]
            rows, violations = fusion_rows(results)
            print_table(rows, header)
            if not args.skip_peers:
                print()
                print("ort-optimizer variant kept (model_type-opt_level; most fused ops):")
                for e in results:
                    r = e["tools"][ORT_OPT]
                    tried = ", ".join(f"{t['variant']}={sum(t['counts'].values())}" if "counts" in t
                                      else f"{t['variant']}=error({t['error'][:60]})" for t in r.tried)
                    print(f"  {e['name']}: {r.variant or 'none'}  [{tried}]")
            errors = [(e["name"], t, r.error) for e in results for t, r in e["tools"].items() if r.error]
            if errors:
                print()
                print("errors:")
                for n, t, err in errors:
                    print(f"  {n} / {t}: error: {err}")
            print()
            if args.skip_peers:
                print("ours >= every peer on every row: not checked (peers skipped)")
            else:
                for tool in (OURS, OURS_ORT):
                    bad = violations if tool == OURS else fusion_rows(results, tool)[1]
                    print(f"{tool} >= every peer on every row: "
                          + (f"NO, {len(bad)} violation(s): " + "; ".join(bad) if bad else "YES (no violations)"))
            print()

        # ---- latency table
        if not args.skip_latency:
            variants = [OURS, OURS_ORT] + ([] if args.skip_peers else [ORT_OPT])
            print(f"onnxruntime {provider.upper()} latency, median ms (speedup = original / variant; "
                  f"maxdiff = max |output - original output|)")
            header = ["model", "original ms"]
            for v in variants:
                header += [f"{v} ms", "speedup", "maxdiff"]
            rows = []
            for e in results:
                lat = e["latency"]
                row = [e["name"], fmt_ms(lat.get(ORIGINAL))[0]]
                for v in variants:
                    row += list(fmt_ms(lat.get(v)))
                rows.append(row)
            print_table(rows, header)
            speedups = {v: [e["latency"][v]["speedup"] for e in results
                            if v in e["latency"] and "speedup" in e["latency"][v]] for v in variants}
            for e in results:
                for v, d in e["latency"].items():
                    if "error" in d:
                        print(f"  {e['name']} / {v}: error: {d['error']}")
            print("median speedup over models: " + ", ".join(
                f"{v} {statistics.median(s):.2f}x" for v, s in speedups.items() if s))

        if args.json:
            def enc(o):
                if isinstance(o, ToolResult):
                    return {k: v for k, v in o.__dict__.items()}
                raise TypeError(type(o))
            meta = {"machine": machine(), "onnxruntime": ort.__version__, "provider": provider,
                    "graph_opt": args.graph_opt, "runs": args.runs, "warmup": args.warmup, "batch": args.batch}
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"meta": meta, "models": results}, indent=1, default=enc,
                                            sort_keys=False) + "\n")
            print(f"wrote {args.json}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
