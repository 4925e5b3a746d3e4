"""Markdown table: does each hostile sample parse and AOT-build with TensorRT-RTX before and after the
replacement passes?

    .venv/bin/python bench/hostile_table.py [--pipeline PIPELINE]

"After" is ``surgery optimize --passes <REPLACE>,cast-unsupported-dtypes,<CLEANUP>``. Parsing and
building run on CPU through TensorRT-RTX (``surgery check``'s classification and build).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from passes import presets  # noqa: E402
from converter.trt.backends import select_backend  # noqa: E402
from converter.trt.capability import CapabilityReport, check_model  # noqa: E402
from converter.cli.main import main as surgery  # noqa: E402

PIPELINE = f"{presets.REPLACE},cast-unsupported-dtypes,{presets.CLEANUP}"
SAMPLES = ROOT / "sample_models"


def _verdict(report: CapabilityReport) -> tuple[str, str]:
    bad = sorted({n.op for n in report.nodes if n.status == "unsupported"})
    unknown = [n for n in report.nodes if n.status == "unknown"]
    if unknown:
        first = unknown[0].detail.strip().splitlines()[0][:60] if unknown[0].detail.strip() else "no message"
        parse = f"no (stopped on an error naming no node: {first})"
    else:
        parse = "yes" if not bad else "no (" + ", ".join(bad) + ")"
    build = {True: "yes", False: "no", None: "—"}[report.build.ok if report.build.attempted else None]
    return parse, build


def _fired(report_path: Path) -> str:
    import json

    data = json.loads(report_path.read_text())
    names = [p["name"] for p in data["passes"] if p["changed"] and p["name"] not in presets.CLEANUP.split(",")]
    return ", ".join(dict.fromkeys(names)) or "—"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default=PIPELINE)
    args = parser.parse_args(argv)
    backend = select_backend("tensorrt-rtx")
    rows = ["| sample | parses before | builds before | parses after | builds after | passes that changed it |",
            "| --- | --- | --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        for model in sorted(SAMPLES.glob("hostile_*.onnx")):
            spec = model.with_suffix(".spec.json")
            before = _verdict(check_model(model, backend, spec_path=spec))
            out, rep = Path(tmp) / model.name, Path(tmp) / (model.stem + ".json")
            with contextlib.redirect_stdout(io.StringIO()):
                code = surgery(["optimize", str(model), "-o", str(out), "--passes", args.pipeline, "--report", str(rep)])
            if code != 0:
                rows.append(f"| {model.stem} | {before[0]} | {before[1]} | optimize failed ({code}) | — | — |")
                continue
            after = _verdict(check_model(out, backend, spec_path=spec))
            rows.append(f"| {model.stem} | {before[0]} | {before[1]} | {after[0]} | {after[1]} | {_fired(rep)} |")
    print(f"TensorRT-RTX {backend.version}, CPU parse + AOT build; after = `surgery optimize --passes {args.pipeline}`\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
