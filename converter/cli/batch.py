"""``surgery batch INPUTS -o OUTDIR``: the ``run`` pipeline over every model x target, one summary.

Each item (a model under a target) runs in its own process and writes ``OUTDIR/<model>/<target>/``
(the ``run`` outputs, ``batch.log`` and ``item.json``); ``OUTDIR/summary.json`` and ``summary.html``
sum them up and compare with the previous summary (``--compare``, else the one already in OUTDIR).
Exit 0 when every item passed or ``--min-success`` is met, 1 otherwise, 2 for a user error.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from converter.batch.executors import LocalExecutor, RayExecutor
from converter.batch.items import Item, collect_models, load_record, make_items, resolve_backends, tool_versions
from converter.batch.summary import build_summary, load_summary
from converter.batch.summary_html import summary_html
from converter.batch.targets import DEFAULT_TARGETS, load_targets
from converter.batch.worker import write_json
from surgery.errors import UserInputError
from surgery.paths import check_outputs, model_files


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def parse_rate(text: str) -> float:
    """'0.9', '90%' -> 0.9 (an argparse ``type``)."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a rate such as 0.9 or 90%, got '{text}'") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a rate lies between 0 and 1 (0% and 100%), got '{text}'")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUTS",
                        help="model files, folders (their *.onnx), globs (quote them: 'zoo/**/*.onnx') or list files")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the items and the summary")
    parser.add_argument("--targets", metavar="FILE.toml",
                        help="targets (preset, emit, precision, backend, profile); default: fp32 and fp16 with the trt preset")
    parser.add_argument("--jobs", type=_positive_int, metavar="N",
                        help=f"items at a time (default: all cores, {_cores()} here; with --ray local, its CPUs)")
    parser.add_argument("--ray", metavar="ADDRESS|local",
                        help="run the items as Ray tasks: 'local' starts a Ray instance, an address joins a cluster")
    parser.add_argument("--gpus-per-item", type=float, default=1.0, metavar="F",
                        help="with --ray on a cluster with GPUs: GPUs each TensorRT item asks for (default: 1)")
    parser.add_argument("--timeout", type=_seconds, metavar="S", help="seconds an item may take before it is killed")
    parser.add_argument("--resume", action="store_true",
                        help="skip items whose result is recorded for the same model, spec, target and tool versions")
    parser.add_argument("--min-success", type=parse_rate, metavar="RATE",
                        help="exit 0 when at least this share of the items passed (0.9 or 90%%); default: all")
    parser.add_argument("--compare", metavar="SUMMARY.json",
                        help="an earlier summary to compare with (default: OUTDIR/summary.json from the last run, if any)")


class BatchProgress:
    """One line per finished item on stdout; on a terminal, an overall bar on stderr below them."""

    def __init__(self, total: int, done: int = 0) -> None:
        self.total, self.done, self.failed = total, done, 0
        self.start = time.monotonic()
        self.ran = 0
        self.bar = sys.stderr.isatty()
        self._draw()

    def item(self, record: dict[str, Any]) -> None:
        self.done += 1
        self.ran += 1
        self.failed += record["status"] != "passed"
        self._clear()
        width = len(str(self.total))
        print(f"[{self.done:>{width}}/{self.total}] {record['status']:<7} {record['model']} {record['target']}  "
              f"{format(record['seconds'], '.1f') if record.get('seconds') is not None else '?'} s  {item_line(record)}", flush=True)
        self._draw()

    def _clear(self) -> None:
        if self.bar:
            print("\r\033[K", end="", file=sys.stderr, flush=True)

    def _draw(self) -> None:
        if not self.bar or not self.total:
            return
        filled = round(30 * self.done / self.total)
        elapsed = time.monotonic() - self.start
        left = self.total - self.done
        eta = f", about {elapsed / self.ran * left:.0f} s left" if self.ran and left else ""
        print(f"\r\033[K[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} items, {self.failed} not passed, "
              f"{elapsed:.0f} s{eta}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        self._clear()


def item_line(r: dict[str, Any]) -> str:
    """The gist of an item's record in a few words."""
    if not r.get("ran"):
        return r.get("error") or ""
    parts = [f"equal {r['equal']}", "engine built" if r["builds"] else f"no engine ({r.get('engine_note')})",
             f"engine run {r['validated']}"]
    blockers = sorted({f"{op} ({b['kind']})" for b in r.get("blockers") or [] for op in b["ops"]})
    if blockers:
        parts.append("blockers: " + ", ".join(blockers))
    return ", ".join(parts)


def _reusable(record: dict[str, Any] | None, timeout_s: float | None) -> bool:
    """A recorded result stands, but a timeout is tried again when the new limit is longer (or gone)."""
    if record is None:
        return False
    if record["status"] == "timeout":
        return timeout_s is not None and record.get("timeout_s") is not None and timeout_s <= record["timeout_s"]
    return True


def _previous(args: argparse.Namespace, out: Path) -> dict[str, Any] | None:
    if args.compare:
        return load_summary(Path(args.compare))
    try:
        return load_summary(out / "summary.json") if (out / "summary.json").is_file() else None
    except UserInputError:  # an unreadable summary of our own: nothing to compare with
        return None


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    targets = load_targets(args.targets) if args.targets else list(DEFAULT_TARGETS)
    models = collect_models(args.inputs, exclude=out)
    check_outputs({f for m in models for f in model_files(m.path)} | {m.spec.resolve() for m in models if m.spec},
                  {f"-o/{n}": out / n for n in ("summary.json", "summary.html") if out.is_dir()}, {"-o": out})
    previous = _previous(args, out)
    if args.ray and args.ray != "local" and args.jobs:
        raise UserInputError("--jobs goes with the local pool or --ray local; a cluster's resources decide its parallelism")
    tools = tool_versions(resolve_backends(targets))
    items = make_items(models, targets, out, tools)
    records: dict[tuple[str, str], dict[str, Any]] = {}
    if args.resume:
        for item in items:
            record = load_record(item)
            if _reusable(record, args.timeout):
                records[item.key] = record
    todo = sorted((i for i in items if i.key not in records), key=_cost_order)
    jobs = args.jobs or _cores()
    executor = (RayExecutor(args.ray, jobs if args.ray == "local" else None, args.timeout, args.gpus_per_item)
                if args.ray else LocalExecutor(jobs, args.timeout))
    print(f"batch      {len(models)} model(s) x {len(targets)} target(s) = {len(items)} item(s); "
          f"{len(records)} reused (--resume), {len(todo)} to run on {executor.describe()['executor']}")
    out.mkdir(exist_ok=True)
    progress = BatchProgress(len(items), len(records))
    start = time.monotonic()

    def done(item: Item, record: dict[str, Any]) -> None:
        records[item.key] = record
        progress.item(record)

    try:
        if todo:
            executor.run(todo, done)
    finally:
        progress.close()
    seconds = time.monotonic() - start
    run_info = {**executor.describe(), "ran": len(todo), "reused": len(items) - len(todo), "seconds": round(seconds, 3),
                "items_per_hour": round(len(todo) / seconds * 3600, 1) if todo and seconds > 0 else None,
                "timeout_s": args.timeout}
    summary = build_summary(list(records.values()), targets, tools, run_info, previous, args.min_success)
    write_json(out / "summary.json", summary)
    html_tmp = out / "summary.html.tmp"
    html_tmp.write_text(summary_html(summary))
    os.replace(html_tmp, out / "summary.html")
    _print_summary(summary, out)
    return 0 if summary["ok"] else 1


def _cost_order(item: Item) -> tuple[int, tuple[str, str]]:
    """Biggest models first (their builds take longest), so that the last items to finish are short ones."""
    return -sum(f.stat().st_size for f in model_files(item.model.path)), item.key


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    for name, t in summary["targets"].items():
        rate = "n/a" if t["success_rate"] is None else f"{t['success_rate'] * 100:.1f}%"
        print(f"target     {name}: {t['passed']}/{t['items']} passed ({rate}); {t['describe']}")
    for b in summary["blockers_by_op"]:
        print(f"blocker    {b['op']} ({b['kind']}): {b['items']} item(s); remedy: {'; '.join(b['remedies']) or 'none known'}")
    c = summary.get("comparison")
    if c:
        tools = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in c["tools_changed"].items()) or "no tool changed"
        print(f"compared   with the previous summary: {len(c['better'])} better, {len(c['worse'])} worse, "
              f"{len(c['changed'])} changed otherwise, {len(c['new_items'])} new, {len(c['gone_items'])} gone; {tools}")
    t = summary["totals"]
    run_info = summary["run"]
    rate = f", {run_info['items_per_hour']} items/hour" if run_info.get("items_per_hour") else ""
    print(f"summary    {t['passed']}/{t['items']} passed; {run_info['ran']} run in {run_info['seconds']} s{rate}; "
          f"{out / 'summary.json'}, {out / 'summary.html'}")
