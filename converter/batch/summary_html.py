"""The batch summary as one self-contained HTML page (inline CSS, no assets), verdict first.

Links go to each item's own ``report.html``, relative to the summary's folder (``<model>/<target>/``).
"""
from __future__ import annotations

import html
from typing import Any, Sequence
from urllib.parse import quote

from converter.report_html import page

_CSS = """<style>td.passed{background:#e8f5e9;color:#2e7d32}td.failed,td.error,td.crashed,td.timeout{background:#fdecea;color:#c62828}
td.num{text-align:right}.flags{font-size:11px;color:#555}.worse{color:#c62828}.better{color:#2e7d32}</style>"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _pct(rate: float | None) -> str:
    return "&mdash;" if rate is None else f"{rate * 100:.1f}%"


def _table(cls: str, head: Sequence[str], rows: Sequence[str]) -> str:
    if not rows:
        return "<p>none</p>"
    return f'<table class="{cls}"><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"


def _item_href(r: dict[str, Any]) -> str | None:
    return f"{quote(r['model'])}/{quote(r['target'])}/report.html" if r.get("ran") else None


def _flags(r: dict[str, Any]) -> str:
    if not r.get("ran"):
        return "did not run to the end"
    return (f"equal {r.get('equal')} &middot; {'builds' if r.get('builds') else 'no engine'} &middot; "
            f"engine run {_e(r.get('validated'))}")


def _verdict(s: dict[str, Any]) -> str:
    t = s["totals"]
    threshold = f" (needed: {_pct(s['min_success'])})" if s.get("min_success") is not None else ""
    tools = ", ".join(f"{_e(k)} {_e(v)}" for k, v in s["tools"].items() if k != "backends")
    backends = ", ".join(f"{_e(k)} &rarr; {_e(b['name'])} {_e(b['version'])}" for k, b in s["tools"]["backends"].items())
    run = s["run"]
    return (f'<section id="verdict" class="{"good" if s["ok"] else "bad"}"><h1>Batch: {t["passed"]} of {t["items"]} items passed '
            f"({_pct(t['success_rate'])}){threshold}</h1>"
            f"<p>{len(s['models'])} model(s) &times; {len(s['targets'])} target(s); failed {t['failed']}, error {t['error']}, "
            f"crashed {t['crashed']}, timeout {t['timeout']}</p>"
            f"<p>backends: {backends}</p><p>tools: {tools}</p>"
            f"<p>run: {_e(run.get('executor'))}, {_e(run.get('jobs'))} job(s); {_e(run.get('ran'))} item(s) run, "
            f"{_e(run.get('reused'))} reused (--resume); {_e(run.get('seconds'))} s</p></section>")


def _targets(s: dict[str, Any]) -> str:
    rows = [f"<tr><td>{_e(name)}</td><td>{_e(t['describe'])}</td><td class=\"num\">{t['items']}</td>"
            f"<td class=\"num\">{t['passed']}</td><td class=\"num\">{t['failed']}</td><td class=\"num\">{t['error']}</td>"
            f"<td class=\"num\">{t['crashed']}</td><td class=\"num\">{t['timeout']}</td><td class=\"num\">{_pct(t['success_rate'])}</td>"
            f"<td class=\"num\">{_e(t['seconds_total'])}</td><td class=\"num\">{_e(t['seconds_median'])}</td></tr>"
            for name, t in s["targets"].items()]
    head = ["target", "settings", "items", "passed", "failed", "error", "crashed", "timeout", "success rate",
            "seconds (total)", "seconds (median)"]
    return "<h2>Success rate per target</h2>" + _table("targets", head, rows)


def _matrix(s: dict[str, Any]) -> str:
    cells = {(r["model"], r["target"]): r for r in s["items"]}
    rows = []
    for model in s["models"]:
        tds = []
        for target in s["targets"]:
            r = cells.get((model, target))
            if r is None:
                tds.append("<td>&mdash;</td>")
                continue
            href = _item_href(r)
            word = f'<a href="{href}">{_e(r["status"])}</a>' if href else _e(r["status"])
            tds.append(f'<td class="{_e(r["status"])}">{word}<div class="flags">{_flags(r)}</div></td>')
        rows.append(f"<tr><td>{_e(model)}</td>{''.join(tds)}</tr>")
    return "<h2>Verdict per model</h2>" + _table("matrix", ["model", *s["targets"]], rows)


def _blockers(rows_in: Sequence[dict[str, Any]]) -> str:
    rows = [f"<tr><td>{_e(b['op'])}</td><td>{_e(b['kind'])}</td><td class=\"num\">{b['items']}</td><td class=\"num\">{b['nodes']}</td>"
            f"<td>{_e(', '.join(b['models']))}</td><td>{_e(', '.join(b['targets']))}</td>"
            f"<td>{'<br>'.join(_e(x) for x in b['remedies']) or '&mdash;'}</td></tr>" for b in rows_in]
    return "<h2>Blockers by op</h2>" + _table("blockers", ["op", "kind", "items", "nodes", "models", "targets", "remedies"], rows)


def _note(r: dict[str, Any]) -> str:
    parts = [r.get("error"), r.get("engine_note") if not r.get("builds") else None, r.get("validated_note")]
    return "<br>".join(_e(p) for p in parts if p)


def _items(s: dict[str, Any]) -> str:
    rows = []
    for r in s["items"]:
        blockers = "<br>".join(f"{_e(', '.join(b['ops']))} ({_e(b['kind'])}): {_e('; '.join(b['remedies']))}"
                               for b in r.get("blockers") or [])
        yes = lambda v: "&mdash;" if v is None else ("yes" if v else "no")  # noqa: E731
        rows.append(f"<tr><td>{_e(r['model'])}</td><td>{_e(r['target'])}</td><td class=\"{_e(r['status'])}\">{_e(r['status'])}</td>"
                    f"<td>{yes(r.get('ran'))}</td><td>{_e(r.get('equal', '—'))}</td><td>{yes(r.get('builds'))}</td>"
                    f"<td>{_e(r.get('validated', '—'))}</td><td>{blockers}</td><td>{_note(r)}</td>"
                    f"<td class=\"num\">{_e(r.get('seconds'))}</td><td class=\"num\">{_e(r.get('cpu_s'))}</td></tr>")
    head = ["model", "target", "status", "ran", "equal", "builds", "validated", "blockers (remedies)", "notes", "seconds",
            "CPU seconds"]
    return "<h2>Items</h2>" + _table("items", head, rows)


def _comparison(c: dict[str, Any]) -> str:
    def changes(cls: str, title: str, rows_in: Sequence[dict[str, Any]]) -> str:
        rows = [f"<tr><td>{_e(r['model'])}</td><td>{_e(r['target'])}</td><td>{_e(r['before'])}</td>"
                f"<td class=\"{cls}\">{_e(r['after'])}</td></tr>" for r in rows_in]
        return f"<h3>{_e(title)} ({len(rows_in)})</h3>" + _table(cls, ["model", "target", "before", "after"], rows)

    def pairs(title: str, rows_in: Sequence[dict[str, Any]], keys: Sequence[str]) -> str:
        rows = ["<tr>" + "".join(f"<td>{_e(r[k])}</td>" for k in keys) + "</tr>" for r in rows_in]
        return f"<h3>{_e(title)} ({len(rows_in)})</h3>" + _table("pairs", keys, rows)

    tools = [f"<tr><td>{_e(k)}</td><td>{_e(a)}</td><td>{_e(b)}</td></tr>" for k, (a, b) in c["tools_changed"].items()]
    rates = [f"<tr><td>{_e(k)}</td><td>{_pct(v['before'])}</td><td>{_pct(v['after'])}</td></tr>" for k, v in c["success_rate"].items()]
    return ("<h2>Since the previous summary</h2><h3>Tools changed</h3>" + _table("tools", ["tool", "before", "after"], tools)
            + "<h3>Success rate</h3>" + _table("rates", ["target", "before", "after"], rates)
            + changes("better", "Better", c["better"]) + changes("worse", "Worse", c["worse"])
            + changes("changed", "Changed otherwise", c["changed"])
            + pairs("New items", c["new_items"], ["model", "target"]) + pairs("Gone items", c["gone_items"], ["model", "target"])
            + pairs("Blockers fixed", c["blockers_fixed"], ["model", "target", "op"])
            + pairs("Blockers new", c["blockers_new"], ["model", "target", "op"]))


def summary_html(summary: dict[str, Any]) -> str:
    body = [_CSS, _verdict(summary), _targets(summary), _matrix(summary), _blockers(summary["blockers_by_op"]), _items(summary)]
    if "comparison" in summary:
        body.append(_comparison(summary["comparison"]))
    return page("onnx-surgery batch summary", "".join(body))
