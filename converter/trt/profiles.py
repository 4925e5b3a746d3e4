"""Optimization profiles for builds: given by the user, read from a spec, or derived from the model.

A derived profile is a range, as a deployment builds it: batch-like dims 1..N, sequence-like dims
1..2S, image sides fixed at one value that the graph accepts. Dims sharing a symbolic name share a
value. Values are checked with ONNX shape inference (strict, with data propagation) at min, opt and
max, so a side that the model's down- and up-sampling cannot keep consistent (a skip Concat, a
space-to-depth Reshape) is never chosen; the report says how the profile was chosen.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import onnx
from onnx import shape_inference

from surgery.errors import UserInputError
from converter.runtime.numerics import InputSpec
from surgery.shapes import parse_shapes

log = logging.getLogger(__name__)

Profile = dict[str, tuple[list[int], list[int], list[int]]]  # input -> (min, opt, max)

BATCH_MAX = 4
SEQUENCE_OPT = 16  # small: position tables of exported models bound the sequence (tiny samples: 32)
IMAGE_SIDES = (224, 256, 320, 640, 128, 64, 32, 512)


@dataclass
class ProfileChoice:
    """The profiles a build uses and where they came from."""

    profiles: list[Profile]
    source: str
    derived: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def first(self) -> Profile:
        return self.profiles[0] if self.profiles else {}

    def opt_specs(self, specs: Iterable[InputSpec]) -> list[InputSpec]:
        """``specs`` with shapes at the first profile's opt point (inputs feeds for validation)."""
        return [InputSpec(s.name, tuple(self.first[s.name][1]), s.dtype, s.low, s.high) if s.name in self.first else s
                for s in specs]

    def describe(self) -> str:
        return f"{self.source}: " + "; ".join(describe_profile(p) for p in self.profiles)


def describe_profile(profile: Profile) -> str:
    def one(lo: list[int], opt: list[int], hi: list[int]) -> str:
        return _dims(opt) if lo == opt == hi else f"{_dims(lo)}..{_dims(opt)}..{_dims(hi)}"
    return ", ".join(f"{name}={one(*v)}" for name, v in profile.items())


def _dims(d: list[int]) -> str:
    return "x".join(map(str, d)) if d else "scalar"


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def _declared_dims(vi: onnx.ValueInfoProto) -> list[int | str | None]:
    """Per dim: its value, its symbolic name, or None where unnamed and unknown."""
    out: list[int | str | None] = []
    for d in vi.type.tensor_type.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None))
    return out


def choose_profiles(model: onnx.ModelProto, args: argparse.Namespace, specs: list[InputSpec] | None,
                    spec_source: str | None) -> ProfileChoice:
    """The profiles from the command line, else from the spec (opt point), else derived.

    Args:
        model: the model the profile is for.
        args: parsed options of ``converter.cli.args.add_shape_arguments`` (missing attributes count as not given).
        specs: shapes from a spec file, or None.
        spec_source: where ``specs`` came from (for the report).
    """
    inputs = graph_inputs(model)
    names = [vi.name for vi in inputs]
    point = getattr(args, "input_shapes", None)
    mins, opts, maxs = (getattr(args, k, None) or [] for k in ("min_shapes", "opt_shapes", "max_shapes"))
    if point and (mins or opts or maxs):
        raise UserInputError("give either --input-shapes or --min/--opt/--max-shapes, not both")
    if point:
        shapes = parse_shapes(point)
        _check_names("--input-shapes", shapes, names)
        profile = _complete({n: (s, s, s) for n, s in shapes.items()}, inputs, model, specs, "--input-shapes")
        return ProfileChoice([profile], "--input-shapes")
    if mins or opts or maxs:
        parsed = [[parse_shapes(t) for t in given] for given in (mins, opts, maxs)]
        for flag, group in zip(("--min-shapes", "--opt-shapes", "--max-shapes"), parsed):
            for shapes in group:
                _check_names(flag, shapes, names)
        profiles = [_complete(p, inputs, model, specs, f"profile {i}") for i, p in enumerate(make_profiles(*parsed))]
        return ProfileChoice(profiles, "--min/--opt/--max-shapes")
    profile, notes = derive_profile(model, {s.name: list(s.shape) for s in specs} if specs else None)
    if specs:
        return ProfileChoice([profile], f"spec file {spec_source} (opt point; ranges derived)", derived=True, notes=notes)
    return ProfileChoice([profile], "derived from the model", derived=True, notes=notes)


def _check_names(flag: str, shapes: dict[str, list[int]], names: list[str]) -> None:
    for name in shapes:
        if name not in names:
            raise UserInputError(f"{flag}: '{name}' is not an input of the model (inputs: {', '.join(names)})")


def make_profiles(mins: list[dict[str, list[int]]], opts: list[dict[str, list[int]]],
                  maxs: list[dict[str, list[int]]]) -> list[Profile]:
    """Pair the i-th --min/--opt/--max shapes into profiles; a missing min or max defaults to opt."""
    count = max(len(mins), len(opts), len(maxs))
    for what, given in (("--min-shapes", mins), ("--opt-shapes", opts), ("--max-shapes", maxs)):
        if given and len(given) != count:
            raise UserInputError(f"{what} given {len(given)} time(s) but another shape option {count} time(s)")
    profiles = []
    for i in range(count):
        lo, opt, hi = (mins[i] if mins else {}), (opts[i] if opts else {}), (maxs[i] if maxs else {})
        prof: Profile = {}
        for name in dict.fromkeys([*opt, *lo, *hi]):
            o = opt.get(name) or lo.get(name) or hi.get(name)
            a, b = lo.get(name, o), hi.get(name, o)
            if not (len(a) == len(o) == len(b)) or any(x > y or y > z for x, y, z in zip(a, o, b)):
                raise UserInputError(f"profile {i}: input '{name}' needs min <= opt <= max of equal rank, got {a}, {o}, {b}")
            prof[name] = (list(a), list(o), list(b))
        profiles.append(prof)
    return profiles


def _complete(given: Profile, inputs: list[onnx.ValueInfoProto], model: onnx.ModelProto,
              specs: list[InputSpec] | None, where: str) -> Profile:
    """Check ranks and static dims of the given shapes; fill in inputs they leave out (spec, else derived)."""
    missing = [vi for vi in inputs if vi.name not in given]
    fill: Profile = {}
    if missing:
        fill, _ = derive_profile(model, {s.name: list(s.shape) for s in specs} if specs else None)
    out: Profile = {}
    for vi in inputs:
        if vi.name not in given:
            out[vi.name] = fill[vi.name]
            continue
        declared = _declared_dims(vi)
        for point in given[vi.name]:
            if vi.type.tensor_type.HasField("shape") and len(point) != len(declared):
                raise UserInputError(f"{where}: input '{vi.name}' has rank {len(declared)}, the shape given has rank {len(point)}")
            for axis, (d, v) in enumerate(zip(declared, point)):
                if isinstance(d, int) and d != v:
                    raise UserInputError(f"{where}: input '{vi.name}' dim {axis} is fixed at {d} in the model, the shape gives {v}")
        out[vi.name] = given[vi.name]
    return out


def derive_profile(model: onnx.ModelProto, opt_shapes: dict[str, list[int]] | None = None) -> tuple[Profile, list[str]]:
    """A range profile for every graph input; ``opt_shapes`` (a spec) fixes the opt point where given."""
    inputs = graph_inputs(model)
    declared = {vi.name: _declared_dims(vi) for vi in inputs}
    roles: dict[str, str] = {}
    for vi in inputs:
        elem = vi.type.tensor_type.elem_type
        dims = declared[vi.name]
        for axis, d in enumerate(dims):
            if isinstance(d, int):
                continue
            key = _key(vi.name, axis, d)
            image = len(dims) >= 4 and elem in _FLOATS and axis >= 1 and not (axis == 1 and _channels_first(dims))
            role = "batch" if axis == 0 else "image" if image else "sequence"
            roles.setdefault(key, role)
    spec_values: dict[str, int] = {}
    for vi in inputs:
        shape = (opt_shapes or {}).get(vi.name)
        if shape is None or len(shape) != len(declared[vi.name]):
            continue
        for axis, d in enumerate(declared[vi.name]):
            if not isinstance(d, int):
                spec_values.setdefault(_key(vi.name, axis, d), shape[axis])
    notes: list[str] = []
    images = [k for k, r in roles.items() if r == "image" and k not in spec_values]
    sides = [None] if not images else list(IMAGE_SIDES)
    chosen = None
    for side in sides:
        ranges = _ranges(roles, spec_values, side)
        why = first_inconsistency(model, inputs, declared, ranges)
        if why is None:
            chosen = ranges
            break
        # a range edge the graph does not accept: try the opt point alone before another side
        fixed = {k: r if roles[k] == "batch" else (r[1],) * 3 for k, r in ranges.items()}
        if first_inconsistency(model, inputs, declared, fixed) is None:
            chosen = fixed
            notes.append("derived ranges were inconsistent with the graph (" + why + "); non-batch dims fixed at their opt value")
            break
        log.debug("side %s rejected: %s", side, why)
    if chosen is None:
        chosen = _ranges(roles, spec_values, sides[0])
        notes.append("no derived shapes satisfied ONNX shape inference; the build may fail under these shapes "
                     "(give --input-shapes or --min/--opt/--max-shapes)")
    elif images:
        notes.append(f"image dims {', '.join(images)} fixed at {chosen[images[0]][1]} (the first side the graph accepts; "
                     "give --min/--opt/--max-shapes for a range)")
    profile = {vi.name: tuple(_point(declared[vi.name], vi.name, chosen, i) for i in range(3)) for vi in inputs}
    return profile, notes


_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}


def _channels_first(dims: list[int | str | None]) -> bool:
    """NCHW unless the last dim is a small static channel count and dim 1 is not (NHWC)."""
    last, second = dims[-1], dims[1]
    return not (isinstance(last, int) and last <= 4 and not (isinstance(second, int) and second <= 4))


def _key(name: str, axis: int, d: int | str | None) -> str:
    return d if isinstance(d, str) else f"{name}[{axis}]"


def _ranges(roles: dict[str, str], spec_values: dict[str, int], side: int | None) -> dict[str, tuple[int, int, int]]:
    out = {}
    for key, role in roles.items():
        opt = spec_values.get(key)
        if role == "batch":
            opt = opt or 1
            out[key] = (1, opt, max(opt, BATCH_MAX))
        elif role == "image":
            opt = opt or side or 1
            out[key] = (opt, opt, opt)
        else:
            opt = opt or SEQUENCE_OPT
            out[key] = (1, opt, 2 * opt)
    return out


def _point(dims: list[int | str | None], name: str, values: dict[str, tuple[int, int, int]], which: int) -> list[int]:
    return [d if isinstance(d, int) else values[_key(name, axis, d)][which] for axis, d in enumerate(dims)]


def first_inconsistency(model: onnx.ModelProto, inputs: list[onnx.ValueInfoProto],
                        declared: dict[str, list[int | str | None]], values: dict[str, tuple[int, int, int]]) -> str | None:
    """None if ONNX shape inference accepts the model at the min, opt and max points, else its first complaint."""
    from surgery.verify import weightless

    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(weightless(model))
    del skeleton.graph.value_info[:]
    for out in skeleton.graph.output:
        out.type.tensor_type.ClearField("shape")
    points = sorted({tuple(tuple(_point(declared[vi.name], vi.name, values, i)) for vi in inputs) for i in range(3)})
    for point in points:
        probe = onnx.ModelProto()
        probe.CopyFrom(skeleton)
        by_name = {vi.name: vi for vi in probe.graph.input}
        for vi, shape in zip(inputs, point):
            dims = by_name[vi.name].type.tensor_type.shape.dim
            for d, v in zip(dims, shape):
                d.Clear()
                d.dim_value = v
        try:
            shape_inference.infer_shapes(probe, strict_mode=True, data_prop=True)
        except Exception as exc:  # InferenceError, or a contrib op onnx does not know: the first is what we want
            text = str(exc)
            if "is not a registered function/op" in text or "No Op registered" in text or "Unsupported" in text:
                continue  # onnx cannot judge this model; do not reject the point for it
            detail = " ".join(text.split())[:200]
            return f"at {', '.join(f'{vi.name}={_dims(list(s))}' for vi, s in zip(inputs, point))}: {detail}"
    return None


def profiles_for(model: onnx.ModelProto, model_path: str | Path | None, args: argparse.Namespace | None) -> ProfileChoice:
    """``choose_profiles`` with the spec resolved as every command does: ``--spec``, else the model's sibling spec."""
    from converter.runtime.specs import resolve_spec

    spec = spec_path_for(model_path, getattr(args, "spec", None)) if model_path is not None else None
    specs = resolve_spec(model, model_path, spec) if spec is not None else None
    return choose_profiles(model, args or argparse.Namespace(), specs, str(spec) if spec else None)


def spec_path_for(model_path: str | Path | None, spec: str | Path | None) -> Path | None:
    """An explicit spec, else the model's sibling ``<stem>.spec.json`` when present."""
    if spec is not None:
        return Path(spec)
    if model_path is None:
        return None
    p = Path(model_path)
    for cand in (p.with_suffix(".spec.json"), p.parent / (p.name.split(".")[0] + ".spec.json")):
        if cand.is_file():
            return cand
    return None
