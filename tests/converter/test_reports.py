"""Reports open with the verdict: check's terminal summary, check --json / run's report.json, and the HTML."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator

import pytest

from converter.trt.capability import BuildOutcome, CapabilityReport, NodeStatus
from converter.cli.main import main
from converter.cli.check import render_table
from converter.runtime.partitions import Partition
from converter.report_html import capability_html, run_html
from tests.converter import tiny

SAMPLE = Path(__file__).resolve().parents[2] / "sample_models" / "cnn_ts.onnx"
_VOID = {"br", "meta", "img", "hr", "input", "link", "col", "wbr", "area", "base", "source"}


# ---- a tiny DOM, enough to assert on structure ------------------------------------------------------------------

@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parent: "Element | None" = None
    children: list["Element | str"] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self) -> Iterator["Element"]:
        for c in self.children:
            if isinstance(c, Element):
                yield c
                yield from c.iter()

    def find_all(self, tag: str, cls: str | None = None) -> list["Element"]:
        return [e for e in self.iter() if e.tag == tag and (cls is None or cls in e.attrs.get("class", "").split())]

    def ancestors(self) -> Iterator["Element"]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.cur = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.children.append(el)
        if tag not in _VOID:
            self.cur = el

    def handle_endtag(self, tag: str) -> None:
        node: Element | None = self.cur
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.cur = node.parent

    def handle_data(self, data: str) -> None:
        self.cur.children.append(data)


def parse_html(text: str) -> Element:
    """The document as a tree of Elements."""
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


def headings(doc: Element) -> list[Element]:
    return [e for e in doc.iter() if e.tag in ("h1", "h2", "h3", "h4")]


def data_rows(table: Element) -> list[Element]:
    """The rows of a table that hold data cells (not the header row)."""
    return [tr for tr in table.find_all("tr") if tr.find_all("td")]


# ---- fixtures ---------------------------------------------------------------------------------------------------

def _profiled_report(profile: dict, source: str = "spec file m.spec.json") -> CapabilityReport:
    nodes = [NodeStatus("relu", "Relu", "")]
    parts = [Partition(0, "supported", ["relu"], ["x"], ["y"])]
    build = BuildOutcome(attempted=True, ok=True, profile=profile, profile_source=source)
    return CapabilityReport({"name": "tensorrt-rtx", "version": "1.0"}, "m.onnx", nodes, parts, build)


def _mixed_report() -> CapabilityReport:
    """Two unsupported-op nodes, one foreign-domain node, a hostile name, a partition with many long inputs."""
    nodes = [NodeStatus("a", "Relu", ""), NodeStatus("nz1", "NonZero", ""), NodeStatus("nz2", "NonZero", ""),
             NodeStatus("<script>alert(1)</script>", "LayerNormalization", "com.evil")]
    for n in nodes[1:3]:
        n.mark("unsupported", "unsupported-op", "no NonZero")
        n.remedy = "rewrite-static-nonzero"
    nodes[3].mark("unsupported", "foreign-domain", "a foreign LayerNormalization")
    nodes[3].remedy = "rename the domain"
    inputs = [f"a_very_long_tensor_name_that_must_not_be_truncated_{i}" for i in range(7)]
    parts = [Partition(0, "supported", ["a"], ["x"], ["t"]),
             Partition(1, "unsupported", ["nz1", "nz2", "<script>alert(1)</script>"], inputs, ["out_&_<b>"])]
    build = BuildOutcome(attempted=False, error="skipped: the parser rejected some nodes")
    return CapabilityReport({"name": "static", "version": "1"}, "m.onnx", nodes, parts, build)


def _run_report(tmp_path: Path, n_layers: int) -> dict:
    layers = [{"name": f"layer{i}", "type": "CONVOLUTION", "metadata": f"[ONNX Layer: n{i}]", "onnx_node": f"n{i}"}
              for i in range(n_layers)]
    layers_path = tmp_path / "model.engine.layers.json"
    layers_path.write_text(json.dumps({"source": "network", "layers": layers}))
    check = _profiled_report({"x": ([1, 3, 8, 8], [1, 3, 8, 8], [4, 3, 8, 8])}).to_json()
    passes = [{"name": "fold-constants", "changed": 3, "stats": {"folded": 3}},
              {"name": "idle-one", "changed": 0}, {"name": "idle-two", "changed": 0}, {"name": "idle-three", "changed": 0}]
    return {"ok": True, "supported": True, "build": check["build"], "unsupported": [], "model": "m.onnx",
            "engine": {"built": True, "path": str(tmp_path / "model.engine"), "bytes": 10, "layers": str(layers_path)},
            "validation": {"optimized_vs_original": {"status": "passed", "outputs": []},
                           "engine_vs_original": {"status": "skipped", "skipped": "no GPU", "outputs": []}},
            "optimize": {"preset": "trt", "nodes_before": 5, "nodes_after": 4, "passes": passes}, "check": check}


# ---- JSON -------------------------------------------------------------------------------------------------------

def test_check_json_opens_with_the_verdict(tmp_path):
    path = tiny.save(tiny.with_nonzero(), tmp_path, "nz")
    out = tmp_path / "nz.json"
    assert main(["check", path, "--backend", "static", "--json", str(out)]) == 1
    data = json.loads(out.read_text())
    assert list(data)[:3] == ["supported", "build", "unsupported"]
    assert list(data)[3:] == ["model", "backend", "nodes", "partitions"]
    assert data["supported"] is False
    [group] = data["unsupported"]
    assert group["kind"] == "unsupported-op" and group["nodes"] == ["nonzero"] and group["ops"] == ["NonZero"]
    assert group["count"] == 1 and group["remedies"] and all(group["remedies"])
    assert list(data["build"]["profile"]) == ["source", "shapes"]


def test_unsupported_groups_by_kind_with_unique_remedies():
    groups = _mixed_report().to_json()["unsupported"]
    assert [(g["kind"], g["count"], g["nodes"]) for g in groups] == [
        ("unsupported-op", 2, ["nz1", "nz2"]), ("foreign-domain", 1, ["<script>alert(1)</script>"])]
    assert groups[0]["remedies"] == ["rewrite-static-nonzero"] and groups[1]["remedies"] == ["rename the domain"]


def test_run_report_json_opens_with_the_verdict(tmp_path):
    model = tiny.save(tiny.mlp(), tmp_path, "mlp")
    out = tmp_path / "run"
    assert main(["run", model, "-o", str(out), "--backend", "static"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report)[:7] == ["ok", "supported", "build", "engine", "unsupported", "validation", "latency"]
    assert list(report)[7:] == ["model", "backend", "optimize", "check"]
    assert report["latency"] == {"status": "skipped", "skipped": "no engine: no TensorRT library installed (static backend)"}
    assert report["ok"] is True and report["supported"] is True and report["unsupported"] == []
    assert report["build"] == report["check"]["build"]
    assert list(report["check"])[:2] == ["supported", "build"]


# ---- terminal summary -------------------------------------------------------------------------------------------

def test_render_table_first_lines_are_the_verdict():
    lines = render_table(_mixed_report()).splitlines()
    assert lines[0] == "verdict NOT SUPPORTED"
    assert lines[1] == "build   not attempted: skipped: the parser rejected some nodes"
    assert lines[2] == "problems 3 node(s), by kind:"
    assert lines[3].startswith("  unsupported-op (unsupported, 2 node(s), op NonZero): nz1, nz2")
    assert lines[4] == "    remedy: rewrite-static-nonzero"
    assert lines[5].startswith("  foreign-domain (unsupported, 1 node(s)")
    assert lines[6] == "    remedy: rename the domain"
    assert lines[7] == ""  # the details follow the verdict
    assert lines[-1].startswith("result  NOT SUPPORTED")


def test_render_table_shows_the_profile_per_input():
    profile = {"x": ([1, 3, 32, 32], [2, 3, 32, 32], [4, 3, 32, 32]), "mask": ([1, 8], [1, 8], [1, 8])}
    lines = render_table(_profiled_report(profile)).splitlines()
    assert lines[:5] == ["verdict SUPPORTED", "build   ok", "profile spec file m.spec.json",
                         "  x: min 1x3x32x32, opt 2x3x32x32, max 4x3x32x32", "  mask: 1x8"]
    assert lines[5] == ""


def test_render_table_on_a_real_check(tmp_path, capsys):
    path = tiny.save(tiny.with_nonzero(), tmp_path, "nz")
    assert main(["check", path, "--backend", "static"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "verdict NOT SUPPORTED"
    assert any(line.startswith("  unsupported-op") and "nonzero" in line for line in lines[:5])
    assert any(line.startswith("    remedy: ") for line in lines[:6])


# ---- HTML -------------------------------------------------------------------------------------------------------

def test_check_html_opens_with_the_verdict_section():
    doc = parse_html(capability_html(_mixed_report()))
    first = headings(doc)[0]
    assert first.tag == "h1" and first.text() == "Verdict: NOT SUPPORTED"
    section = next(first.ancestors())
    assert section.tag == "section" and section.attrs["id"] == "verdict"
    body = doc.find_all("body")[0]
    assert next(c for c in body.children if isinstance(c, Element)) is section  # nothing before the verdict
    kinds = section.find_all("table", "unsupported-kinds")[0]
    cells = [[td.text() for td in tr.find_all("td")] for tr in data_rows(kinds)]
    assert [c[0] for c in cells] == ["unsupported-op", "foreign-domain"]
    assert cells[0][2] == "2" and cells[0][5] == "rewrite-static-nonzero"


def test_check_html_escapes_model_strings_and_labels_partitions_in_full():
    text = capability_html(_mixed_report())
    assert "<script" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "out_&amp;_&lt;b&gt;" in text
    table = parse_html(text).find_all("table", "partitions")[0]
    rows = [[td.text() for td in tr.find_all("td")] for tr in data_rows(table)]
    assert rows[1][:3] == ["#1", "unsupported", "3"]
    assert rows[1][3] == ", ".join(f"a_very_long_tensor_name_that_must_not_be_truncated_{i}" for i in range(7))
    assert rows[1][4] == "out_&_<b>"


def test_check_html_profile_table():
    profile = {"x": ([1, 3, 32, 32], [2, 3, 32, 32], [4, 3, 32, 32]), "mask": ([1, 8], [1, 8], [1, 8])}
    doc = parse_html(capability_html(_profiled_report(profile)))
    verdict = doc.find_all("section")[0]
    rows = [[td.text() for td in tr.find_all("td")] for tr in data_rows(verdict.find_all("table", "profile")[0])]
    assert rows == [["x", "min 1x3x32x32, opt 2x3x32x32, max 4x3x32x32"], ["mask", "1x8"]]
    assert "spec file m.spec.json" in verdict.text() and "build: ok" in verdict.text()


def test_run_html_verdict_passes_and_layers(tmp_path):
    doc = parse_html(run_html(_run_report(tmp_path, n_layers=7), None))
    first = headings(doc)[0]
    assert first.text() == "Verdict: PASSED" and next(first.ancestors()).attrs["id"] == "verdict"
    verdict = next(first.ancestors())
    summary = [[td.text() for td in tr.find_all("td")] for tr in data_rows(verdict.find_all("table", "validation-summary")[0])]
    assert [r[:2] for r in summary] == [["optimized_vs_original", "passed"], ["engine_vs_original", "skipped"]]
    changed = doc.find_all("table", "passes-changed")[0]
    assert [tr.find_all("td")[0].text() for tr in data_rows(changed)] == ["fold-constants"]
    [idle] = doc.find_all("details", "passes-unchanged")
    assert idle.find_all("summary")[0].text() == "3 pass(es) changed nothing"
    assert [tr.find_all("td")[0].text() for tr in data_rows(idle)] == ["idle-one", "idle-two", "idle-three"]
    [layers] = doc.find_all("table", "layers")
    assert len(data_rows(layers)) == 7 == len(layers.find_all("tr", "layer"))
    assert data_rows(layers)[3].find_all("td")[3].text() == "n3"


def test_run_html_without_layers_json_says_so(tmp_path):
    report = _run_report(tmp_path, n_layers=2)
    Path(report["engine"]["layers"]).unlink()
    doc = parse_html(run_html(report, None))
    assert not doc.find_all("table", "layers") and "no layer table was written" in doc.text()


@pytest.mark.trt
@pytest.mark.skipif(not SAMPLE.is_file(), reason="sample_models/cnn_ts.onnx not generated")
def test_real_run_html_layers_match_the_layers_json(tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(SAMPLE), "-o", str(out), "--backend", "tensorrt-rtx"]) == 0
    report = json.loads((out / "report.json").read_text())
    layers = json.loads(Path(report["engine"]["layers"]).read_text())["layers"]
    doc = parse_html((out / "report.html").read_text())
    assert headings(doc)[0].text() == "Verdict: PASSED"
    [table] = doc.find_all("table", "layers")
    assert len(data_rows(table)) == len(layers) > 0
    assert [tr.find_all("td")[1].text() for tr in data_rows(table)] == [layer["name"] for layer in layers]
    assert doc.find_all("details", "passes-unchanged")
