"""``surgery inspect MODEL|ENGINE [--json]``: what is in a model, or in an engine (TensorRT's engine
inspector; exit 3 with TensorRT's reason where the engine cannot be deserialized here)."""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import onnx
from onnx import external_data_helper as ext

from surgery.io import load_model


def _is_onnx(path: Path) -> bool:
    try:
        return onnx.load_model(str(path), load_external_data=False).HasField("graph")
    except Exception:
        return False


def _dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]


def _dtype(vi: onnx.ValueInfoProto) -> str:
    et = vi.type.tensor_type.elem_type
    return onnx.TensorProto.DataType.Name(et).lower() if et else "undefined"


def describe(path: str) -> dict:
    loaded = load_model(path)
    m, g = loaded.model, loaded.model.graph
    inits = {t.name for t in g.initializer}
    params = 0
    for t in g.initializer:
        n = 1
        for d in t.dims:
            n *= d
        params += n
    external = sorted({ext.ExternalDataInfo(t).location for t in ext._get_all_tensors(m) if ext.uses_external_data(t)})
    io = lambda vis: [{"name": v.name, "dtype": _dtype(v), "shape": _dims(v)} for v in vis if v.name not in inits]  # noqa: E731
    inputs, outputs = io(g.input), io(g.output)
    dynamic = sorted({f"{t['name']}[{i}]={d}" for t in inputs + outputs for i, d in enumerate(t["shape"]) if isinstance(d, str)})
    return {
        "path": str(loaded.path),
        "ir_version": m.ir_version,
        "opsets": {o.domain or "ai.onnx": o.version for o in m.opset_import},
        "producer": f"{m.producer_name} {m.producer_version}".strip(),
        "inputs": inputs,
        "outputs": outputs,
        "nodes": len(g.node),
        "initializers": len(g.initializer),
        "parameters": params,
        "ops": dict(sorted(Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}" for n in g.node).items())),
        "external_data": external,
        "dynamic_dims": dynamic,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="ONNX model, or a TensorRT engine")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--backend", default="auto", help="for an engine: which TensorRT deserializes it (default: auto)")


def run(args: argparse.Namespace) -> int:
    if Path(args.model).is_file() and Path(args.model).suffix.lower() != ".onnx" and not _is_onnx(Path(args.model)):
        from converter.cli.inspect_engine import inspect_engine

        return inspect_engine(args.model, args.backend, args.json)
    info = describe(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['path']}")
    print(f"  IR {info['ir_version']}, opsets {info['opsets']}, producer '{info['producer']}'")
    print(f"  {info['nodes']} nodes, {info['initializers']} initializers, {info['parameters']:,} parameters")
    for kind in ("inputs", "outputs"):
        print(f"  {kind}:")
        for t in info[kind]:
            print(f"    {t['name']}: {t['dtype']} {t['shape']}")
    if info["dynamic_dims"]:
        print(f"  dynamic dims: {', '.join(info['dynamic_dims'])}")
    if info["external_data"]:
        print(f"  external data: {', '.join(info['external_data'])}")
    print("  ops:")
    for op, n in sorted(info["ops"].items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"    {op:<28} {n}")
    return 0
