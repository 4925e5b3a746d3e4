"""Benchmark ``surgery batch`` throughput: items/hour with --jobs 1 against --jobs N (and Ray local).

Usage::

    .venv/bin/python bench/batch.py                                 # every sample x fp32, fp16; --jobs 1, 2; Ray local
    .venv/bin/python bench/batch.py --models cnn_ts,bert_ts --jobs 1,2 --no-ray
    .venv/bin/python bench/batch.py --json bench-batch.json --keep /tmp/bench-batch

Each configuration is one ``surgery batch`` subprocess over the same models and targets, into its own
fresh output folder. Items/hour is taken over the subprocess's whole wall time (start-up, Ray's start
included) and over the executor's time alone (``run.seconds`` of the summary). The load average and
the CPU time the items used (their processes' own, from the summary) are recorded beside it, since a
shared machine's other work changes the figures. The verdicts of every
configuration are compared: a faster run that decides differently is reported as such.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"


@dataclass
class Config:
    label: str
    jobs: int
    ray: bool = False
    wall_s: float = 0.0
    executor_s: float = 0.0
    cpu_s: float = 0.0
    items: int = 0
    passed: int = 0
    exit_code: int = 0
    load_before: list[float] = field(default_factory=list)
    load_after: list[float] = field(default_factory=list)
    verdicts: dict[str, str] = field(default_factory=dict)

    @property
    def items_per_hour(self) -> float:
        return self.items / self.wall_s * 3600 if self.wall_s else 0.0

    @property
    def items_per_hour_executor(self) -> float:
        return self.items / self.executor_s * 3600 if self.executor_s else 0.0


def sample_models(names: list[str] | None) -> list[Path]:
    if names:
        paths = [SAMPLES / f"{n}.onnx" for n in names]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise SystemExit(f"no such sample model: {', '.join(missing)}")
        return paths
    return sorted(SAMPLES.glob("*.onnx"))


def run_config(cfg: Config, models: list[Path], out: Path, targets: str | None, timeout: float | None) -> Config:
    cmd = [sys.executable, "-m", "converter.cli", "batch", *map(str, models), "-o", str(out), "--jobs", str(cfg.jobs)]
    cmd += ["--ray", "local"] if cfg.ray else []
    cmd += ["--targets", targets] if targets else []
    cmd += ["--timeout", str(timeout)] if timeout else []
    cfg.load_before = list(os.getloadavg())
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    cfg.wall_s = time.perf_counter() - start
    cfg.exit_code = done.returncode
    cfg.load_after = list(os.getloadavg())
    if cfg.exit_code not in (0, 1):
        raise SystemExit(f"{cfg.label}: surgery batch exited {cfg.exit_code}: {done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    cfg.executor_s = summary["run"]["seconds"]
    cfg.items = summary["totals"]["items"]
    cfg.cpu_s = summary["totals"]["cpu_seconds_total"]
    cfg.passed = summary["totals"]["passed"]
    cfg.verdicts = {f"{r['model']}/{r['target']}": r["status"] for r in summary["items"]}
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated sample names (default: every sample)")
    parser.add_argument("--jobs", default="1,2", help="comma-separated --jobs values (default: 1,2)")
    parser.add_argument("--no-ray", action="store_true", help="leave out the Ray local configuration")
    parser.add_argument("--ray-jobs", type=int, default=2, help="--jobs for the Ray local configuration (default: 2)")
    parser.add_argument("--targets", help="targets TOML (default: surgery batch's fp32 and fp16)")
    parser.add_argument("--timeout", type=float, help="per-item --timeout")
    parser.add_argument("--keep", help="folder for the batch outputs (default: a temporary one, removed)")
    parser.add_argument("--json", dest="json_out", help="write the results as JSON")
    args = parser.parse_args(argv)
    models = sample_models(args.models.split(",") if args.models else None)
    configs = [Config(f"--jobs {j}", int(j)) for j in args.jobs.split(",")]
    if not args.no_ray:
        try:
            import ray  # noqa: F401
            configs.append(Config(f"--ray local --jobs {args.ray_jobs}", args.ray_jobs, ray=True))
        except ModuleNotFoundError:
            print("ray is not installed: the Ray local configuration is left out", file=sys.stderr)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-batch-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for cfg in configs:
            out = work / cfg.label.replace("--", "").replace(" ", "_")
            shutil.rmtree(out, ignore_errors=True)
            run_config(cfg, models, out, args.targets, args.timeout)
            print(f"{cfg.label:<24} {cfg.items} items in {cfg.wall_s:7.1f} s wall ({cfg.executor_s:7.1f} s executor): "
                  f"{cfg.items_per_hour:7.0f} items/hour ({cfg.items_per_hour_executor:7.0f} executor); "
                  f"items' CPU {cfg.cpu_s:.0f} s; load {cfg.load_before[0]:.1f} -> {cfg.load_after[0]:.1f}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    base = configs[0]
    for cfg in configs[1:]:
        same = "same verdicts" if cfg.verdicts == base.verdicts else "DIFFERENT verdicts"
        print(f"speed-up {cfg.label} vs {base.label}: {base.wall_s / cfg.wall_s:.2f}x wall, "
              f"{base.executor_s / cfg.executor_s:.2f}x executor ({same})")
    print(f"cores: {len(os.sched_getaffinity(0))} usable, {os.cpu_count()} on the machine; {len(models)} model(s), "
          f"{base.passed}/{base.items} items passed")
    if args.json_out:
        rows = [{**asdict(c), "items_per_hour": round(c.items_per_hour, 1),
                 "items_per_hour_executor": round(c.items_per_hour_executor, 1)} for c in configs]
        Path(args.json_out).write_text(json.dumps({"models": [m.stem for m in models], "cores": len(os.sched_getaffinity(0)),
                                                   "configs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
