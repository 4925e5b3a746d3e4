"""Batch items: the models named on the command line, crossed with the targets, each with its fingerprint.

INPUTS are folders (their ``*.onnx``), globs (``zoo/**/*.onnx``), model files, or list files: one
entry per line (a model, folder or glob, relative to the list file), ``#`` comments, and optionally a
spec after the model (``model.onnx specs/model.json``, quoted as a shell would where a path has
spaces). A model's spec is the one its list line names, else its sibling ``<stem>.spec.json``.

An item's fingerprint covers what decides its result: the model's bytes (external data included),
the spec's bytes, the target's settings and the versions of the tools (onnx-surgery's source, onnx,
onnxruntime, onnx-graphsurgeon, polygraphy and the TensorRT backend the target selects).
"""
from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from converter.batch.targets import Target
from converter.trt.profiles import spec_path_for
from surgery.errors import UserInputError
from surgery.paths import model_files

RECORD = "item.json"  # an item's result, written last (atomically) in its folder
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class ModelEntry:
    name: str  # unique within the batch: the file's stem, with parent folders prefixed where stems collide
    path: Path
    spec: Path | None


@dataclass(frozen=True)
class Item:
    model: ModelEntry
    target: Target
    out_dir: Path
    fingerprint: str
    backend: str  # what the target's --backend selects here (tensorrt, tensorrt-rtx or static)

    @property
    def key(self) -> tuple[str, str]:
        return self.model.name, self.target.name

    def to_json(self) -> dict[str, Any]:
        """What an item process needs (plain JSON: it crosses process and Ray boundaries)."""
        return {"model": self.model.name, "path": str(self.model.path), "spec": str(self.model.spec) if self.model.spec else None,
                "target": self.target.to_json(), "out_dir": str(self.out_dir), "fingerprint": self.fingerprint,
                "backend": self.backend}


def collect_models(inputs: Sequence[str], exclude: Path | None = None) -> list[ModelEntry]:
    """Every model the INPUTS name, once each, sorted by path; files under ``exclude`` (the output folder) are left out."""
    if not inputs:
        raise UserInputError("no INPUTS given (folders, globs, models or list files)")
    found: dict[Path, Path | None] = {}
    for arg in inputs:
        for path, spec in _expand(arg, Path.cwd(), None):
            if found.get(path) is None:
                found[path] = spec
    skip = exclude.resolve() if exclude is not None else None
    paths = sorted(p for p in found if skip is None or not p.is_relative_to(skip))
    if not paths:
        raise UserInputError(f"no .onnx models found in {', '.join(inputs)}")
    names = unique_names(paths)
    return [ModelEntry(names[p], p, found[p] or spec_path_for(p, None)) for p in paths]


def _expand(arg: str, base: Path, list_file: Path | None) -> list[tuple[Path, Path | None]]:
    where = f"{list_file}: " if list_file else ""
    path = Path(arg) if Path(arg).is_absolute() else base / arg
    if _GLOB_CHARS & set(arg):
        matches = sorted(Path(m).resolve() for m in glob.glob(str(path), recursive=True) if m.endswith(".onnx"))
        if not matches:
            raise UserInputError(f"{where}{arg}: the pattern matches no .onnx file")
        return [(m, None) for m in matches if m.is_file()]
    if path.is_dir():
        models = sorted(p.resolve() for p in path.glob("*.onnx") if p.is_file())
        if not models:
            raise UserInputError(f"{where}{arg}: the folder holds no .onnx file")
        return [(m, None) for m in models]
    if not path.is_file():
        raise UserInputError(f"{where}{arg}: no such model, folder or list file")
    if path.suffix == ".onnx":
        return [(path.resolve(), None)]
    if list_file is not None:
        raise UserInputError(f"{where}{arg}: a list file cannot name another list file")
    return _read_list(path)


def _read_list(path: Path) -> list[tuple[Path, Path | None]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: cannot read the list file ({exc})") from None
    out: list[tuple[Path, Path | None]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise UserInputError(f"{path}:{number}: {exc}") from None
        if len(words) > 2:
            raise UserInputError(f"{path}:{number}: expected MODEL [SPEC], got {len(words)} fields")
        entries = _expand(words[0], path.parent, path)
        if len(words) == 2:
            spec = (path.parent / words[1]).resolve()
            if len(entries) != 1 or _GLOB_CHARS & set(words[0]):
                raise UserInputError(f"{path}:{number}: a spec goes with one model file, not a folder or pattern")
            if not spec.is_file():
                raise UserInputError(f"{path}:{number}: {words[1]}: no such spec file")
            entries = [(entries[0][0], spec)]
        out += entries
    if not out:
        raise UserInputError(f"{path}: the list file names no model")
    return out


def unique_names(paths: Sequence[Path]) -> dict[Path, str]:
    """Each path's stem; where stems collide, as many parent folder names as make them differ, joined by '-'."""
    names: dict[Path, str] = {}
    for depth in range(1, max(len(p.parts) for p in paths) + 1):
        pending = [p for p in paths if p not in names]
        if not pending:
            break
        def label(p: Path) -> str:
            parents = [part for part in p.parent.parts[-(depth - 1):]] if depth > 1 else []
            return "-".join([*parents, p.stem])
        counts: dict[str, int] = {}
        for p in paths:
            counts[label(p)] = counts.get(label(p), 0) + 1
        for p in pending:
            if counts[label(p)] == 1:
                names[p] = label(p)
    if len(set(names.values())) != len(paths):
        raise UserInputError("two models would share an output folder name; rename one of them")
    return names


def file_digest(paths: Iterable[Path]) -> str:
    """sha256 over the files' names (relative to the first one's folder) and bytes, in name order."""
    paths = sorted(paths)
    h = hashlib.sha256()
    root = paths[0].parent
    for p in paths:
        h.update(str(p.relative_to(root) if p.is_relative_to(root) else p).encode() + b"\0")
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def source_digest() -> str:
    """sha256 of onnx-surgery's own Python sources (surgery/, passes/, converter/): any code change is a new tool."""
    import converter
    import passes
    import surgery

    roots = [Path(pkg.__file__).parent for pkg in (surgery, passes, converter)]
    files = sorted((p.relative_to(root.parent).as_posix(), p) for root in roots for p in root.rglob("*.py"))
    h = hashlib.sha256()
    for name, p in files:
        h.update(name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:12]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def tool_versions(backends: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The tools an item's result depends on; ``backends`` maps a target's --backend to what it selected."""
    import onnxruntime

    return {"onnx-surgery": f"{_version('onnx-surgery') or '?'}+src.{source_digest()}", "onnx": _version("onnx"),
            "onnxruntime": onnxruntime.__version__, "onnx-graphsurgeon": _version("onnx-graphsurgeon"),
            "polygraphy": _version("polygraphy"), "backends": dict(sorted(backends.items()))}


def resolve_backends(targets: Sequence[Target]) -> dict[str, dict[str, str]]:
    """What each target's --backend selects here (name and version), for fingerprints and the summary."""
    from converter.trt.backends import select_backend

    return {name: select_backend(name).describe() for name in sorted({t.backend for t in targets})}


def make_items(models: Sequence[ModelEntry], targets: Sequence[Target], out_dir: Path,
               tools: dict[str, Any]) -> list[Item]:
    """Every model x target, sorted by (model, target), each with its folder ``OUT/<model>/<target>`` and fingerprint."""
    common = {k: v for k, v in tools.items() if k != "backends"}
    items = []
    for m in models:
        model_hash = file_digest(model_files(m.path))
        spec_hash = file_digest([m.spec]) if m.spec else None
        for t in targets:
            inputs = {"model": model_hash, "spec": spec_hash, "target": {k: v for k, v in t.to_json().items() if k != "name"},
                      "tools": {**common, "backend": tools["backends"][t.backend]}}
            digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
            items.append(Item(m, t, out_dir / m.name / t.name, digest, tools["backends"][t.backend]["name"]))
    return sorted(items, key=lambda i: i.key)


def load_record(item: Item) -> dict[str, Any] | None:
    """The item's recorded result when it is there and was made from the same inputs, else None."""
    try:
        record = json.loads((item.out_dir / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("fingerprint") == item.fingerprint else None
