"""Pass registry, presets and the pipeline grammar.

Grammar: a comma-separated list of pass names, where ``fixpoint(a,b,...)`` groups passes that are
re-run until a whole sweep changes nothing, e.g.
``fold-constants,remove-dead-nodes,fixpoint(eliminate-noops,fold-constants)``.
"""
from __future__ import annotations

import re
from typing import Any, Callable, TypeVar

from surgery.errors import UserInputError
from surgery.pass_base import Pass
from surgery.pass_manager import FixedPoint

_PASSES: dict[str, type[Pass]] = {}
_PRESETS: dict[str, str] = {}

P = TypeVar("P", bound=type[Pass])


def register_pass(cls: P) -> P:
    """Class decorator: make a pass available by its ``name``."""
    if not cls.name or not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", cls.name):
        raise ValueError(f"pass name must be kebab-case, got {cls.name!r}")
    if cls.name in _PASSES and _PASSES[cls.name] is not cls:
        raise ValueError(f"pass '{cls.name}' registered twice")
    _PASSES[cls.name] = cls
    return cls


def register_preset(name: str, pipeline: str) -> None:
    _PRESETS[name] = pipeline


def list_passes() -> list[type[Pass]]:
    return [_PASSES[name] for name in sorted(_PASSES)]


def list_presets() -> dict[str, str]:
    return dict(sorted(_PRESETS.items()))


def get_pass(name: str, **options: Any) -> Pass:
    try:
        cls = _PASSES[name]
    except KeyError:
        raise UserInputError(f"unknown pass '{name}' (see `surgery list-passes`)") from None
    return cls(**options)


def preset_pipeline(name: str, emit: str | None = None) -> str:
    """The preset's pipeline; with ``emit``, without the fusions that cannot emit that form (a preset
    offers what each emit can do; a pipeline the user writes is refused instead, see ``parse_pipeline``)."""
    try:
        spec = _PRESETS[name]
    except KeyError:
        known = ", ".join(sorted(_PRESETS))
        raise UserInputError(f"unknown preset '{name}' (known: {known})") from None
    if emit is None:
        return spec
    tokens = re.findall(r"fixpoint\(|\)|,|[^,()\s]+", spec)
    kept = [t for t in tokens if t in ("fixpoint(", ")", ",") or not _PASSES[t].emits or emit in _PASSES[t].emits]
    joined = "".join(kept)
    while True:  # drop the commas and empty groups that removed passes leave behind
        tidy = re.sub(r",{2,}", ",", joined).replace("(,", "(").replace(",)", ")").replace("fixpoint()", "").strip(",")
        if tidy == joined:
            return tidy
        joined = tidy


def _check_syntax(spec: str, tokens: list[str]) -> None:
    """One line for each way a pipeline string can be malformed: empty entries, a missing comma."""
    for prev, tok in zip(["^"] + tokens, tokens + ["$"]):
        if tok == "," and prev in ("^", ",", "fixpoint("):
            raise UserInputError(f"empty entry in pipeline '{spec}'")
        if tok in (")", "$") and prev == ",":
            raise UserInputError(f"empty entry in pipeline '{spec}'")
        if tok == "$" and prev == "^":
            raise UserInputError("empty pipeline")
        if tok == ")" and prev == "fixpoint(":
            raise UserInputError(f"empty fixpoint() in pipeline '{spec}'")
        if prev == ")" and tok not in (",", ")", "$"):
            raise UserInputError(f"missing ',' after ')' in pipeline '{spec}'")


def parse_pipeline(
    spec: str, disabled: frozenset[str] = frozenset(), make: Callable[[str], Pass] = get_pass, emit: str | None = None,
) -> list[Pass | FixedPoint]:
    """Turn a pipeline string into pass instances; passes named in ``disabled`` are dropped.

    Refused with one line: a pass that cannot honour ``emit``, and a pass placed before one it
    declares in ``runs_after``.
    """
    tokens = re.findall(r"fixpoint\(|\)|,|[^,()\s]+", spec.replace(" ", ""))
    stack: list[list[Pass | FixedPoint]] = [[]]
    if "".join(tokens) != spec.replace(" ", ""):
        raise UserInputError(f"unexpected '(' in pipeline '{spec}' (groups are written fixpoint(a,b))")
    _check_syntax(spec, tokens)
    for tok in tokens:
        if tok == ",":
            continue
        if tok == "fixpoint(":
            if len(stack) > 1:
                raise UserInputError(f"nested fixpoint(...) in pipeline '{spec}': a fixed point already repeats its group")
            stack.append([])
        elif tok == ")":
            if len(stack) == 1:
                raise UserInputError(f"unbalanced ')' in pipeline '{spec}'")
            group = stack.pop()
            if group:
                stack[-1].append(FixedPoint(group))
        elif tok not in disabled:
            stack[-1].append(make(tok))
    if len(stack) != 1:
        raise UserInputError(f"unclosed 'fixpoint(' in pipeline '{spec}'")
    for name in disabled:
        if name not in _PASSES:
            raise UserInputError(f"unknown pass '{name}' in --disable (see `surgery list-passes`)")
    _check_order_and_emit(stack[0], emit)
    return stack[0]


def _check_order_and_emit(steps: list[Pass | FixedPoint], emit: str | None) -> None:
    order = [p for s in steps for p in (s.passes if isinstance(s, FixedPoint) else [s])]
    first = {}
    for i, p in enumerate(order):
        first.setdefault(p.name, i)
    for i, p in enumerate(order):
        if emit is not None and p.emits and emit not in p.emits:
            raise UserInputError(f"{p.name} cannot emit {emit!r} (it emits {', '.join(p.emits)}): "
                                 f"drop it from the pipeline or choose another --emit")
        for before, why in p.runs_after.items():
            if first.get(before, -1) > i:
                raise UserInputError(f"pipeline runs {p.name} before {before}, but it must come after it: {why}")
