"""``bench/pipeline.py --real DIR``: real-size exports against their peers and the load+save floor.

For each ``<name>.onnx`` in DIR (written by ``bench/real_exports.py``, with ``<name>.spec.json`` and
``<name>.bench.json`` beside it) every tool runs in its own child process, the tools interleaved run by run:
the floor (``onnx.load`` + ``onnx.save`` in the input's storage: embedded, or external data in
``<name>.onnx.data``), ``surgery optimize --preset trt``,
onnxsim, onnxslim, the onnxruntime transformers optimizer (``model_type``, ``num_heads`` and ``hidden_size``
from the sidecar, opt_level 0) and ``polygraphy surgeon sanitize --fold-constants``. Recorded: wall time
(median over runs), peak RSS (max over runs), node count, fused-op counts, and ORT-equal: onnxruntime CPU
outputs of the first run's model against the original's on the spec's inputs (``bench/_ort_equal.py``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline import FLOOR, run_child, tools

HERE = Path(__file__).resolve().parent
TIME_TARGET = RSS_TARGET = 1.5   # x floor wall time; x model file size


@dataclass
class RealRun:
    model: str
    tool: str
    seconds: list[float] = field(default_factory=list)
    rss_mb: float = 0.0
    nodes: int = 0
    fusions: dict[str, int] = field(default_factory=dict)
    output_mb: float = 0.0
    ort_equal: bool | None = None
    max_abs: float = float("nan")
    error: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")


def describe_in_child(path: Path) -> tuple[int, dict[str, int]]:
    """``pipeline.describe`` in a child: the parent must never hold a model, since a child's ``ru_maxrss``
    starts from the parent's high-water mark (Linux carries it over the fork/exec)."""
    code = f"import json, sys; sys.path.insert(0, {str(HERE)!r}); from pipeline import describe; " \
           "print(json.dumps(describe(sys.argv[1])))"
    nodes, fusions = json.loads(subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                                               text=True, check=True).stdout)
    return nodes, fusions


def ort_equal(args: argparse.Namespace, model: Path, spec: Path, ref: Path) -> dict:
    """Run ``_ort_equal.py`` in the peers' python; its last stdout line is the JSON verdict."""
    proc = subprocess.run([args.peers_python, str(HERE / "_ort_equal.py"), str(model), str(spec), str(ref)],
                          capture_output=True, text=True, timeout=args.timeout)
    lines = proc.stdout.strip().splitlines()
    if not lines:
        return {"ok": False, "max_abs": float("nan"), "error": f"exit {proc.returncode}: {proc.stderr[-200:]}"}
    return json.loads(lines[-1])


def model_files(path: Path) -> list[Path]:
    """The model file and its external data files (named ``<model file name>...``, as the exports write them)."""
    return [p for p in path.parent.iterdir() if p.name.startswith(path.name)]


def run_once(args, run: RealRun, argv_of, src: Path, spec: Path, ref: Path, work: Path, first: bool) -> None:
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    dst = out / src.name
    log = work / "last.log"
    external = len(model_files(src)) > 1
    code, seconds, rss = run_child(argv_of(str(src), str(dst), external), log, args.timeout)
    run.rss_mb = max(run.rss_mb, rss)
    if code != 0 or not dst.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        run.error = f"exit {code}: {tail[0][:160]}"
    else:
        run.seconds.append(seconds)
        if first:
            run.nodes, run.fusions = describe_in_child(dst)
            run.output_mb = sum(p.stat().st_size for p in out.iterdir()) / 2**20
            verdict = ort_equal(args, dst, spec, ref)
            run.ort_equal, run.max_abs, run.error = verdict["ok"], verdict["max_abs"], verdict["error"]
    shutil.rmtree(out, ignore_errors=True)


def target_line(runs: list[RealRun], size_mb: float) -> str:
    floor = next(r for r in runs if r.tool == FLOOR)
    ours = next(r for r in runs if r.tool.startswith("surgery"))
    if not ours.seconds or not floor.seconds:
        return "targets: not measured (surgery or the floor failed)"
    peers = [r for r in runs if r is not floor and r is not ours]
    slower = [r.tool for r in peers if r.seconds and r.median <= ours.median]
    time_ok, rss_ok = ours.median <= TIME_TARGET * floor.median, ours.rss_mb <= RSS_TARGET * size_mb
    failed = [r.tool for r in peers if not r.seconds]
    return (f"targets: time {ours.median / floor.median:.2f}x floor (<= {TIME_TARGET}) {'ok' if time_ok else 'MISSED'}; "
            f"peak RSS {ours.rss_mb / size_mb:.2f}x file (<= {RSS_TARGET}) {'ok' if rss_ok else 'MISSED'}; "
            f"faster than every peer: {'ok' if not slower else 'MISSED (' + ', '.join(slower) + ')'}"
            + (f" [failed peers: {', '.join(failed)}]" if failed else ""))


def print_table(name: str, runs: list[RealRun], size_mb: float, storage: str, nodes_before: int, n_runs: int) -> None:
    floor = next(r for r in runs if r.tool == FLOOR)
    print(f"\n## {name}: {size_mb:.0f} MiB {storage}, {nodes_before} nodes; median of {n_runs}")
    print(f"{'tool':<22} {'time s':>7} {'x floor':>7} {'RSS MB':>7} {'x file':>6} {'nodes':>6} "
          f"{'ORT-equal (max abs)':>20}  fusions")
    for r in runs:
        if not r.seconds:
            print(f"{r.tool:<22} {'FAILED':>7}  RSS {r.rss_mb:.0f} MB  {r.error}")
            continue
        tx = f"{r.median / floor.median:.2f}" if floor.seconds else "-"
        equal = f"{'yes' if r.ort_equal else 'NO'} ({r.max_abs:.1e})"
        fus = ", ".join(f"{k}={v}" for k, v in r.fusions.items()) or "-"
        print(f"{r.tool:<22} {r.median:>7.2f} {tx:>7} {r.rss_mb:>7.0f} {r.rss_mb / size_mb:>6.2f} {r.nodes:>6} "
              f"{equal:>20}  {fus}" + (f"  [{r.error}]" if r.error else ""))
    print(target_line(runs, size_mb), flush=True)


def bench_one(args, src: Path, preset: str, work: Path, runs_per_tool: int) -> list[RealRun]:
    spec = src.with_name(src.stem + ".spec.json")
    side = json.loads(src.with_name(src.stem + ".bench.json").read_text())
    ref = work / f"{src.stem}.ref.npz"
    ref.unlink(missing_ok=True)
    verdict = ort_equal(args, src, spec, ref)
    if verdict["error"]:
        raise SystemExit(f"{src.name}: onnxruntime cannot run the original: {verdict['error']}")
    table = tools(args, preset, side["hidden_size"], side["num_heads"], side["ort_model_type"])
    runs = [RealRun(src.stem, name) for name in table]
    for i in range(runs_per_tool):
        for run in runs:
            if not run.error or run.seconds:
                run_once(args, run, table[run.tool], src, spec, ref, work, first=i == 0)
        print(f"  run {i + 1}: " + ", ".join(f"{r.tool} {r.seconds[-1]:.1f}s" if len(r.seconds) > i
                                             else f"{r.tool} failed" for r in runs), flush=True)
    files = model_files(src)
    size_mb = sum(p.stat().st_size for p in files) / 2**20
    nodes_before, _ = describe_in_child(src)
    print_table(f"{src.stem} ({side['exporter']}, opset {side['opset']})", runs, size_mb,
                "external data" if len(files) > 1 else "embedded", nodes_before, runs_per_tool)
    ref.unlink(missing_ok=True)
    return runs


def bench_real(args, preset: str, work: Path) -> list[dict]:
    """Every export in ``args.real`` (or the ``--only`` stems); returns the JSON records."""
    models = sorted(args.real.glob("*.onnx"))
    if args.only:
        models = [m for m in models if m.stem in args.only.split(",")]
    if not models:
        raise SystemExit(f"no exports in {args.real}")
    records = []
    for src in models:
        files = model_files(src)
        size = sum(p.stat().st_size for p in files)
        runs = args.runs or (1 if size > 2**30 * 0.9 else 3)
        for r in bench_one(args, src, preset, work, runs):
            records.append(asdict(r) | {"median": r.median, "file_mb": size / 2**20, "external": len(files) > 1})
    return records
