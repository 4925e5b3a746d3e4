"""The batch summary: success rate per target, per-item verdicts, blockers by op with their remedies,
times, and what changed since a previous summary (a TensorRT upgrade, say).

Everything is sorted (items by model then target, blockers by op), so two runs over the same inputs
give the same summary but for the times.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Iterable, Sequence

from converter.batch.targets import Target
from surgery.errors import UserInputError

STATUSES = ("passed", "failed", "error", "crashed", "timeout")
FORMAT = "onnx-surgery batch summary 1"


def _rate(passed: int, total: int) -> float | None:
    return round(passed / total, 4) if total else None


def _counts(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    counts = {s: sum(r["status"] == s for r in records) for s in STATUSES}
    times = [r["seconds"] for r in records if isinstance(r.get("seconds"), (int, float))]
    cpu = [r["cpu_s"] for r in records if isinstance(r.get("cpu_s"), (int, float))]
    return {"items": len(records), **counts, "success_rate": _rate(counts["passed"], len(records)),
            "seconds_total": round(sum(times), 3), "seconds_median": round(statistics.median(times), 3) if times else None,
            "cpu_seconds_total": round(sum(cpu), 3)}


def blockers_by_op(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (op, kind) that kept an item from passing: how many items, which models and targets, the remedies."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        for b in r.get("blockers") or []:
            for op in b["ops"]:
                row = rows.setdefault((op, b["kind"]), {"op": op, "kind": b["kind"], "items": 0, "nodes": 0,
                                                         "models": set(), "targets": set(), "remedies": set()})
                row["items"] += 1
                row["nodes"] += b["count"]
                row["models"].add(r["model"])
                row["targets"].add(r["target"])
                row["remedies"].update(b["remedies"])
    return [{**row, "models": sorted(row["models"]), "targets": sorted(row["targets"]), "remedies": sorted(row["remedies"])}
            for _, row in sorted(rows.items())]


def build_summary(records: Sequence[dict[str, Any]], targets: Sequence[Target], tools: dict[str, Any],
                  run: dict[str, Any], previous: dict[str, Any] | None = None,
                  min_success: float | None = None) -> dict[str, Any]:
    """The summary of a batch's item records (``item.json``); ``previous`` (an earlier summary) adds the comparison."""
    items = sorted(records, key=lambda r: (r["model"], r["target"]))
    by_target = {t.name: [r for r in items if r["target"] == t.name] for t in targets}
    totals = _counts(items)
    summary: dict[str, Any] = {
        "format": FORMAT,
        "ok": totals["passed"] == totals["items"] or (min_success is not None and (totals["success_rate"] or 0) >= min_success),
        "min_success": min_success,
        "totals": totals,
        "targets": {t.name: {"settings": t.to_json(), "describe": t.describe(), **_counts(by_target[t.name]),
                             "blockers_by_op": blockers_by_op(by_target[t.name])} for t in targets},
        "models": sorted({r["model"] for r in items}),
        "blockers_by_op": blockers_by_op(items),
        "tools": tools,
        "run": run,
        "items": items,
    }
    if previous is not None:
        summary["comparison"] = compare(previous, summary)
    return summary


def _flat_tools(tools: dict[str, Any]) -> dict[str, str]:
    flat = {k: str(v) for k, v in tools.items() if k != "backends"}
    for name, b in (tools.get("backends") or {}).items():
        flat[f"backend {name}"] = f"{b.get('name')} {b.get('version')}"
    return flat


def compare(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """What got better or worse since ``previous``: tool versions, success rate per target, items whose status
    changed, items added or gone, and blockers (op per item) fixed or new."""
    before = {(r["model"], r["target"]): r for r in previous.get("items", [])}
    after = {(r["model"], r["target"]): r for r in current["items"]}
    old_tools, new_tools = _flat_tools(previous.get("tools") or {}), _flat_tools(current["tools"])
    better, worse, changed, fixed, new_blockers = [], [], [], [], []
    for key in sorted(before.keys() & after.keys()):
        was, now = before[key]["status"], after[key]["status"]
        row = {"model": key[0], "target": key[1], "before": was, "after": now}
        if was != now:
            (better if now == "passed" else worse if was == "passed" else changed).append(row)
        ops_was = {op for b in before[key].get("blockers") or [] for op in b["ops"]}
        ops_now = {op for b in after[key].get("blockers") or [] for op in b["ops"]}
        fixed += [{"model": key[0], "target": key[1], "op": op} for op in sorted(ops_was - ops_now)]
        new_blockers += [{"model": key[0], "target": key[1], "op": op} for op in sorted(ops_now - ops_was)]
    rates = {}
    for name in sorted(set(previous.get("targets") or {}) | set(current["targets"])):
        rates[name] = {"before": (previous.get("targets") or {}).get(name, {}).get("success_rate"),
                       "after": current["targets"].get(name, {}).get("success_rate")}
    return {
        "previous_totals": previous.get("totals"),
        "tools_changed": {k: [old_tools.get(k), new_tools.get(k)] for k in sorted(old_tools.keys() | new_tools.keys())
                          if old_tools.get(k) != new_tools.get(k)},
        "success_rate": rates,
        "better": better, "worse": worse, "changed": changed,
        "new_items": [{"model": m, "target": t} for m, t in sorted(after.keys() - before.keys())],
        "gone_items": [{"model": m, "target": t} for m, t in sorted(before.keys() - after.keys())],
        "blockers_fixed": fixed, "blockers_new": new_blockers,
    }


def load_summary(path: Path) -> dict[str, Any]:
    """A summary written by an earlier batch (``--compare``); a one-line error when it is not one."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserInputError(f"{path}: no such summary") from None
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{path}: not a readable batch summary ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("items"), list):
        raise UserInputError(f"{path}: not a batch summary (no '{FORMAT}' format mark)")
    return data
