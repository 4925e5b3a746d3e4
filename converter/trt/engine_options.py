"""The builder options of ``convert`` beyond shapes and memory: what each needs, checked before a build.

``preflight`` checks each requested option against the library (by attribute, never by version)
and against this machine (the lean runtime library for version-compatible engines, an Ampere-or-newer
GPU where the builder builds on the GPU), and refuses in one line what cannot work.
``TimingCacheStep`` loads and merges timing caches into the build's config, counts the entries the
build had to time (misses), saves the result, and says so in one line when the library ignores
timing caches. ``options_used`` names the options a build was given, for its report.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from surgery.errors import UserInputError

if TYPE_CHECKING:
    from converter.trt.backends import Backend
    from converter.trt.build import BuildOptions

# BuildOptions field -> the convert option that sets it (the report lists those a build was given)
OPTION_NAMES = {
    "workspace": "--workspace", "optimization_level": "--builder-optimization-level",
    "timing_caches": "--timing-cache", "save_timing_cache": "--save-timing-cache", "plugins": "--plugins",
    "strongly_typed": "--strongly-typed", "hardware_compatibility": "--hardware-compatibility",
    "version_compatible": "--version-compatible", "exclude_lean_runtime": "--exclude-lean-runtime",
    "decomposable_attention": "--decomposable-attention", "refittable": "--refittable",
    "strip_weights": "--strip-weights", "tactic_sources": "--tactic-sources", "save_tactics": "--save-tactics",
    "load_tactics": "--load-tactics", "weight_streaming": "--weight-streaming",
}
_AMPERE = (8, 0)


def options_used(options: BuildOptions) -> dict[str, Any]:
    """The options ``options`` sets, by their ``convert`` names (profiles excluded: the report has them)."""
    used: dict[str, Any] = {}
    for name, flag in OPTION_NAMES.items():
        value = getattr(options, name)
        if name == "tactic_sources" and value == []:
            value = "none"
        if value in (None, False, []) or (name == "save_timing_cache" and [value] == options.timing_caches):
            continue
        used[flag] = [str(v) for v in value] if isinstance(value, list) else str(value) if isinstance(value, Path) else value
    return used


def preflight(backend: Backend, options: BuildOptions) -> list[str]:
    """Refuse (``UserInputError``, one line) the options this library or machine cannot honour; notes on the rest."""
    trt = backend.module
    flags = getattr(trt, "BuilderFlag", None)
    lib = f"{backend.name} {backend.version}"
    notes: list[str] = []
    wanted = {"--refittable": (options.refittable, "REFIT"), "--strip-weights": (options.strip_weights, "STRIP_PLAN"),
              "--weight-streaming": (options.weight_streaming, "WEIGHT_STREAMING"),
              "--exclude-lean-runtime": (options.exclude_lean_runtime, "EXCLUDE_LEAN_RUNTIME")}
    for option, (on, flag) in wanted.items():
        if on and not hasattr(flags, flag):
            raise UserInputError(f"{option}: {lib} has no BuilderFlag.{flag}")
    if options.exclude_lean_runtime and not options.version_compatible:
        raise UserInputError("--exclude-lean-runtime applies to version-compatible engines: add --version-compatible")
    if options.version_compatible and not options.exclude_lean_runtime:
        problem = lean_runtime_problem(trt)
        if problem:
            raise UserInputError(f"--version-compatible: {problem}")
    if options.version_compatible and options.exclude_lean_runtime:
        notes.append("version-compatible engine without the lean runtime: the machine that runs it needs "
                     f"{lean_runtime_name(trt)} (or a TensorRT of the same version)")
    if options.hardware_compatibility:
        notes += _hardware_check(backend, options.hardware_compatibility)
    if options.tactic_sources is not None:
        tactic_sources(trt, options.tactic_sources)  # refuses unknown names
    for option, path in (("--save-tactics", options.save_tactics), ("--load-tactics", options.load_tactics)):
        if path is not None and not hasattr(trt, "IAlgorithmSelector"):
            raise UserInputError(f"{option}: {lib} has no algorithm selector (IAlgorithmSelector), so the tactics a build "
                                 "chooses cannot be recorded or replayed with it")
    if options.load_tactics is not None and not Path(options.load_tactics).is_file():
        raise UserInputError(f"--load-tactics: {options.load_tactics}: no such file")
    if len(options.timing_caches) > 1 and options.save_timing_cache is None:
        raise UserInputError("several --timing-cache files are merged into one: say where with --save-timing-cache FILE")
    return notes


def lean_runtime_name(trt: ModuleType) -> str:
    """The lean runtime library a version-compatible engine embeds (``libnvinfer_lean.so.<major>``)."""
    return f"libnvinfer_lean.so.{str(getattr(trt, '__version__', '0')).split('.')[0]}"


def lean_runtime_problem(trt: ModuleType) -> str | None:
    """Why the builder cannot embed the lean runtime here, or None: it loads the library by name (its own
    folder, LD_LIBRARY_PATH, the ld cache), as ``ctypes`` does."""
    name = lean_runtime_name(trt)
    folder = libs_dir(trt)
    if folder is not None and (folder / name).exists():
        return None
    try:
        ctypes.CDLL(name, mode=getattr(os, "RTLD_LOCAL", 0))
        return None
    except OSError:
        pass
    where = f"{folder} nor on the loader path" if folder else "the loader path"
    return (f"a version-compatible engine embeds TensorRT's lean runtime ({name}), which is in neither {where}; "
            f"install the lean runtime, or add --exclude-lean-runtime (the engine then needs it where it runs)")


def libs_dir(trt: ModuleType) -> Path | None:
    """The folder of the wheel's shared libraries (``tensorrt_libs`` / ``tensorrt_rtx_libs``), if installed."""
    spec = importlib.util.find_spec(f"{trt.__name__}_libs")
    return Path(spec.origin).parent if spec and spec.origin else None


def gpu_compute_capability() -> tuple[int, int] | str:
    """GPU 0's compute capability from the CUDA driver, or why there is none."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no CUDA driver (libcuda.so.1) on this machine"
    count, device, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return "the CUDA driver finds no usable GPU"
    cuda.cuDeviceGet(ctypes.byref(device), 0)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)  # ..._MINOR
    return major.value, minor.value


def _hardware_check(backend: Backend, level_name: str) -> list[str]:
    levels = getattr(backend.module, "HardwareCompatibilityLevel", None)
    if levels is None or not hasattr(levels, level_name.upper()):
        known = ", ".join(n.lower() for n in getattr(levels, "__members__", {}) if n != "NONE") or "none"
        raise UserInputError(f"--hardware-compatibility: {backend.name} {backend.version} has no level '{level_name}' "
                             f"(it has: {known})")
    if level_name.upper() != "AMPERE_PLUS":
        return []
    if backend.is_rtx:  # an ahead-of-time build: no GPU needed to build it
        return ["hardware compatibility ampere_plus: the engine runs on any Ampere-or-newer GPU"]
    found = gpu_compute_capability()
    if isinstance(found, str) or found < _AMPERE:
        have = found if isinstance(found, str) else f"GPU 0 has compute capability {found[0]}.{found[1]}"
        raise UserInputError("--hardware-compatibility ampere_plus: TensorRT builds such an engine on an "
                             f"Ampere-or-newer GPU (compute capability 8.0+), and {have}")
    return ["hardware compatibility ampere_plus: the engine runs on any Ampere-or-newer GPU"]


def tactic_sources(trt: ModuleType, names: Sequence[str]) -> list[Any]:
    """``trt.TacticSource`` members for ``names`` (case-insensitive); an empty list enables none."""
    members = getattr(getattr(trt, "TacticSource", None), "__members__", {})
    if not members:
        raise UserInputError(f"--tactic-sources: {trt.__name__} {trt.__version__} has no tactic sources to choose")
    out = []
    for name in names:
        if name.upper() not in members:
            raise UserInputError(f"--tactic-sources: '{name}' is no tactic source of {trt.__name__} "
                                 f"(it has: {', '.join(m.lower() for m in members)}; 'none' for none)")
        out.append(members[name.upper()])
    return out


def tactic_selector(pg: Any, options: BuildOptions) -> Any | None:
    """Polygraphy's ``TacticRecorder``/``TacticReplayer`` for ``--save-tactics``/``--load-tactics`` (``preflight``
    checked that the library has an algorithm selector)."""
    if options.load_tactics is not None:
        return pg.TacticReplayer(str(options.load_tactics))
    if options.save_tactics is not None:
        return pg.TacticRecorder(str(options.save_tactics))
    return None


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _keys(cache: Any) -> set[str]:
    return {str(k) for k in cache.queryKeys()} if cache is not None else set()


class TimingCacheStep:
    """A ``PostprocessConfig`` function: the merged ``loads`` become the build's timing cache; ``finish``
    (after the build) saves it to ``save`` and says what the build found in it."""

    def __init__(self, loads: Sequence[Path], save: Path | None) -> None:
        self.loads, self.save = [Path(p) for p in loads], Path(save) if save else None
        self.loaded: set[str] = set()
        self.missing: list[Path] = []
        self.refused: list[Path] = []
        self.ignored = ""  # what the library says when it ignores timing caches
        self.config: Any = None

    def __call__(self, builder: Any, network: Any, config: Any) -> None:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            cache = config.create_timing_cache(b"")
            for path in self.loads:
                if not path.is_file():
                    self.missing.append(path)
                elif not cache.combine(config.create_timing_cache(path.read_bytes()), False):
                    self.refused.append(path)
            self.loaded = _keys(cache)
            config.set_timing_cache(cache, False)
        said = [str(w.message) for w in seen if "no-op" in str(w.message)]
        self.ignored = said[0] if said else ""
        self.config = config

    def finish(self) -> list[str]:
        """Save the build's timing cache; one line on what was loaded, missed and saved (or ignored)."""
        files = ", ".join(str(p) for p in self.loads) or "none loaded"
        if self.ignored:
            said = re.search(r"[^.]*no-ops?[^.]*", self.ignored)
            words = said.group(0).strip() if said else self.ignored
            return [f'timing cache: ignored by this library ("{words}"); {files} not used, nothing saved']
        cache = self.config.get_timing_cache()
        misses = len(_keys(cache) - self.loaded)
        notes = [f"timing cache {p} does not exist yet; starting empty" for p in self.missing]
        notes += [f"timing cache {p} not merged: made by another TensorRT version or device" for p in self.refused]
        saved = ""
        if self.save is not None:
            data = bytes(cache.serialize())
            write_atomically(self.save, data)
            saved = f"; saved {len(self.loaded) + misses} entries ({len(data)} bytes) to {self.save}"
        found = ("every timing this build needed was in the cache" if misses == 0 and self.loaded else
                 f"{misses} miss(es): entries this build had to time" + (", the rest came from the cache" if self.loaded else ""))
        return notes + [f"timing cache: {len(self.loaded)} entries loaded ({files}); {found}{saved}"]
