"""Real-size exports: ``surgery optimize`` against the load+save floor, embedded and external weights.

Usage::

    .venv/bin/python bench/real_size.py                     # BERT-base (~420 MiB) embedded + external, 3 runs
    .venv/bin/python bench/real_size.py --models big        # a ~2.2 GB BERT-like model, external data, 1 run
    .venv/bin/python bench/real_size.py --models base-embedded --runs 5 --keep /tmp/rs

Models are generated without torch (``make_bert``: TorchScript-style BERT, seeded random weights):
``base-embedded`` (12 layers, hidden 768, weights inside the protobuf), ``base-external`` (the same
with ``model.onnx.data``) and ``big`` (hidden 1024, ~2.2 GB of external data). Each tool runs in
its own process, alternating floor and surgery; wall time and peak RSS (``ru_maxrss`` from
``os.wait4``) are recorded and the medians compared with the floor of the same run: ``onnx.load``
then ``onnx.save`` in the input's storage (embedded stays embedded, external stays external).
The storage of surgery's output is checked too: external data in, external data out.
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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_bert import BertConfig, build, config_for_bytes  # noqa: E402
from pipeline import FLOOR_CODE, run_child  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"base-embedded": (1.5, None), "base-external": (1.5, None), "big": (1.2, 600)}  # x floor, MB


@dataclass
class Result:
    model: str
    tool: str
    seconds: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def time(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def rss(self) -> float:
        return statistics.median(self.rss_mb) if self.rss_mb else float("nan")


def generate(kind: str, folder: Path) -> tuple[Path, bool]:
    """Write model ``kind`` into ``folder``; return its path and whether it uses external data."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    if kind == "big":
        build(path, config_for_bytes(int(2.2e9)), seed=0)
        return path, True
    build(path, BertConfig(layers=12, hidden=768, heads=12), seed=0)
    if kind == "base-embedded":
        model = onnx.load(str(path))
        path.with_name("model.onnx.data").unlink()
        onnx.save(model, str(path))
        return path, False
    return path, True


def generate_in_child(kind: str, folder: Path, python: str) -> tuple[Path, bool]:
    """``generate`` in its own process: a parent that once held the model would lend its peak to every
    child's ``ru_maxrss`` (Linux keeps the pre-exec high-water mark of a forked child)."""
    subprocess.run([python, __file__, "--generate", kind, str(folder)], check=True)
    return folder / "model.onnx", kind != "base-embedded"


def model_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.iterdir() if p.name.startswith(path.name))


def argv_for(tool: str, src: Path, dst: Path, external: bool, python: str) -> list[str]:
    if tool == "floor":
        return [python, "-c", FLOOR_CODE, str(src), str(dst), "1" if external else "0"]
    return [python, "-m", "converter.cli", "optimize", str(src), "-o", str(dst), "--preset", tool.split()[-1]]


def run_once(result: Result, src: Path, external: bool, work: Path, python: str, timeout: float) -> None:
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    dst = out / "model.onnx"
    log = work / f"{result.tool.replace(' ', '_')}.log"
    code, seconds, rss = run_child(argv_for(result.tool, src, dst, external, python), log, timeout)
    if code != 0 or not dst.exists():
        lines = log.read_text(errors="replace").strip().splitlines()
        result.error = f"exit {code}: {(lines or [''])[-1][:200]}"
    else:
        result.seconds.append(seconds)
        result.rss_mb.append(rss)
        result.outputs = sorted(f"{p.name} ({p.stat().st_size / 2**20:.0f} MiB)" for p in out.iterdir())
    shutil.rmtree(out, ignore_errors=True)


def bench(kind: str, work: Path, runs: int, preset: str, python: str, timeout: float) -> list[Result]:
    start = time.perf_counter()
    src, external = generate_in_child(kind, work / kind, python)
    size = model_bytes(src)
    print(f"\n## {kind}: {size / 2**20:.0f} MiB ({'external data' if external else 'embedded'}), "
          f"generated in {time.perf_counter() - start:.0f}s; median of {runs}", flush=True)
    floor, ours = Result(kind, "floor"), Result(kind, f"surgery --preset {preset}")
    for _ in range(runs):
        for r in (floor, ours):
            if not r.error:
                run_once(r, src, external, work, python, timeout)
                print(f"  {r.tool}: {r.seconds[-1] if r.seconds else float('nan'):.2f}s "
                      f"{r.rss_mb[-1] if r.rss_mb else float('nan'):.0f} MB {r.error}", flush=True)
    print(f"{'tool':<24} {'time s':>8} {'x floor':>8} {'peak MB':>8} {'x floor':>8} {'x size':>7}  output")
    for r in (floor, ours):
        if r.error:
            print(f"{r.tool:<24} FAILED {r.error}")
            continue
        print(f"{r.tool:<24} {r.time:>8.2f} {r.time / floor.time:>8.2f} {r.rss:>8.0f} {r.rss / floor.rss:>8.2f} "
              f"{r.rss * 2**20 / size:>7.2f}  {', '.join(r.outputs)}")
    if not ours.error and not floor.error:
        time_target, rss_target = TARGETS[kind]
        rss_budget = rss_target if rss_target else 1.5 * size / 2**20
        ok_time, ok_rss = ours.time <= time_target * floor.time, ours.rss <= rss_budget
        kept = any(o.startswith("model.onnx.data") for o in ours.outputs) == external
        print(f"targets: time {ours.time / floor.time:.2f}x floor (<= {time_target}) {'ok' if ok_time else 'MISSED'}; "
              f"peak {ours.rss:.0f} MB (<= {rss_budget:.0f}) {'ok' if ok_rss else 'MISSED'}; "
              f"storage {'kept' if kept else 'CHANGED'}")
    shutil.rmtree(work / kind, ignore_errors=True)
    return [floor, ours]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="base-embedded,base-external",
                        help="comma-separated: base-embedded, base-external, big")
    parser.add_argument("--runs", type=int, default=0, help="runs per tool (default 3, 1 for big)")
    parser.add_argument("--preset", default="trt")
    parser.add_argument("--keep", type=Path, help="work in (and keep logs in) this folder")
    parser.add_argument("--python", default=sys.executable, help="python that runs the floor and surgery")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--generate", nargs=2, metavar=("MODEL", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generate:
        generate(args.generate[0], Path(args.generate[1]))
        return 0
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(TARGETS))
    if unknown:
        parser.error(f"unknown model '{unknown[0]}' (choose from {', '.join(TARGETS)})")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    work = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="surgery-real-size-"))
    os.chdir(ROOT)  # ``python -m converter.cli`` imports from the working directory first: this checkout's
    work.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    try:
        for kind in kinds:
            runs = args.runs or (1 if kind == "big" else 3)
            results += bench(kind, work, runs, args.preset, args.python, args.timeout)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"median_s": r.time, "median_rss_mb": r.rss} for r in results],
                                        indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
