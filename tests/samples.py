"""The committed sample exports and their input specs."""
from __future__ import annotations

import json
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"


def manifest() -> list[dict]:
    return json.loads((SAMPLES / "manifest.json").read_text())


def sample_names() -> list[str]:
    return sorted(e["name"] for e in manifest())


def sample_path(name: str) -> Path:
    return SAMPLES / f"{name}.onnx"


def spec_path(name: str) -> Path:
    return SAMPLES / f"{name}.spec.json"
