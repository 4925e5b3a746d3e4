"""Self-contained offline reports, verdict first (inline CSS and an inline SVG partition picture, no assets).

The verdict helpers (``build_text``, ``profile_text``, ``verdict_lines``) work on the JSON form of a
check (``CapabilityReport.to_json``) so the terminal summary, report.json and the HTML agree.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Sequence

from converter.trt.capability import CapabilityReport
from converter.runtime.partitions import Partition

_COLORS = {"supported": "#4caf50", "unsupported": "#e53935", "unknown": "#9e9e9e"}
_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px;vertical-align:top}th{background:#f3f3f3}
.supported,.pass{color:#2e7d32}.unsupported,.fail{color:#c62828;font-weight:bold}.unknown,.skip{color:#757575}
#verdict{border:2px solid #888;border-radius:8px;padding:0 1em 1em;margin-bottom:2em}
#verdict.good{border-color:#2e7d32;background:#f1f8f1}#verdict.bad{border-color:#c62828;background:#fdf1f1}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}h2{margin-top:1.5em}summary{cursor:pointer}
td.names{font-family:monospace;font-size:12px;word-break:break-all}td.source{font-family:monospace;font-size:12px}"""
_NAMES_SHOWN = 6  # problem node names listed per kind in the terminal summary


def _e(text: Any) -> str:
    return html.escape(str(text))


# ---- verdict, shared by the terminal summary and the HTML -------------------------------------------------------

def _dims(dims: Sequence[int]) -> str:
    return "x".join(map(str, dims)) if dims else "scalar"


def profile_text(shapes: dict[str, Sequence[int]]) -> str:
    """One input's profile: a single shape when min = opt = max, else ``min A, opt B, max C``."""
    lo, opt, hi = shapes["min"], shapes["opt"], shapes["max"]
    if list(lo) == list(opt) == list(hi):
        return _dims(opt)
    return f"min {_dims(lo)}, opt {_dims(opt)}, max {_dims(hi)}"


def build_text(build: dict[str, Any]) -> str:
    """The build result of a check's JSON ``build`` entry, in one line."""
    error = (build.get("error") or "").strip()
    first = error.splitlines()[0] if error else ""
    if not build.get("attempted"):
        return "not attempted" + (f": {first}" if first else "")
    if build.get("ok"):
        return "ok"
    kind = f" ({build['kind']})" if build.get("kind") else ""
    return f"FAILED{kind}" + (f": {first}" if first else "")


def _names(names: Sequence[str], limit: int = _NAMES_SHOWN) -> str:
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def verdict_lines(check: dict[str, Any]) -> list[str]:
    """Plain-text verdict of a check's JSON: supported, build, profile per input, problem nodes by kind."""
    build = check["build"]
    profile = build.get("profile") or {}
    lines = [f"verdict {'SUPPORTED' if check['supported'] else 'NOT SUPPORTED'}", f"build   {build_text(build)}"]
    if profile.get("shapes") or profile.get("source"):
        lines.append(f"profile {profile.get('source') or '(source not recorded)'}")
        lines += [f"  {name}: {profile_text(s)}" for name, s in (profile.get("shapes") or {}).items()]
    groups = check.get("unsupported") or []
    if groups:
        lines.append(f"problems {sum(g['count'] for g in groups)} node(s), by kind:")
    for g in groups:
        lines.append(f"  {g['kind']} ({g['status']}, {g['count']} node(s), op {', '.join(g['ops'])}): {_names(g['nodes'])}")
        lines += [f"    remedy: {r}" for r in g["remedies"]]
    return lines


def _validation_class(status: str) -> str:
    return {"passed": "pass", "failed": "fail"}.get(status, "skip")


def _profile_table(profile: dict[str, Any]) -> str:
    shapes = profile.get("shapes") or {}
    if not shapes:
        return "<p>profile: none recorded</p>"
    rows = "".join(f"<tr><td>{_e(name)}</td><td>{_e(profile_text(s))}</td></tr>" for name, s in shapes.items())
    return (f"<p>profile: {_e(profile.get('source') or '(source not recorded)')}</p>"
            f'<table class="profile"><tr><th>input</th><th>shape (min, opt, max)</th></tr>{rows}</table>')


def _groups_table(groups: Sequence[dict[str, Any]]) -> str:
    if not groups:
        return "<p>no unsupported nodes</p>"
    rows = "".join(
        f'<tr><td>{_e(g["kind"])}</td><td class="{_e(g["status"])}">{_e(g["status"])}</td><td>{g["count"]}</td>'
        f'<td>{_e(", ".join(g["ops"]))}</td><td class="names">{_e(", ".join(g["nodes"]))}</td>'
        f'<td>{"<br>".join(_e(r) for r in g["remedies"]) or "&mdash;"}</td></tr>' for g in groups)
    return ('<table class="unsupported-kinds"><tr><th>kind</th><th>status</th><th>nodes</th><th>ops</th>'
            f"<th>node names</th><th>remedies</th></tr>{rows}</table>")


def _engine_line(engine: dict[str, Any]) -> str:
    if engine.get("built"):
        return f"built: <code>{_e(engine.get('path', ''))}</code> ({_e(engine.get('bytes', '?'))} bytes)"
    error = f" ({_e(engine['error'])})" if engine.get("error") else ""
    return f"not built: {_e(engine.get('reason', ''))}{error}"


def _validation_summary(validation: dict[str, Any]) -> str:
    rows = "".join(f'<tr><td>{_e(name)}</td><td class="{_validation_class(v.get("status", "?"))}">'
                   f'{_e(v.get("status", "?"))}</td><td>{_e(v.get("skipped") or "")}</td></tr>'
                   for name, v in validation.items())
    return f'<table class="validation-summary"><tr><th>validation</th><th>status</th><th>note</th></tr>{rows}</table>'


def verdict_section(check: dict[str, Any], *, ok: bool | None = None, engine: dict[str, Any] | None = None,
                    validation: dict[str, Any] | None = None, model: str | None = None) -> str:
    """The opening section: verdict heading, build and profile, problem nodes by kind, validation (for run)."""
    good = check["supported"] if ok is None else ok
    word = ("SUPPORTED" if good else "NOT SUPPORTED") if ok is None else ("PASSED" if good else "FAILED")
    b = check["backend"]
    parts = [f'<section id="verdict" class="{"good" if good else "bad"}"><h1>Verdict: {word}</h1>',
             f"<p>model <code>{_e(model or check['model'])}</code> &middot; backend <b>{_e(b['name'])} {_e(b['version'])}</b>"
             f" &middot; TensorRT support: <b>{'supported' if check['supported'] else 'NOT supported'}</b></p>",
             f"<p>build: <b>{_e(build_text(check['build']))}</b></p>"]
    if engine is not None:
        parts.append(f"<p>engine: {_engine_line(engine)}</p>")
    parts.append(_profile_table(check["build"].get("profile") or {}))
    parts.append("<h3>Unsupported nodes by kind</h3>" + _groups_table(check.get("unsupported") or []))
    if validation is not None:
        parts.append("<h3>Validation</h3>" + _validation_summary(validation))
    return "".join(parts) + "</section>"


# ---- details --------------------------------------------------------------------------------------------------

def partition_svg(parts: Sequence[Partition], per_row: int = 6) -> str:
    """Boxes per partition in node order, colored by status, with arrows where tensors flow between them."""
    if not parts:
        return "<p>(no nodes)</p>"
    box_w, box_h, gap_x, gap_y = 150, 54, 40, 40
    pos = {p.id: ((i % per_row) * (box_w + gap_x) + 10, (i // per_row) * (box_h + gap_y) + 10) for i, p in enumerate(parts)}
    rows = (len(parts) + per_row - 1) // per_row
    width = min(len(parts), per_row) * (box_w + gap_x) + 10
    height = rows * (box_h + gap_y) + 10
    producers = {t: p.id for p in parts for t in p.outputs}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
           '<defs><marker id="arr" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto">'
           '<path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker></defs>']
    for p in parts:
        for t in p.inputs:
            src = producers.get(t)
            if src is None or src == p.id:
                continue
            (x1, y1), (x2, y2) = pos[src], pos[p.id]
            out.append(f'<line x1="{x1 + box_w}" y1="{y1 + box_h / 2}" x2="{x2}" y2="{y2 + box_h / 2}" stroke="#555" '
                       f'stroke-width="1.2" marker-end="url(#arr)"><title>{_e(t)}</title></line>')
    for p in parts:
        x, y = pos[p.id]
        color = _COLORS.get(p.status, "#9e9e9e")
        tip = f"#{p.id} {p.status}: {', '.join(p.nodes)}\nin: {', '.join(p.inputs)}\nout: {', '.join(p.outputs)}"
        out.append(f'<g><title>{_e(tip)}</title>'
                   f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6" fill="{color}" opacity="0.85"/>'
                   f'<text x="{x + 8}" y="{y + 20}" font-size="13" fill="white">#{p.id} {_e(p.status)}</text>'
                   f'<text x="{x + 8}" y="{y + 40}" font-size="11" fill="white">{len(p.nodes)} node(s)</text></g>')
    out.append("</svg>")
    return "\n".join(out)


def _partition_rows(parts: Sequence[Partition]) -> str:
    return "".join(
        f'<tr><td>#{p.id}</td><td class="{_e(p.status)}">{_e(p.status)}</td><td>{len(p.nodes)}</td>'
        f'<td class="names">{_e(", ".join(p.inputs))}</td><td class="names">{_e(", ".join(p.outputs))}</td>'
        f'<td class="names"><details><summary>{len(p.nodes)} node(s)</summary>{_e(", ".join(p.nodes))}</details></td></tr>'
        for p in parts)


def partitions_section(parts: Sequence[Partition]) -> str:
    """The partition picture and a table labelling every partition in full."""
    return (f"<h2>Partitions</h2>{partition_svg(parts)}"
            '<table class="partitions"><tr><th>id</th><th>status</th><th>node count</th><th>inputs</th><th>outputs</th>'
            f"<th>nodes</th></tr>{_partition_rows(parts)}</table>")


def source_cell(source: Any) -> str:
    """A node's source: the short line, the full stack (where recorded) unfolding below it."""
    if source is None:
        return '<td class="source"></td>'
    frames = "".join(f"{_e(f.file)}:{f.line} in {_e(f.function)}\n    {_e(f.code)}\n" for f in source.frames)
    stack = f"<details><summary>stack</summary><pre>{frames}</pre></details>" if frames else ""
    return f'<td class="source">{_e(source.line())}{stack}</td>'


def _node_rows(nodes: Sequence[Any]) -> str:
    return "".join(f'<tr><td>{_e(n.name)}</td><td>{_e(n.op)}</td><td class="{_e(n.status)}">{_e(n.status)}</td>'
                   f"<td>{_e(n.kind)}</td><td>{_e(n.reason)}</td><td>{_e(n.remedy)}</td>{source_cell(n.source)}</tr>"
                   for n in nodes)


def nodes_section(report: CapabilityReport) -> str:
    """Problem nodes in a table; the supported ones collapsed."""
    head = ("<tr><th>node</th><th>op</th><th>status</th><th>kind</th><th>reason</th><th>remedy</th>"
            "<th>source</th></tr>")
    bad = [n for n in report.nodes if n.status != "supported"]
    good = [n for n in report.nodes if n.status == "supported"]
    out = "<h2>Nodes</h2>" + (f'<table class="problem-nodes">{head}{_node_rows(bad)}</table>' if bad else "<p>no problem nodes</p>")
    if good:
        out += (f"<details><summary>{len(good)} supported node(s)</summary>"
                f'<table class="supported-nodes">{head}{_node_rows(good)}</table></details>')
    return out


def capability_details(report: CapabilityReport) -> str:
    """Everything after the verdict: partitions, build error in full, nodes."""
    bo = report.build
    error = f"<h2>Build error</h2><pre>{_e(bo.error)}</pre>" if bo.error and bo.attempted else ""
    return partitions_section(report.partitions) + error + qdq_section(report.qdq) + nodes_section(report)


def qdq_section(qdq: dict[str, Any] | None) -> str:
    """What the parse and build made of a Q/DQ model's pairs: the summary, then each quantized node's kernel."""
    if not qdq:
        return ""
    rows = "".join(f"<tr><td>{_e(name)}</td><td>{_e(v.get('kernel') or 'not found in the kernel table')}</td>"
                   f"<td>{_e(v.get('type', ''))}</td><td>{_e(', '.join(v.get('input_types', [])))}</td>"
                   f"<td>{_e(', '.join(v.get('weight_types', [])))}</td></tr>" for name, v in qdq.get("nodes", {}).items())
    return ("<h2>Q/DQ</h2>" + "".join(f"<p>{_e(line)}</p>" for line in qdq.get("summary", []))
            + '<table class="qdq-nodes"><tr><th>quantized node</th><th>kernel</th><th>type</th><th>input types</th>'
            f"<th>constant types</th></tr>{rows}</table>")


def capability_section(report: CapabilityReport) -> str:
    """A check's verdict and details, as one HTML fragment."""
    return verdict_section(report.to_json()) + capability_details(report)


def page(title: str, body: str) -> str:
    """A whole self-contained HTML document; ``body`` opens with the verdict section."""
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{_e(title)}</title><style>{_CSS}</style></head>"
            f"<body>{body}</body></html>\n")


def capability_html(report: CapabilityReport) -> str:
    return page(f"TensorRT capability: {report.model}", capability_section(report))


# ---- the run page ---------------------------------------------------------------------------------------------

def _pass_rows(passes: Sequence[dict[str, Any]]) -> str:
    return "".join(f"<tr><td>{_e(p['name'])}</td><td>{_e(p.get('changed', ''))}</td>"
                   f"<td>{_e(', '.join(f'{k}={v}' for k, v in (p.get('stats') or {}).items()))}</td>"
                   f"<td>{_e('; '.join(p.get('notes') or []))}</td><td>{_e(p.get('seconds', ''))}</td></tr>"
                   for p in passes)


def optimize_section(opt: dict[str, Any]) -> str:
    """Passes that changed the model in a table; those that changed nothing collapsed, with their count."""
    passes = opt.get("passes", [])
    changed = [p for p in passes if p.get("changed")]
    idle = [p for p in passes if not p.get("changed")]
    head = "<tr><th>pass</th><th>changed</th><th>stats</th><th>notes</th><th>seconds</th></tr>"
    notes = "".join(f"<p>note: {_e(n)}</p>" for n in opt.get("notes", []))
    out = (f"<h2>Optimize</h2><p>preset <code>{_e(opt.get('preset', ''))}</code>, "
           f"{_e(opt.get('nodes_before', '?'))} &rarr; {_e(opt.get('nodes_after', '?'))} nodes</p>{notes}"
           f'<table class="passes-changed">{head}{_pass_rows(changed)}</table>')
    if idle:
        out += (f'<details class="passes-unchanged"><summary>{len(idle)} pass(es) changed nothing</summary>'
                f"<table>{head}{_pass_rows(idle)}</table></details>")
    return out


def precision_section(precision: dict[str, Any], quantization: dict[str, Any] | None = None) -> str:
    """Every node with the precision it runs in and the rule that put it there; counts first."""
    summary = ", ".join(f"{v} {_e(k)}" for k, v in precision.get("summary", {}).items())
    rules = "".join(f"<tr><td>{_e(k)}</td><td>{v}</td></tr>" for k, v in precision.get("rules", {}).items())
    parts = [f"<h2>Precision per node ({_e(precision.get('mode', ''))})</h2>",
             f"<p>{_e(precision.get('nodes_total', 0))} nodes: {summary}</p>"]
    if quantization:
        val = quantization.get("validation") or {}
        status = val.get("status", "?")
        parts.append(f"<p>calibration: {_e(quantization.get('calibration', ''))}</p>")
        rows = "".join(f"<tr><td>{_e(o['name'])}</td><td>{_fmt(o['cosine'], '.6f')}</td><td>{_fmt(o['rel_l2'], '.4g')}</td>"
                       f"<td>{_fmt(o['top1'], '.3f') if o.get('top1') is not None else '&mdash;'}</td>"
                       f"<td class=\"{'pass' if o['passed'] else 'fail'}\">{'pass' if o['passed'] else 'FAIL'}</td></tr>"
                       for o in val.get("outputs", []))
        parts.append(f'<p>validation against the original: <span class="{_validation_class(status)}">{_e(status)}</span> '
                     f"on {_e(val.get('feeds', ''))}; thresholds: {_e(val.get('thresholds', ''))}</p>"
                     f'<table class="quant-validation"><tr><th>output</th><th>cosine</th><th>rel L2</th><th>top-1</th>'
                     f"<th></th></tr>{rows}</table>")
    parts.append(f'<table class="precision-rules"><tr><th>rule</th><th>nodes</th></tr>{rules}</table>')
    body = "".join(f"<tr><td>{_e(n['node'])}</td><td>{_e(n['op'])}</td><td>{_e(n['precision'])}</td><td>{_e(n['rule'])}</td>"
                   f"<td>{_e(n['reason'])}</td></tr>" for n in precision.get("nodes", []))
    parts.append('<table class="precision-nodes"><tr><th>node</th><th>op</th><th>precision</th><th>rule</th>'
                 f"<th>reason</th></tr>{body}</table>")
    return "".join(parts)


def optimize_html(report: dict[str, Any]) -> str:
    """The ``surgery optimize --html`` page: the passes, then the per-node precision when --precision was given."""
    status = (report.get("quantization") or {}).get("validation", {}).get("status")
    good = status != "failed"
    verdict = (f'<section id="verdict" class="{"good" if good else "bad"}"><h1>Optimize: {"done" if good else "FAILED"}</h1>'
               f"<p><code>{_e(report.get('input', ''))}</code> &rarr; <code>{_e(report.get('output', ''))}</code></p>"
               + (f"<p>quantized model validation: <b>{_e(status)}</b></p>" if status else "") + "</section>")
    body = [verdict, optimize_section(report)]
    if report.get("precision"):
        body.append(precision_section(report["precision"], report.get("quantization")))
    return page(f"onnx-surgery optimize: {report.get('input', '')}", "".join(body))


def load_layers(engine: dict[str, Any]) -> tuple[str, list[dict[str, Any]]] | None:
    """(source, layers) from the ENGINE.layers.json a build wrote, or None when there is none."""
    path = engine.get("layers")
    if not path or not Path(path).is_file():
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return str(data.get("source", "")), list(data.get("layers") or [])


def _layers_table(layers: Sequence[dict[str, Any]]) -> str:
    rows = "".join(f'<tr class="layer"><td>{i}</td><td>{_e(layer.get("name", ""))}</td><td>{_e(layer.get("type", ""))}</td>'
                   f'<td>{_e(layer.get("onnx_node") or "")}</td><td>{_e(layer.get("metadata") or "")}</td></tr>'
                   for i, layer in enumerate(layers))
    return ('<table class="layers"><tr><th>#</th><th>layer</th><th>type</th><th>ONNX node</th><th>metadata</th></tr>'
            f"{rows}</table>")


def engine_section(engine: dict[str, Any]) -> str:
    """The engine: where it is (or why there is none), its notes, and its layers as a table."""
    out = [f"<h2>Engine</h2><p>{_engine_line(engine)}</p>"]
    if engine.get("built"):
        facts = [("build log", engine.get("log", "")), ("layers JSON", engine.get("layers", "")),
                 ("seconds", engine.get("seconds", ""))]
        out.append("<table>" + "".join(f"<tr><th>{k}</th><td>{_e(v)}</td></tr>" for k, v in facts) + "</table>")
    out += [f"<p>note: {_e(n)}</p>" for n in engine.get("notes", [])]
    layers = load_layers(engine) if engine.get("built") else None
    if layers is not None:
        source, rows = layers
        out.append(f"<h3>Layers ({len(rows)}, from the {_e(source or 'unknown source')})</h3>{_layers_table(rows)}")
    elif engine.get("built"):
        out.append("<p>no layer table was written</p>")
    return "".join(out)


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else _e(value)


def validation_section(name: str, val: dict[str, Any]) -> str:
    """One validation's per-output comparison."""
    status = val.get("status", "?")
    rows = "".join(f"<tr><td>{_e(o['name'])}</td><td>{_fmt(o['max_abs'], '.3g')}</td><td>{_fmt(o['max_rel'], '.3g')}</td>"
                   f"<td>{_fmt(o['cosine'], '.6f')}</td><td class=\"{'pass' if o['passed'] else 'fail'}\">"
                   f"{'pass' if o['passed'] else 'FAIL'}</td></tr>" for o in val.get("outputs", []))
    skipped = f"<p>skipped: {_e(val['skipped'])}</p>" if val.get("skipped") else ""
    table = (f"<table><tr><th>output</th><th>max abs</th><th>max rel</th><th>cosine</th><th></th></tr>{rows}</table>"
             if rows else "")
    return (f'<h2>Validation: {_e(name)} &mdash; <span class="{_validation_class(status)}">{_e(status)}</span></h2>'
            f"{skipped}{table}")


def run_html(run_report: dict[str, Any], capability: CapabilityReport | None) -> str:
    """The ``surgery run`` page: verdict, then optimize, check details, engine, validations."""
    check = run_report.get("check") or (capability.to_json() if capability else None)
    validation = run_report.get("validation") or {}
    engine = run_report.get("engine") or {}
    body = []
    if check is not None:
        body.append(verdict_section(check, ok=bool(run_report.get("ok")), engine=engine, validation=validation,
                                    model=run_report.get("model")))
    else:
        body.append('<section id="verdict" class="bad"><h1>Verdict: FAILED</h1><p>the check did not run</p></section>')
    body.append(optimize_section(run_report.get("optimize", {})))
    body.append("<h2>Check of the optimized model</h2>" + (capability_details(capability) if capability else "<p>not run</p>"))
    body.append(engine_section(engine))
    body += [validation_section(name, val) for name, val in validation.items()]
    return page(f"onnx-surgery run: {run_report.get('model', '')}", "".join(body))
