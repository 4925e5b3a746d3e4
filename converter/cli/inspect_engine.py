"""``surgery inspect ENGINE``: the engine inspector's view of a TensorRT engine (called by ``inspect``)."""
from __future__ import annotations

import json

from converter.runtime.validate import EngineSkipped
from converter.trt.backends import select_backend
from converter.trt.engine import engine_info

EXIT_SKIPPED = 3


def inspect_engine(path: str, backend_name: str, as_json: bool) -> int:
    """Print what the engine holds; exit 3 with TensorRT's reason where it cannot be deserialized here."""
    try:
        info = engine_info(select_backend(backend_name), path)
    except EngineSkipped as exc:
        print(json.dumps({"path": path, "status": "skipped", "skipped": str(exc)}, indent=2) if as_json else f"skipped: {exc}")
        return EXIT_SKIPPED
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    b = info["backend"]
    print(f"{info['path']}: TensorRT engine, {info['bytes']:,} bytes ({b['name']} {b['version']})")
    print(f"  {len(info['layers'])} layers, {info['profiles']} optimization profile(s), device memory {info['device_memory']}")
    for t in info["io"]:
        ranges = "".join(f"  profile {k}: {' / '.join('x'.join(map(str, s)) for s in p)}" for k, p in enumerate(t.get("profiles", [])))
        print(f"  {t['mode']:<6} {t['name']}: {t['dtype']} {t['shape']}{ranges}")
    print("  layers:")
    for layer in info["layers"]:
        kind = layer.get("LayerType", "")
        print(f"    {layer.get('Name', '?')}" + (f"  [{kind}]" if kind else ""))
    for note in info.get("notes", []):
        print(f"  note: {note}")
    return 0
