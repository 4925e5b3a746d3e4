"""Batch targets: a named combination of preset, emit, precision, backend and profile.

A targets file is TOML, one table per target::

    [targets.fp32]
    preset = "trt"          # a preset name (default: trt)
    emit = "onnx"           # onnx | plugin | ort (default: onnx)
    precision = "fp32"      # fp32 | fp16 | bf16 (default: fp32; fp16/bf16 add convert-precision)
    backend = "auto"        # auto | tensorrt | tensorrt-rtx | static (default: auto)
    profile = "derived"     # derived | opt | { input_shapes = "..." } | { min_shapes = [...], opt_shapes = [...], max_shapes = [...] }

``profile = "derived"`` is what ``surgery run`` does (the spec's shapes are the opt point, ranges are
derived); ``"opt"`` builds for the opt point alone (min = opt = max); a table gives the shapes as
``--input-shapes`` / ``--min/--opt/--max-shapes`` spell them (every model of the batch must have those inputs).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from converter.trt.backends import BACKEND_CHOICES
from surgery.errors import UserInputError

try:
    import tomllib as _toml
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ModuleNotFoundError:
        _toml = None  # type: ignore[assignment]

EMITS = ("onnx", "plugin", "ort")
PRECISIONS = ("fp32", "fp16", "bf16")
PROFILE_WORDS = ("derived", "opt")
_SHAPE_KEYS = ("input_shapes", "min_shapes", "opt_shapes", "max_shapes")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Target:
    name: str
    preset: str = "trt"
    emit: str = "onnx"
    precision: str = "fp32"
    backend: str = "auto"
    profile: str | dict[str, Any] = "derived"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        profile = self.profile if isinstance(self.profile, str) else ", ".join(f"{k}={v}" for k, v in sorted(self.profile.items()))
        return f"preset {self.preset}, emit {self.emit}, {self.precision}, backend {self.backend}, profile {profile}"


DEFAULT_TARGETS = (Target("fp32"), Target("fp16", precision="fp16"))


def load_targets(path: str | Path) -> list[Target]:
    """The targets of a TOML file, in file order; every error is a one-line ``UserInputError``."""
    path = Path(path)
    if _toml is None:
        raise UserInputError("--targets needs Python 3.11+ (tomllib) or the 'tomli' package")
    try:
        data = _toml.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"{path}: no such targets file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: cannot read targets file ({exc})") from None
    except _toml.TOMLDecodeError as exc:
        raise UserInputError(f"{path}: invalid TOML: {str(exc).splitlines()[0]}") from None
    extra = sorted(set(data) - {"targets"})
    if extra:
        raise UserInputError(f"{path}: unknown top-level key '{extra[0]}' (expected [targets.NAME] tables)")
    tables = data.get("targets")
    if not isinstance(tables, dict) or not tables:
        raise UserInputError(f"{path}: no targets (expected at least one [targets.NAME] table)")
    return [parse_target(name, table, str(path)) for name, table in tables.items()]


def parse_target(name: str, table: Any, where: str) -> Target:
    """One target from its TOML table, checked."""
    here = f"{where}: targets.{name}"
    if not _NAME.fullmatch(name):
        raise UserInputError(f"{here}: a target name takes letters, digits, '_', '-' and '.' only")
    if not isinstance(table, dict):
        raise UserInputError(f"{here}: expected a table")
    known = {"preset", "emit", "precision", "backend", "profile"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise UserInputError(f"{here}: unknown key '{unknown[0]}' (keys: {', '.join(sorted(known))})")
    values = {k: table[k] for k in ("preset", "emit", "precision", "backend") if k in table}
    for key, value in values.items():
        if not isinstance(value, str):
            raise UserInputError(f"{here}.{key}: expected a string, got {value!r}")
    _choice(here, "emit", values.get("emit", "onnx"), EMITS)
    _choice(here, "precision", values.get("precision", "fp32"), PRECISIONS)
    _choice(here, "backend", values.get("backend", "auto"), BACKEND_CHOICES)
    from surgery.registry import list_presets

    presets = list_presets()
    if presets and values.get("preset", "trt") not in presets:
        raise UserInputError(f"{here}.preset: unknown preset '{values['preset']}' (presets: {', '.join(presets)})")
    return Target(name, **values, profile=_profile(here, table.get("profile", "derived")))


def _choice(here: str, key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserInputError(f"{here}.{key}: '{value}' is not one of {', '.join(choices)}")


def _profile(here: str, value: Any) -> str | dict[str, Any]:
    if isinstance(value, str):
        _choice(here, "profile", value, PROFILE_WORDS)
        return value
    if not isinstance(value, dict) or not value:
        raise UserInputError(f"{here}.profile: expected 'derived', 'opt' or a table of {', '.join(_SHAPE_KEYS)}")
    unknown = sorted(set(value) - set(_SHAPE_KEYS))
    if unknown:
        raise UserInputError(f"{here}.profile: unknown key '{unknown[0]}' (keys: {', '.join(_SHAPE_KEYS)})")
    if "input_shapes" in value and len(value) > 1:
        raise UserInputError(f"{here}.profile: give either input_shapes or min/opt/max_shapes, not both")
    out: dict[str, Any] = {}
    for key, shapes in value.items():
        listed = [shapes] if isinstance(shapes, str) and key != "input_shapes" else shapes
        if key == "input_shapes" and not isinstance(shapes, str):
            raise UserInputError(f"{here}.profile.input_shapes: expected a string such as \"x:[1,3,224,224]\"")
        if key != "input_shapes" and not (isinstance(listed, list) and all(isinstance(s, str) for s in listed)):
            raise UserInputError(f"{here}.profile.{key}: expected a string or a list of strings (one per profile)")
        _parse_check(f"{here}.profile.{key}", [shapes] if key == "input_shapes" else listed)
        out[key] = listed
    return out


def _parse_check(where: str, texts: list[str]) -> None:
    from surgery.shapes import parse_shapes

    for text in texts:
        try:
            parse_shapes(text)
        except UserInputError as exc:
            raise UserInputError(f"{where}: {exc}") from None

