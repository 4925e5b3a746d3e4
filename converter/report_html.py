"""Self-contained offline HTML reports (inline CSS and an inline SVG partition picture, no assets)."""
from __future__ import annotations

import html
import json
from typing import Any, Sequence

from converter.capability import CapabilityReport
from converter.partitions import Partition

_COLORS = {"supported": "#4caf50", "unsupported": "#e53935", "unknown": "#9e9e9e"}
_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}th{background:#f3f3f3}
.supported{color:#2e7d32}.unsupported{color:#c62828;font-weight:bold}.unknown{color:#757575}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}h2{margin-top:1.5em}"""


def _e(text: Any) -> str:
    return html.escape(str(text))


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
        first = p.nodes[0] if p.nodes else ""
        out.append(f'<g><title>{_e(", ".join(p.nodes[:30]))}{" ..." if len(p.nodes) > 30 else ""}</title>'
                   f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6" fill="{color}" opacity="0.85"/>'
                   f'<text x="{x + 8}" y="{y + 20}" font-size="13" fill="white">#{p.id} {_e(p.status)}</text>'
                   f'<text x="{x + 8}" y="{y + 40}" font-size="11" fill="white">{len(p.nodes)} node(s): {_e(first[:14])}</text></g>')
    out.append("</svg>")
    return "\n".join(out)


def capability_section(report: CapabilityReport) -> str:
    b = report.backend
    verdict = "SUPPORTED" if report.supported else "NOT SUPPORTED"
    rows = "".join(
        f'<tr><td>{_e(n.name)}</td><td>{_e(n.op)}</td><td class="{_e(n.status)}">{_e(n.status)}</td>'
        f"<td>{_e(n.kind)}</td><td>{_e(n.reason)}</td><td>{_e(n.remedy)}</td></tr>"
        for n in sorted(report.nodes, key=lambda n: n.status == "supported"))
    parts = "".join(f"<tr><td>{p.id}</td><td class=\"{_e(p.status)}\">{_e(p.status)}</td><td>{len(p.nodes)}</td>"
                    f"<td>{_e(', '.join(p.inputs))}</td><td>{_e(', '.join(p.outputs))}</td></tr>" for p in report.partitions)
    bo = report.build
    build = "not attempted" + (f": {bo.error}" if bo.error else "") if not bo.attempted else ("ok" if bo.ok else f"FAILED: {bo.error}")
    return (f"<p>Model <code>{_e(report.model)}</code> &middot; backend <b>{_e(b['name'])} {_e(b['version'])}</b> &middot; "
            f"<b>{verdict}</b></p><h2>Partitions</h2>{partition_svg(report.partitions)}"
            f"<table><tr><th>#</th><th>status</th><th>nodes</th><th>inputs</th><th>outputs</th></tr>{parts}</table>"
            f"<h2>Engine build</h2><p>{_e(build)}</p>"
            f"<h2>Nodes</h2><table><tr><th>node</th><th>op</th><th>status</th><th>kind</th><th>reason</th><th>remedy</th></tr>"
            f"{rows}</table>")


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{_e(title)}</title><style>{_CSS}</style></head>"
            f"<body><h1>{_e(title)}</h1>{body}</body></html>\n")


def capability_html(report: CapabilityReport) -> str:
    return page("TensorRT capability", capability_section(report))


def run_html(run_report: dict[str, Any], capability: CapabilityReport | None) -> str:
    """The ``surgery run`` page: optimize summary, capability, engine, validations."""
    opt = run_report.get("optimize", {})
    passes = "".join(f"<tr><td>{_e(p['name'])}</td><td>{p['changed']}</td></tr>" for p in opt.get("passes", []))
    body = [f"<h2>Optimize</h2><p>preset <code>{_e(opt.get('preset', ''))}</code>, "
            f"{_e(opt.get('nodes_before', '?'))} &rarr; {_e(opt.get('nodes_after', '?'))} nodes</p>"
            f"<table><tr><th>pass</th><th>changed</th></tr>{passes}</table>"]
    body.append("<h2>Check</h2>" + (capability_section(capability) if capability else "<p>not run</p>"))
    body.append(f"<h2>Engine</h2><pre>{_e(json.dumps(run_report.get('engine'), indent=1))}</pre>")
    for name, val in (run_report.get("validation") or {}).items():
        status = val.get("status", "?")
        rows = "".join(f"<tr><td>{_e(o['name'])}</td><td>{o['max_abs']:.3g}</td><td>{o['max_rel']:.3g}</td>"
                       f"<td>{o['cosine']:.6f}</td><td>{'pass' if o['passed'] else 'FAIL'}</td></tr>" for o in val.get("outputs", []))
        skipped = f"<p>skipped: {_e(val['skipped'])}</p>" if val.get("skipped") else ""
        body.append(f"<h2>Validation: {_e(name)} &mdash; {_e(status)}</h2>{skipped}"
                    f"<table><tr><th>output</th><th>max abs</th><th>max rel</th><th>cosine</th><th></th></tr>{rows}</table>")
    return page("onnx-surgery run report", "".join(body))
