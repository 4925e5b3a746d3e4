"""Seeded mutations of sample models, and the rules every CLI run on a mutant must keep.

A mutation is a function ``(model, rng, folder) -> path`` that writes a damaged copy of ``model``
into ``folder`` (raw bytes where the damage is below the protobuf level).
"""
from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx
from onnx import TensorProto, external_data_helper

Mutation = Callable[[onnx.ModelProto, random.Random, Path], Path]

MODEL = "model.onnx"


def _save(model: onnx.ModelProto, folder: Path) -> Path:
    (path := folder / MODEL).write_bytes(model.SerializeToString())
    return path


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _initializers(model: onnx.ModelProto) -> list[TensorProto]:
    return sorted(model.graph.initializer, key=lambda t: t.name)


def delete_initializer(model, rng, folder):
    m = _copy(model)
    inits = _initializers(m)
    if inits:
        victim = rng.choice(inits).name
        keep = [t for t in m.graph.initializer if t.name != victim]
        del m.graph.initializer[:]
        m.graph.initializer.extend(keep)
    return _save(m, folder)


def retype_initializer(model, rng, folder):
    m = _copy(model)
    inits = _initializers(m)
    if inits:
        t = rng.choice(inits)
        t.data_type = rng.choice([TensorProto.INT32, TensorProto.DOUBLE, TensorProto.UINT8, TensorProto.FLOAT16, 999])
    return _save(m, folder)


def dangling_input(model, rng, folder):
    m = _copy(model)
    node = rng.choice(list(m.graph.node))
    if node.input:
        node.input[rng.randrange(len(node.input))] = "nothing_makes_this"
    return _save(m, folder)


def duplicate_output(model, rng, folder):
    m = _copy(model)
    m.graph.output.append(m.graph.output[0])
    return _save(m, folder)


def output_is_input(model, rng, folder):
    m = _copy(model)
    vi = m.graph.output.add()
    vi.CopyFrom(m.graph.input[0])
    return _save(m, folder)


def bad_dim(model, rng, folder):
    m = _copy(model)
    vi = rng.choice(list(m.graph.input))
    dims = vi.type.tensor_type.shape.dim
    if dims:
        d = dims[rng.randrange(len(dims))]
        d.dim_value = rng.choice([-1, -7, 0, 2**40])
    return _save(m, folder)


def shuffle_nodes(model, rng, folder):
    m = _copy(model)
    nodes = list(m.graph.node)
    rng.shuffle(nodes)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return _save(m, folder)


def bad_attribute(model, rng, folder):
    m = _copy(model)
    with_attrs = [n for n in m.graph.node if n.attribute]
    if with_attrs:
        node = rng.choice(with_attrs)
        attr = rng.choice(list(node.attribute))
        kind = rng.randrange(3)
        if kind == 0:  # a value far out of range
            attr.type, attr.i = onnx.AttributeProto.INT, 99
            del attr.ints[:]
        elif kind == 1:  # the wrong attribute type
            attr.type, attr.s = onnx.AttributeProto.STRING, b"nonsense"
            del attr.ints[:]
        else:  # an attribute the op does not have
            node.attribute.add().CopyFrom(onnx.helper.make_attribute("no_such_attribute", 1))
    return _save(m, folder)


def bad_ir_version(model, rng, folder):
    m = _copy(model)
    m.ir_version = rng.choice([0, 1, 3, 99])
    return _save(m, folder)


def bad_opset(model, rng, folder):
    m = _copy(model)
    for imp in m.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = rng.choice([1, 6, 99])
    return _save(m, folder)


def _external(model: onnx.ModelProto, folder: Path) -> onnx.ModelProto:
    m = _copy(model)
    external_data_helper.convert_model_to_external_data(m, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    external_data_helper.write_external_data_tensors(m, str(folder))
    return m


def _external_tensors(m: onnx.ModelProto) -> list[TensorProto]:
    return [t for t in _initializers(m) if external_data_helper.uses_external_data(t)]


def _set_external(t: TensorProto, key: str, value: str) -> None:
    for entry in t.external_data:
        if entry.key == key:
            entry.value = value
            return
    t.external_data.add(key=key, value=value)


def external_outside_folder(model, rng, folder):
    m = _external(model, folder)
    tensors = _external_tensors(m)
    if tensors:
        _set_external(rng.choice(tensors), "location", rng.choice(["../weights.bin", "/etc/hostname", "sub/../../x.bin"]))
    return _save(m, folder)


def external_short(model, rng, folder):
    m = _external(model, folder)
    data = folder / "weights.bin"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    return _save(m, folder)


def external_bad_offset(model, rng, folder):
    m = _external(model, folder)
    tensors = _external_tensors(m)
    if tensors:
        _set_external(rng.choice(tensors), rng.choice(["offset", "length"]), rng.choice(["-4", "abc", "1.5", "99999999999"]))
    return _save(m, folder)


def external_missing(model, rng, folder):
    m = _external(model, folder)
    (folder / "weights.bin").unlink()
    return _save(m, folder)


def truncate(model, rng, folder):
    data = model.SerializeToString()
    (path := folder / MODEL).write_bytes(data[: rng.randrange(1, len(data))])
    return path


def flip_bits(model, rng, folder):
    data = bytearray(model.SerializeToString())
    for _ in range(rng.choice([1, 4, 32])):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    (path := folder / MODEL).write_bytes(bytes(data))
    return path


MUTATIONS: dict[str, Mutation] = {f.__name__: f for f in (
    delete_initializer, retype_initializer, dangling_input, duplicate_output, output_is_input, bad_dim,
    shuffle_nodes, bad_attribute, bad_ir_version, bad_opset, external_outside_folder, external_short,
    external_bad_offset, external_missing, truncate, flip_bits,
)}


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class Run:
    command: list[str]
    rc: int
    stderr: str
    problems: list[str] = field(default_factory=list)


def surgery(args: list[str], cwd: Path, timeout: float = 120) -> tuple[int, str, str]:
    env = dict(os.environ, TMPDIR=str(cwd / "tmp"))
    (cwd / "tmp").mkdir(exist_ok=True)
    try:
        proc = subprocess.run([sys.executable, "-m", "surgery", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "", "timeout"
    return proc.returncode, proc.stdout, proc.stderr


def stderr_problems(rc: int, stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    problems = []
    if rc not in (0, 1, 2):
        problems.append(f"exit {rc}")
    if "Traceback" in stderr:
        problems.append("traceback")
    if "internal error" in stderr:
        problems.append("internal error: " + next(line for line in lines if "internal error" in line))
    if rc in (1, 2) and len(lines) != 1 and not (rc == 1 and not lines):
        problems.append(f"{len(lines)} stderr lines: {lines[:3]}")
    if rc == 0 and lines:
        problems.append(f"stderr on success: {lines[:3]}")
    return problems
