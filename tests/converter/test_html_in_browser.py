"""The HTML reports in a real headless Chromium: the DOM it builds opens with the verdict and holds the tables."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from converter.cli.main import main
from tests.converter import tiny
from tests.converter.test_reports import Element, data_rows, headings, parse_html

SAMPLE = Path(__file__).resolve().parents[2] / "sample_models" / "cnn_ts.onnx"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium or chromium-browser binary on PATH "
                                                         "(Debian: apt-get install -y chromium)")


def dump_dom(page: Path, profile_dir: Path) -> Element:
    """The DOM headless Chromium builds from ``page``, parsed."""
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           f"--user-data-dir={profile_dir}", "--dump-dom", page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "<body" in done.stdout, f"no DOM dumped: {done.stderr[-2000:]}"
    return parse_html(done.stdout)


def _verdict(doc: Element) -> Element:
    first = headings(doc)[0]
    section = next(first.ancestors())
    assert section.tag == "section" and section.attrs.get("id") == "verdict"
    return section


@pytest.mark.trt
@pytest.mark.skipif(not SAMPLE.is_file(), reason="sample_models/cnn_ts.onnx not generated")
def test_run_report_in_chromium(tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(SAMPLE), "-o", str(out), "--backend", "tensorrt-rtx"]) == 0
    report = json.loads((out / "report.json").read_text())
    doc = dump_dom(out / "report.html", tmp_path / "chromium")
    assert headings(doc)[0].text() == "Verdict: PASSED"
    verdict = _verdict(doc)
    assert "build: ok" in verdict.text() and "engine: built" in verdict.text()
    profile_rows = data_rows(verdict.find_all("table", "profile")[0])
    assert [tr.find_all("td")[0].text() for tr in profile_rows] == list(report["build"]["profile"]["shapes"])
    statuses = {tr.find_all("td")[0].text(): tr.find_all("td")[1].text()
                for tr in data_rows(verdict.find_all("table", "validation-summary")[0])}
    assert statuses == {name: v["status"] for name, v in report["validation"].items()}
    layers = json.loads(Path(report["engine"]["layers"]).read_text())["layers"]
    [table] = doc.find_all("table", "layers")
    assert len(data_rows(table)) == len(layers) > 0
    idle = doc.find_all("details", "passes-unchanged")[0]
    n_idle = sum(1 for p in report["optimize"]["passes"] if not p["changed"])
    assert idle.find_all("summary")[0].text() == f"{n_idle} pass(es) changed nothing"
    parts = data_rows(doc.find_all("table", "partitions")[0])
    assert len(parts) == len(report["check"]["partitions"])


def test_check_report_in_chromium(tmp_path):
    path = tiny.save(tiny.with_nonzero(), tmp_path, "nz")
    page = tmp_path / "nz.html"
    assert main(["check", path, "--backend", "static", "--html", str(page)]) == 1
    doc = dump_dom(page, tmp_path / "chromium")
    assert headings(doc)[0].text() == "Verdict: NOT SUPPORTED"
    kinds = data_rows(_verdict(doc).find_all("table", "unsupported-kinds")[0])
    [row] = [[td.text() for td in tr.find_all("td")] for tr in kinds]
    assert row[0] == "unsupported-op" and row[3] == "NonZero" and row[4] == "nonzero" and row[5]
    parts = [[td.text() for td in tr.find_all("td")] for tr in data_rows(doc.find_all("table", "partitions")[0])]
    assert [p[:3] for p in parts] == [["#0", "supported", "1"], ["#1", "unsupported", "1"], ["#2", "supported", "2"]]
    assert doc.find_all("table", "problem-nodes") and doc.find_all("svg")
