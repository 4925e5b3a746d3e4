"""Input specs for checks, builds and validation: explicit file, the model's sibling spec, or derived."""
from __future__ import annotations

import logging
from pathlib import Path

import onnx

from surgery.errors import UserInputError
from converter.runtime.numerics import InputSpec, load_spec, spec_from_model

log = logging.getLogger(__name__)


def resolve_spec(model: onnx.ModelProto, model_path: str | Path | None, spec_path: str | Path | None) -> list[InputSpec]:
    """The input spec to use.

    Args:
        model: the model (used to derive a spec when no file is given).
        model_path: the model file; a sibling ``<stem>.spec.json`` is used when present.
        spec_path: an explicit spec file (wins over everything).

    Returns:
        One ``InputSpec`` per graph input; symbolic dims default to 1 when derived.
    """
    candidates = []
    if spec_path is not None:
        if not Path(spec_path).is_file():
            raise UserInputError(f"{spec_path}: no such spec file")
        candidates.append(Path(spec_path))
    elif model_path is not None:
        p = Path(model_path)
        candidates += [p.with_suffix(".spec.json"), p.parent / (p.name.split(".")[0] + ".spec.json")]
    for cand in candidates:
        if cand.is_file():
            try:
                specs = load_spec(cand)
            except (KeyError, ValueError, TypeError) as exc:
                raise UserInputError(f"{cand}: not a valid spec file ({exc})") from None
            log.info("input spec from %s", cand)
            return _restrict(specs, model)
    return spec_from_model(model, dim_default=1)


def _restrict(specs: list[InputSpec], model: onnx.ModelProto) -> list[InputSpec]:
    """Keep entries for real graph inputs; fill in derived entries for inputs the file omits."""
    inits = {t.name for t in model.graph.initializer}
    names = [vi.name for vi in model.graph.input if vi.name not in inits]
    by_name = {s.name: s for s in specs}
    derived = {s.name: s for s in spec_from_model(model, dim_default=1)}
    return [by_name.get(n, derived[n]) for n in names if n in by_name or n in derived]
