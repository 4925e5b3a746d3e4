"""Check every output path before any work, so that nothing a user has is overwritten or lost.

A command names its inputs (models, with the external-data files they reference) and its outputs
(files and folders); ``check_outputs`` refuses, with one line, an output that is an input, that two
outputs share, or that cannot be written (missing folder, a regular file on the way, a name too long).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import onnx
from onnx import external_data_helper as ext

from surgery.errors import UserInputError


def model_files(model_path: Path, model: onnx.ModelProto | None = None) -> set[Path]:
    """The model file and every external-data file it references, resolved."""
    model_path = Path(model_path).resolve()
    files = {model_path}
    if model is None:
        try:
            model = onnx.load_model(str(model_path), load_external_data=False)
        except Exception:  # not a model: the loader will say so
            return files
    for t in ext._get_all_tensors(model):
        if ext.uses_external_data(t):
            try:
                location = ext.ExternalDataInfo(t).location
            except ValueError:  # a bad offset or length: the loader will say so
                continue
            if location:
                files.add((model_path.parent / location).resolve())
    return files


def check_outputs(protected: Iterable[Path], files: Mapping[str, Path | str | None] = {},
                  folders: Mapping[str, Path | str | None] = {}, *, allow_overwrite: Iterable[Path] = ()) -> None:
    """Raise ``UserInputError`` unless every output can be written without touching an input.

    Args:
        protected: input files (models and their external data) that must stay as they are.
        files: option name -> output file (None: not requested).
        folders: option name -> output folder, created if missing (its parent must exist).
        allow_overwrite: inputs an output may replace (``--in-place``).
    """
    keep = {Path(p).resolve() for p in protected} - {Path(p).resolve() for p in allow_overwrite}
    seen: dict[Path, str] = {}
    for option, raw in list(files.items()) + list(folders.items()):
        if raw is None or raw == "":
            continue
        path = Path(raw)
        _check_name(option, path)
        resolved = path.resolve()
        if resolved in keep:
            raise UserInputError(f"{option} {path}: would overwrite an input of this command")
        if resolved in seen:
            raise UserInputError(f"{option} {path}: is also the {seen[resolved]} output")
        seen[resolved] = option
        if option in folders:
            _check_folder(option, path)
        else:
            _check_file(option, path)


def _check_name(option: str, path: Path) -> None:
    try:
        limit = os.pathconf(path.parent if path.parent.exists() else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    if any(len(part.encode("utf-8", "surrogateescape")) > limit for part in path.parts):
        raise UserInputError(f"{option}: file name too long ({limit} bytes at most): {str(path)[:80]}...")


def _blocking_file(path: Path) -> Path | None:
    """The first regular file among ``path``'s parents (a folder cannot be made under it)."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def _check_writable_folder(option: str, folder: Path, what: str) -> None:
    blocker = _blocking_file(folder / "x")
    if blocker is not None:
        raise UserInputError(f"{option}: {blocker} is a file, not a folder")
    if not folder.exists():
        raise UserInputError(f"{option}: {what} {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserInputError(f"{option}: {what} {folder} is not writable")


def _check_file(option: str, path: Path) -> None:
    if path.is_dir():
        raise UserInputError(f"{option} {path}: is a directory")
    _check_writable_folder(option, path.parent if str(path.parent) else Path("."), "folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserInputError(f"{option} {path}: is not writable")


def _check_folder(option: str, path: Path) -> None:
    if path.exists():
        if not path.is_dir():
            raise UserInputError(f"{option} {path}: is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserInputError(f"{option} {path}: folder is not writable")
        return
    _check_writable_folder(option, path.parent, "parent folder")
