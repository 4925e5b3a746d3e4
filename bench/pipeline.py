"""Benchmark ``surgery optimize`` against its peers on large generated BERT models and the sample exports.

Usage::

    .venv/bin/python bench/pipeline.py                       # 400M and 2.5G models, then the samples
    .venv/bin/python bench/pipeline.py --sizes 400M --runs 3 --no-samples
    .venv/bin/python bench/pipeline.py --skip-peers --keep /tmp/bench
    .venv/bin/python bench/pipeline.py --real /tmp/real --runs 3 --json real.json   # real-size exports

``--real DIR`` benchmarks the exports of ``bench/real_exports.py`` instead (see ``bench/_real.py``).

Every tool runs in its own subprocess; its wall time and peak RSS (``ru_maxrss`` from ``os.wait4``,
which covers the child and any descendants it waited for) are recorded. The floor is a plain
``onnx.load`` + ``onnx.save`` with external data of the same model. Peers run from a separate venv
(``bench/requirements.txt``, default ``/work/benchvenv``). Generated models live in a temporary folder
unless ``--keep`` is given.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_bert import build, config_for_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FUSED_OPS = ("LayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization", "Gelu", "FastGelu",
             "BiasGelu", "Attention", "MultiHeadAttention", "RMSNormalization", "SimplifiedLayerNormalization",
             "GroupNormalization")
FLOOR = "floor(load+save)"
FLOOR_CODE = ("import onnx, os, sys; m = onnx.load(sys.argv[1]); "
              "onnx.save_model(m, sys.argv[2], save_as_external_data=sys.argv[3] == '1', all_tensors_to_one_file=True, "
              "location=os.path.basename(sys.argv[2]) + '.data')")


@dataclass
class Run:
    tool: str
    model: str
    ok: bool
    seconds: list[float] = field(default_factory=list)
    rss_mb: float = 0.0
    nodes: int = 0
    fusions: dict[str, int] = field(default_factory=dict)
    error: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")


def parse_size(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    text = text.strip().upper().rstrip("B")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def tools(args: argparse.Namespace, preset: str, hidden: int | None, heads: int | None,
          model_type: str = "bert") -> dict[str, callable]:
    """tool name -> function(src, dst, external) returning argv."""
    peer_bin = Path(args.peers_python).parent

    def script(name: str, module: str) -> list[str]:
        exe = peer_bin / name
        return [str(exe)] if exe.exists() else [args.peers_python, "-m", module]

    def ort(src, dst, ext):
        argv = [args.peers_python, "-m", "onnxruntime.transformers.optimizer", "--input", src, "--output", dst,
                "--model_type", model_type, "--opt_level", "0", "--num_heads", str(heads or 0), "--hidden_size", str(hidden or 0)]
        return argv + (["--use_external_data_format"] if ext else [])

    table = {
        FLOOR: lambda src, dst, ext: [sys.executable, "-c", FLOOR_CODE, src, dst, "1" if ext else "0"],
        f"surgery --preset {preset}": lambda src, dst, ext: [args.surgery, "optimize", src, "-o", dst, "--preset", preset]
        + (["--external-data"] if ext else []),
    }
    if not args.skip_peers:
        table.update({
            "onnxsim": lambda src, dst, ext: script("onnxsim", "onnxsim") + [src, dst]
            + (["--save-as-external-data"] if ext else []),
            "onnxslim": lambda src, dst, ext: script("onnxslim", "onnxslim") + [src, dst]
            + (["--save-as-external-data"] if ext else []),
            "ort-transformers": ort,
            "polygraphy sanitize": lambda src, dst, ext: script("polygraphy", "polygraphy") + [
                "surgeon", "sanitize", src, "--fold-constants", "-o", dst]
            + (["--save-external-data", Path(dst).name + ".data"] if ext else []),
        })
    return table


def run_child(argv: list[str], log: Path, timeout: float) -> tuple[int, float, float]:
    """Run ``argv``; return (exit code, seconds, peak RSS in MB of the child and its waited-for descendants)."""
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, seconds, usage.ru_maxrss / 1024


def describe(path: Path) -> tuple[int, dict[str, int]]:
    model = onnx.load_model(str(path), load_external_data=False)
    ops = Counter(n.op_type for n in model.graph.node)
    fusions = {op: ops[op] for op in FUSED_OPS if ops[op]}
    ms = sum(1 for n in model.graph.node if n.domain == "com.microsoft")
    if ms:
        fusions["com.microsoft"] = ms
    return len(model.graph.node), fusions


def measure(name: str, argv_of, src: Path, work: Path, runs: int, ext: bool, timeout: float) -> Run:
    run = Run(name, src.name, ok=True)
    for i in range(runs):
        out_dir = work / f"out-{abs(hash(name)) % 10**8}"
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
        dst = out_dir / src.name
        code, seconds, rss = run_child(argv_of(str(src), str(dst), ext), work / "last.log", timeout)
        if code != 0 or not dst.exists():
            tail = (work / "last.log").read_text(errors="replace").strip().splitlines()[-1:] or [f"exit {code}"]
            run.ok, run.error = False, f"exit {code}: {tail[0][:160]}"
            run.rss_mb = max(run.rss_mb, rss)
            shutil.rmtree(out_dir, ignore_errors=True)
            return run
        run.seconds.append(seconds)
        run.rss_mb = max(run.rss_mb, rss)
        if i == 0:
            run.nodes, run.fusions = describe(dst)
        shutil.rmtree(out_dir, ignore_errors=True)
    return run


def print_table(title: str, runs: list[Run], nodes_before: int) -> None:
    floor = next((r for r in runs if r.tool == FLOOR and r.ok), None)
    print(f"\n## {title} (nodes before: {nodes_before})")
    print(f"{'tool':<30} {'time s':>9} {'x floor':>8} {'peak RSS MB':>12} {'x floor':>8} {'nodes':>7}  fusions")
    for r in runs:
        if not r.ok:
            print(f"{r.tool:<30} {'FAILED':>9}  rss {r.rss_mb:.0f} MB  {r.error}")
            continue
        tx = f"{r.median / floor.median:.2f}" if floor else "-"
        rx = f"{r.rss_mb / floor.rss_mb:.2f}" if floor else "-"
        fus = ", ".join(f"{k}={v}" for k, v in r.fusions.items()) or "-"
        print(f"{r.tool:<30} {r.median:>9.2f} {tx:>8} {r.rss_mb:>12.0f} {rx:>8} {r.nodes:>7}  {fus}")
    ours = next((r for r in runs if r.tool.startswith("surgery") and r.ok), None)
    if ours:
        peers = [r for r in runs if r.ok and r.tool != FLOOR and r is not ours]
        ratios = ", ".join(f"{r.tool}: time {ours.median / r.median:.2f}x rss {ours.rss_mb / r.rss_mb:.2f}x"
                           for r in peers)
        print(f"surgery vs peers (<1 = surgery better): {ratios or '-'}")


def bench_big(args, sizes: list[str], work: Path, preset: str, results: list[Run]) -> None:
    for size in sizes:
        target = parse_size(size)
        cfg = config_for_bytes(target)
        src = work / f"bert-{size}" / "model.onnx"
        src.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        written = build(src, cfg, seed=0)
        nodes_before = len(onnx.load_model(str(src), load_external_data=False).graph.node)
        largest = 4 * cfg.vocab * cfg.hidden
        print(f"\ngenerated {src} ({cfg.layers} layers, hidden {cfg.hidden}, {written / 2**30:.2f} GiB weights, "
              f"largest tensor {largest / 2**20:.0f} MiB) in {time.perf_counter() - start:.1f}s", flush=True)
        runs = args.runs or (3 if target < 2**30 else 1)
        size_runs = []
        for name, argv_of in tools(args, preset, cfg.hidden, cfg.heads).items():
            r = measure(name, argv_of, src, work, runs, True, args.timeout)
            print(f"  {name}: {'ok' if r.ok else r.error} {r.median:.2f}s {r.rss_mb:.0f} MB", flush=True)
            size_runs.append(r)
        results.extend(size_runs)
        print_table(f"BERT {size} ({written / 2**30:.2f} GiB, median of {runs})", size_runs, nodes_before)
        ours = next((r for r in size_runs if r.tool.startswith("surgery")), None)
        floor = next((r for r in size_runs if r.tool == FLOOR), None)
        peers = [r for r in size_runs if r.ok and r is not ours and r is not floor]
        if ours and ours.ok and floor and floor.ok and written >= 2.5e9:
            budget = 512 + largest / 2**20
            print(f"targets: time {ours.median / floor.median:.2f}x floor (<= 1.5), "
                  f"peak RSS {ours.rss_mb:.0f} MB vs 0.5 GB + largest tensor = {budget:.0f} MB")
        elif ours and ours.ok and peers:
            best = min(peers, key=lambda r: r.median)
            print(f"target: faster than the fastest peer ({best.tool}): {ours.median / best.median:.2f}x its time")
        if not args.keep:
            shutil.rmtree(src.parent, ignore_errors=True)


def bench_samples(args, work: Path, preset: str, results: list[Run]) -> None:
    models = sorted(ROOT.glob("sample_models/*.onnx"))
    names = list(tools(args, preset, None, None))
    print(f"\n## sample exports: median seconds of {args.sample_runs} runs per tool")
    print(f"{'model':<20} " + " ".join(f"{n[:14]:>14}" for n in names) + "  fastest-peer")
    wins, ratios = 0, []
    for src in models:
        row = [measure(n, f, src, work, args.sample_runs, False, args.timeout)
               for n, f in tools(args, preset, None, None).items()]
        results.extend(row)
        cells = " ".join(f"{r.median:>14.2f}" if r.ok else f"{'fail':>14}" for r in row)
        peers = [r for r in row if r.ok and r.tool != FLOOR and not r.tool.startswith("surgery")]
        ours = next(r for r in row if r.tool.startswith("surgery"))
        best = min(peers, key=lambda r: r.median, default=None)
        note = ""
        if best and ours.ok:
            ratios.append(ours.median / best.median)
            wins += ours.median < best.median
            note = f"{best.tool} ({ours.median / best.median:.2f}x)"
        print(f"{src.stem:<20} {cells}  {note}", flush=True)
    if ratios:
        geo = statistics.geometric_mean(ratios)
        print(f"surgery faster than the fastest peer on {wins}/{len(ratios)} samples; "
              f"geometric mean time ratio to the fastest peer {geo:.2f}x")


def main(argv: list[str] | None = None) -> int:
    default_peers = "/work/benchvenv/bin/python" if Path("/work/benchvenv/bin/python").exists() else sys.executable
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="400M,2.5G", help="generated model sizes, comma-separated ('' for none)")
    parser.add_argument("--skip-peers", action="store_true", help="only the floor and surgery")
    parser.add_argument("--runs", type=int, default=0, help="runs per tool (default 3; 1 for generated models of 1 GiB and up, "
                        "and for --real exports of 0.9 GiB and up)")
    parser.add_argument("--sample-runs", type=int, default=5, help="runs per tool on each sample export")
    parser.add_argument("--no-samples", action="store_true", help="skip sample_models/*.onnx")
    parser.add_argument("--keep", type=Path, help="generate into (and keep) this folder instead of a temporary one")
    parser.add_argument("--peers-python", default=default_peers, help="python of the venv holding the peers")
    parser.add_argument("--surgery", default=str(Path(sys.executable).parent / "surgery"), help="surgery executable")
    parser.add_argument("--preset", default="trt", help="surgery preset (falls back to 'default' if unknown)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before a tool run is killed")
    parser.add_argument("--json", type=Path, help="also write all measurements here")
    parser.add_argument("--real", type=Path, help="benchmark the exports in this folder (bench/real_exports.py) "
                        "instead of generated models and samples")
    parser.add_argument("--only", help="with --real: comma-separated export names (file stems)")
    args = parser.parse_args(argv)

    listing = subprocess.run([args.surgery, "list-passes", "--presets"], capture_output=True, text=True).stdout
    preset = args.preset if f"preset {args.preset}:" in listing else "default"
    if preset != args.preset:
        print(f"note: preset '{args.preset}' is not registered; using 'default'")
    print(f"machine: {os.cpu_count()} CPU cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM; "
          f"peers from {args.peers_python}")
    if args.real:
        from _real import bench_real

        work = Path(tempfile.mkdtemp(prefix="surgery-real-"))
        try:
            records = bench_real(args, preset, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if args.json:
            args.json.write_text(json.dumps(records, indent=1))
        return 0
    results: list[Run] = []
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="surgery-bench-"))
    try:
        sizes = [s for s in args.sizes.split(",") if s.strip()]
        bench_big(args, sizes, work, preset, results)
        if not args.no_samples:
            bench_samples(args, work, preset, results)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"median": r.median} for r in results], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
