"""CNN cleanup benchmark: node counts of ``surgery optimize`` (default preset) against onnxslim on CNN-like models.

Usage::

    .venv/bin/python bench/cnn_cleanup.py                       # samples + onnx's zoo test models
    .venv/bin/python bench/cnn_cleanup.py --models light_resnet50,yolo_ts --json /tmp/cnn.json
    .venv/bin/python bench/cnn_cleanup.py --skip-peers          # ours only

Models: the CNN-like sample exports (``cnn_*``, ``yolo_*``, ``unet_*``, ``keras_cnn``, ``hostile_*``) and,
when the installed onnx package ships them, its backend-test zoo models (``onnx/backend/test/data/light``:
AlexNet, DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512 as
converted from Caffe2, their weights replaced by ConstantOfShape fills to keep them small).

Columns per model: ``orig`` = nodes in the file; ``no-folds`` = our default preset with the CNN folds
disabled (matmul-add-to-gemm, fold-batchnorm, fuse-scale-mul, fuse-bias-add); ``ours`` = the default
preset; ``folded`` = rewrites those four passes applied; ``slim`` = onnxslim.slim (run in a subprocess
of ``--peers-python`` through bench/_peers.py; an error is a cell); ``ours/slim`` = the ratio (below 1:
fewer nodes than onnxslim). The zoo models compute their larger weights with ConstantOfShape, which
fold-constants leaves computed above its size threshold (4 MiB) and onnxslim folds: a Conv whose
weights are computed keeps its BatchNormalization. ``--fold-size-threshold`` raises the threshold.

``maxrel`` = max |ours - original| / max |original| over the outputs on onnxruntime, seeded inputs
(``<sample>.spec.json`` where there is one). The zoo models' constant-fill weights make their outputs
uninformative (a uniform softmax), so for them the check runs on a copy whose weights are materialized
and replaced by seeded random values (BatchNormalization variances positive), with the logits before
a final Softmax as an extra output — ``maxrel*`` in the table.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converter.optimize import OptimizeOptions, optimize_file  # noqa: E402
from converter.runtime.numerics import load_spec, random_feeds, run_ort, spec_from_model  # noqa: E402
from passes import presets  # noqa: E402
from surgery import PassContext, get_pass, to_graph, to_model  # noqa: E402

SAMPLES = ROOT / "sample_models"
SAMPLE_PREFIXES = ("cnn_", "yolo_", "unet_", "keras_cnn", "hostile_")
FOLDS = tuple(presets.FOLD.split(","))


def zoo_dir() -> Path | None:
    try:
        import onnx.backend.test as t
    except ImportError:
        return None
    d = Path(t.__file__).parent / "data" / "light"
    return d if d.is_dir() else None


def discover() -> dict[str, Path]:
    found = {p.stem: p for p in sorted(SAMPLES.glob("*.onnx")) if p.stem.startswith(SAMPLE_PREFIXES)}
    zoo = zoo_dir()
    if zoo is not None:
        found.update({p.stem: p for p in sorted(zoo.glob("*.onnx"))})
    return found


def default_peers_python() -> str:
    for venv in ("/work/benchvenv", "/work/fusionvenv"):
        exe = Path(venv) / "bin" / "python"
        if exe.exists():
            return str(exe)
    return sys.executable


def run_slim(peers_python: str, src: Path, prefix: Path, timeout: float) -> tuple[int | None, str]:
    """onnxslim's node count, or None and why not."""
    argv = [peers_python, str(ROOT / "bench" / "_peers.py"), "onnxslim", str(src), str(prefix)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    lines = proc.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1])["outputs"][0]
    except (IndexError, ValueError, KeyError):
        return None, f"exit {proc.returncode}: no result"
    if out["error"]:
        return None, out["error"]
    return len(onnx.load(out["path"], load_external_data=False).graph.node), ""


def ours(src: Path, dst: Path, disable: frozenset[str] = frozenset(), fold_size: int | None = None) -> tuple[int, int]:
    """Nodes after the default preset, and the rewrites the CNN folds applied."""
    extra = {} if fold_size is None else {"fold_size_threshold": fold_size}
    report = optimize_file(src, dst, OptimizeOptions(preset="default", disable=disable, extra=extra))
    folded = sum(p["changed"] for p in report["passes"] if p["name"] in FOLDS)
    return report["nodes_after"], folded


def feeds_for(src: Path, model: onnx.ModelProto) -> dict[str, np.ndarray]:
    spec = src.with_suffix(".spec.json")
    return random_feeds(load_spec(spec) if spec.is_file() else spec_from_model(model, dim_default=1), seed=0)


def max_rel(original: onnx.ModelProto, candidate: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> float:
    ref = run_ort(original, feeds)
    got = run_ort(candidate, feeds, outputs=list(ref))
    worst = 0.0
    for name, value in ref.items():
        scale = float(np.max(np.abs(value))) if value.size else 0.0
        diff = float(np.max(np.abs(got[name].astype(np.float64) - value))) if value.size else 0.0
        worst = max(worst, diff / scale if scale else diff)
    return worst


def random_weights(src: Path, dst: Path, seed: int = 0) -> None:
    """``src`` with every weight materialized (fold-constants without a size limit) and replaced by
    seeded random values: He-scaled for Conv / ConvTranspose / Gemm weights, positive BN variances.
    A graph output that a Softmax writes gets its logits beside it as another output."""
    graph = to_graph(onnx.load(src))
    ctx = PassContext(options={"fold_size_threshold": 1 << 40})
    for name in ("infer-shapes", "fold-constants", "remove-dead-nodes"):
        get_pass(name)(graph, ctx)
    rng = np.random.default_rng(seed)
    done: set[int] = set()
    for node in graph.nodes:
        for i, t in enumerate(node.inputs):
            if not hasattr(t, "values") or id(t) in done or t.values.dtype.kind != "f" or t.values.ndim == 0:
                continue
            done.add(id(t))
            shape, dtype = t.values.shape, t.values.dtype
            if node.op in ("Conv", "ConvTranspose", "Gemm") and i == 1:
                fan_in = int(np.prod(shape[1:])) if node.op != "Gemm" else int(min(shape))
                t.values = rng.normal(0, np.sqrt(2.0 / max(fan_in, 1)), shape).astype(dtype)
            elif node.op == "BatchNormalization" and i in (1, 4):
                t.values = rng.uniform(0.5, 1.5, shape).astype(dtype)
            else:
                t.values = rng.normal(0, 0.2, shape).astype(dtype)
    for out in list(graph.outputs):  # a saturated softmax hides differences: compare its logits too
        if out.inputs and out.inputs[0].op == "Softmax" and out.inputs[0].inputs[0] not in graph.outputs:
            graph.outputs.append(out.inputs[0].inputs[0])
    onnx.save(to_model(graph), dst)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", help="comma-separated model names (default: all found)")
    p.add_argument("--skip-peers", action="store_true", help="do not run onnxslim")
    p.add_argument("--peers-python", default=default_peers_python(), help="python with onnxslim installed")
    p.add_argument("--peer-timeout", type=float, default=600.0)
    p.add_argument("--fold-size-threshold", type=int, metavar="BYTES",
                   help="ours: fold constants up to this size (default: fold-constants' own, 4 MiB)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)
    models = discover()
    if args.models:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in models]
        if unknown:
            raise SystemExit(f"error: unknown model(s) {', '.join(unknown)} (known: {', '.join(models)})")
        models = {m: models[m] for m in wanted}
    if zoo_dir() is None:
        print("note: onnx ships no backend-test zoo models here; samples only", file=sys.stderr)
    head = f"{'model':<22} {'orig':>6} {'no-folds':>8} {'ours':>6} {'folded':>6} {'slim':>6} {'ours/slim':>9} {'maxrel':>9}"
    print(head)
    print("-" * len(head))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, src in models.items():
            original = onnx.load(src)
            with contextlib.redirect_stdout(io.StringIO()):
                before, _ = ours(src, work / f"{name}.nofold.onnx", frozenset(FOLDS), args.fold_size_threshold)
                after, folded = ours(src, work / f"{name}.ours.onnx", fold_size=args.fold_size_threshold)
            slim, slim_error = (None, "skipped") if args.skip_peers else \
                run_slim(args.peers_python, src, work / name, args.peer_timeout)
            zoo = src.parent == zoo_dir()
            if zoo:  # constant-fill weights: check on a random-weights copy instead
                rand = work / f"{name}.random.onnx"
                random_weights(src, rand)
                with contextlib.redirect_stdout(io.StringIO()):
                    ours(rand, work / f"{name}.random.ours.onnx")
                check_src, check_out = rand, work / f"{name}.random.ours.onnx"
            else:
                check_src, check_out = src, work / f"{name}.ours.onnx"
            reference = onnx.load(check_src)
            err = max_rel(reference, onnx.load(check_out), feeds_for(check_src, reference))
            ratio = after / slim if slim else None
            rows.append({"model": name, "original": len(original.graph.node), "no_folds": before, "ours": after,
                         "folded": folded, "onnxslim": slim, "onnxslim_error": slim_error or None,
                         "ours_over_onnxslim": ratio, "max_rel_diff": err, "random_weights": zoo})
            slim_cell = str(slim) if slim is not None else "error" if not args.skip_peers else "-"
            ratio_cell = f"{ratio:.2f}" if ratio is not None else "-"
            print(f"{name:<22} {len(original.graph.node):>6} {before:>8} {after:>6} {folded:>6} {slim_cell:>6} "
                  f"{ratio_cell:>9} {err:>8.1e}{'*' if zoo else ' '}", flush=True)
            if slim_error and not args.skip_peers:
                print(f"    onnxslim: {slim_error}")
    worst = max((r for r in rows if r["ours_over_onnxslim"]), key=lambda r: r["ours_over_onnxslim"], default=None)
    if worst is not None:
        print(f"\nhighest ours/slim: {worst['model']} {worst['ours_over_onnxslim']:.2f}; "
              f"ours <= slim on {sum(r['ours_over_onnxslim'] <= 1 for r in rows if r['ours_over_onnxslim'])} "
              f"of {sum(1 for r in rows if r['ours_over_onnxslim'])} models")
    print("* maxrel on a copy with random weights (the file's own are constant fills)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
