"""Load a ``--plugin-map`` TOML file into the options of the ``map-plugins`` pass.

The file is parsed with ``tomllib`` (Python 3.11+; ``tomli`` on 3.10 when installed), validated by
``passes.map_plugins.parse_plugin_map``, and checked against the plugin catalog: for a TensorRT
plugin the catalog knows, a field it does not list is an error, and field types the user did not
give are filled in from it (so e.g. an integer literal for a float field is written as a float).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from converter.plugins.catalog import catalog_spec
from passes.map_plugins import MapRule, parse_plugin_map
from surgery.errors import UserInputError
from surgery.plugins import get_plugin_spec

try:
    import tomllib as _toml
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ModuleNotFoundError:
        _toml = None  # type: ignore[assignment]


def _typed(rule: MapRule, source: str, index: int) -> MapRule:
    spec = catalog_spec(rule.plugin, rule.version)
    if spec is None:
        ours = get_plugin_spec(rule.plugin)
        spec = ours if ours is not None and ours.version == rule.version else None
    if spec is None:
        return rule
    named = {*rule.attrs.values(), *rule.const_inputs.values(), *rule.fields, *rule.values, *rule.types}
    unknown = sorted(n for n in named if n not in spec.fields)
    if unknown:
        raise UserInputError(f"{source}: map[{index}]: {rule.plugin} v{rule.version} has no field '{unknown[0]}' "
                             f"(fields: {', '.join(spec.fields) or 'none'})")
    types = {**{k: t for k, t in spec.fields.items() if k in named}, **rule.types}
    return replace(rule, types=types)


def load_plugin_map(path: str | Path) -> list[MapRule]:
    """Parse and check the plugin map at ``path``; errors are ``UserInputError`` with one line."""
    path = Path(path)
    if _toml is None:
        raise UserInputError("--plugin-map needs Python 3.11+ (tomllib) or the 'tomli' package")
    try:
        data: Any = _toml.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"{path}: no such plugin map") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: cannot read plugin map ({exc})") from None
    except _toml.TOMLDecodeError as exc:
        raise UserInputError(f"{path}: invalid TOML: {str(exc).splitlines()[0]}") from None
    return [_typed(rule, str(path), i) for i, rule in enumerate(parse_plugin_map(data, str(path)))]
