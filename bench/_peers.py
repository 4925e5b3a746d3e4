"""Run one peer optimizer on one model; executed by the peers' python (``bench/requirements-fusion.txt``).

Usage::

    PEERS_PYTHON bench/_peers.py TOOL SRC DST_PREFIX [JSON_OPTIONS]

TOOL is ``ort`` (onnxruntime.transformers.optimizer), ``onnxslim`` or ``onnxsim``. Writes one or more
models named ``DST_PREFIX.<variant>.onnx`` and prints exactly one JSON line on stdout, last:
``{"outputs": [{"variant": str, "path": str | null, "error": str | null}, ...]}``.
For ``ort`` the options are ``{"candidates": [[model_type, opt_level], ...], "num_heads": int, "hidden_size": int}``;
every candidate is tried (a failure is recorded, not raised) so the caller can keep the best one.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import traceback
import types


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _stub_torch_if_missing() -> None:
    """optimize_model(opt_level>=1) imports ``torch.version`` only to read ``.hip`` when use_gpu is set.

    Without torch installed it raises ModuleNotFoundError before doing anything else. A stub with
    ``version.hip = None`` keeps that path working for the CPU (use_gpu=False) optimizer.
    """
    try:
        import torch  # noqa: F401
    except ImportError:
        torch = types.ModuleType("torch")
        torch.version = types.SimpleNamespace(hip=None, cuda=None, __version__="0+stub")
        sys.modules["torch"] = torch
        sys.modules["torch.version"] = torch.version


def run_ort(src: str, prefix: str, opts: dict) -> list[dict]:
    _stub_torch_if_missing()
    from onnxruntime.transformers.optimizer import optimize_model

    outs = []
    for model_type, level in opts["candidates"]:
        variant = f"{model_type}-O{level}"
        path = f"{prefix}.{variant}.onnx"
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                m = optimize_model(src, model_type=model_type, num_heads=opts.get("num_heads", 0),
                                   hidden_size=opts.get("hidden_size", 0), opt_level=level, use_gpu=False)
                m.save_model_to_file(path)
            outs.append({"variant": variant, "path": path, "error": None})
        except Exception as exc:  # noqa: BLE001 - a peer failure is a result
            outs.append({"variant": variant, "path": None, "error": _one_line(exc)})
    return outs


def run_onnxslim(src: str, prefix: str, opts: dict) -> list[dict]:
    import onnx
    import onnxslim

    path = f"{prefix}.onnxslim.onnx"
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model = onnxslim.slim(onnx.load(src))
        onnx.save(model, path)
        return [{"variant": "onnxslim", "path": path, "error": None}]
    except Exception as exc:  # noqa: BLE001
        return [{"variant": "onnxslim", "path": None, "error": _one_line(exc)}]


def run_onnxsim(src: str, prefix: str, opts: dict) -> list[dict]:
    import onnx
    import onnxsim

    path = f"{prefix}.onnxsim.onnx"
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model, ok = onnxsim.simplify(onnx.load(src))
        if not ok:
            return [{"variant": "onnxsim", "path": None, "error": "onnxsim: simplified model failed its own check"}]
        onnx.save(model, path)
        return [{"variant": "onnxsim", "path": path, "error": None}]
    except Exception as exc:  # noqa: BLE001
        return [{"variant": "onnxsim", "path": None, "error": _one_line(exc)}]


TOOLS = {"ort": run_ort, "onnxslim": run_onnxslim, "onnxsim": run_onnxsim}


def main(argv: list[str]) -> int:
    logging.disable(logging.WARNING)
    tool, src, prefix = argv[:3]
    opts = json.loads(argv[3]) if len(argv) > 3 else {}
    try:
        outs = TOOLS[tool](src, prefix, opts)
    except Exception as exc:  # noqa: BLE001 - import errors and the like
        traceback.print_exc(file=sys.stderr)
        outs = [{"variant": tool, "path": None, "error": _one_line(exc)}]
    sys.stdout.write("\n" + json.dumps({"outputs": outs}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
