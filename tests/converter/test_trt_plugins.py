"""onnx-surgery's Python TensorRT plugins: fields, registration, CPU parse + AOT build, references, GPU kernels.

TensorRT work runs in child processes: TensorRT-RTX 1.7.1's parser aborts the process on a plugin node
unless ``libtensorrt_rtx.so`` is loadable (``converter.plugins.trt.rtx_alias_problem``), so the children
get an alias folder on LD_LIBRARY_PATH, and this pytest process never registers a plugin that another
test's parse could trip over.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from converter.cli.main import main
from converter.runtime.reference_runner import run_with_references
from converter.plugins.trt.ops import PLUGIN_OPS
from converter.runtime.numerics import load_spec, random_feeds, run_ort
from surgery.plugins import plugin_specs
from tests.samples import sample_path, spec_path

REPO = Path(__file__).resolve().parents[2]
HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
rtx = pytest.mark.skipif(not HAS_RTX, reason="needs tensorrt_rtx (pip install '.[rtx]')")
N_PLUGIN_NODES = 9  # bert_ts_op14, trt preset, emit plugin: 5 LayerNorm + 2 Attention + 2 Gelu


def _gpu_reason() -> str | None:
    for mod in ("torch", "triton"):
        if importlib.util.find_spec(mod) is None:
            return f"needs {mod} and a CUDA GPU (the plugin kernels are Triton kernels)"
    import torch

    return None if torch.cuda.is_available() else "no CUDA device: the plugin kernels run only on a GPU"


@pytest.fixture(scope="module")
def bert_plugin(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plugins") / "bert_plugin.onnx"
    assert main(["optimize", str(sample_path("bert_ts_op14")), "-o", str(out), "--preset", "trt", "--emit", "plugin"]) == 0
    return out


def _child(args: list[str], tmp_path: Path, *, alias: bool = True, code: str | None = None) -> subprocess.CompletedProcess:
    """Run ``surgery ARGS`` (or python ``code``) in a child process, with the RTX library alias when ``alias``."""
    env = dict(os.environ)
    if alias:
        from converter.plugins.trt import make_rtx_alias

        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(make_rtx_alias(tmp_path / "rtx-alias")),
                                                             env.get("LD_LIBRARY_PATH", "")) if p)
    prog = code or "import sys; from converter.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", prog, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600, check=False)


def test_every_surgery_plugin_spec_has_a_python_plugin():
    ours = {op for op, spec in plugin_specs().items() if not spec.builtin}
    assert ours == set(PLUGIN_OPS)
    assert all(plugin_specs()[op].namespace == "onnx_surgery" and plugin_specs()[op].version == "1" for op in ours)


_VALUES = {"float": 1e-5, "int": 1, "tensor": np.linspace(0.5, 1.5, 8, dtype=np.float32)}


@pytest.mark.trt
@rtx
@pytest.mark.parametrize("op", sorted(PLUGIN_OPS))
def test_fields_survive_serialization(op):
    import tensorrt_rtx as trt

    from converter.plugins.trt.plugin import PluginFieldError, fields_from_collection, fields_to_collection

    spec = plugin_specs()[op]
    fields = {name: _VALUES[kind] for name, kind in spec.fields.items()}
    keep: list[np.ndarray] = []
    back = fields_from_collection(spec, fields_to_collection(trt, spec, fields, keep))
    assert set(back) == set(spec.fields)
    for name, kind in spec.fields.items():
        if kind == "tensor":
            np.testing.assert_array_equal(back[name], fields[name])
        else:
            assert back[name] == pytest.approx(fields[name]) and type(back[name]) is type(fields[name])
    with pytest.raises(PluginFieldError, match="unknown field 'bogus'"):
        fields_from_collection(spec, [SimpleNamespace(name="bogus", data=np.array([1], np.int32))])
    with pytest.raises(PluginFieldError, match="missing field"):
        fields_from_collection(spec, [])


@pytest.mark.trt
@rtx
def test_registration_matches_the_specs_and_is_idempotent(tmp_path):
    code = ("import json, tensorrt_rtx as trt\n"
            "from converter.plugins.trt import register_python_plugins\n"
            "a = register_python_plugins(trt); b = register_python_plugins(trt)\n"
            "reg = {c.name: [str(c.plugin_version), str(c.plugin_namespace), [f.name for f in c.field_names]]\n"
            "       for c in trt.get_plugin_registry().all_creators if c.name.startswith('Surgery')}\n"
            "print(json.dumps({'first': a, 'second': b, 'registry': reg}))\n")
    proc = _child([], tmp_path, code=code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["first"] == data["second"] == list(PLUGIN_OPS)
    for op, (version, namespace, fields) in data["registry"].items():
        spec = plugin_specs()[op]
        assert (version, namespace, fields) == (spec.version, spec.namespace, list(spec.fields))
    assert set(data["registry"]) == set(PLUGIN_OPS)


@pytest.mark.trt
@rtx
def test_plugin_fused_bert_parses_and_builds_on_cpu(bert_plugin, tmp_path):
    report = tmp_path / "check.json"
    proc = _child(["check", str(bert_plugin), "--backend", "tensorrt-rtx", "--json", str(report)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["supported"] is True and data["build"]["ok"] is True and data["build"]["attempted"] is True
    plugin_nodes = [n for n in data["nodes"] if n["op"] in PLUGIN_OPS]
    assert len(plugin_nodes) == N_PLUGIN_NODES
    assert {(n["status"], n["kind"]) for n in plugin_nodes} == {("supported", "ok")}


@pytest.mark.trt
@rtx
def test_convert_writes_an_engine_with_plugin_layers(bert_plugin, tmp_path):
    engine = tmp_path / "bert_plugin.engine"
    proc = _child(["convert", str(bert_plugin), "-o", str(engine), "--backend", "tensorrt-rtx",
                   "--min-shapes", "input_ids:1x4,attention_mask:1x4", "--opt-shapes", "input_ids:2x8,attention_mask:2x8",
                   "--max-shapes", "input_ids:4x16,attention_mask:4x16"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert engine.stat().st_size > 0
    layers = json.loads(Path(str(engine) + ".layers.json").read_text())["layers"]
    assert sum(layer["type"] == "PLUGIN_V3" for layer in layers) == N_PLUGIN_NODES


@pytest.mark.trt
@rtx
def test_without_the_library_alias_plugins_stay_unregistered_instead_of_aborting(bert_plugin, tmp_path):
    env_has_alias = _child([], tmp_path, alias=False, code=(
        "import tensorrt_rtx as trt; from converter.plugins.trt import rtx_alias_problem; "
        "print(rtx_alias_problem(trt) is None)")).stdout.strip().endswith("True")
    if env_has_alias:
        pytest.skip("this environment already provides libtensorrt_rtx.so")
    report = tmp_path / "check.json"
    proc = _child(["check", str(bert_plugin), "--backend", "tensorrt-rtx", "--json", str(report)], tmp_path, alias=False)
    assert proc.returncode == 1, proc.stderr[-2000:]  # a verdict, not a signal
    assert "libtensorrt_rtx.so" in proc.stderr
    kinds = {n["kind"] for n in json.loads(report.read_text())["nodes"] if n["op"] in PLUGIN_OPS}
    assert kinds == {"plugin-not-loaded"}


@pytest.mark.parametrize("batch,seq", [(1, 8), (3, 5)])
def test_plugin_fused_bert_matches_the_original_through_references(bert_plugin, batch, seq):
    specs = [s.__class__(**{**s.__dict__, "shape": (batch, seq)}) for s in load_spec(spec_path("bert_ts_op14"))]
    feeds = random_feeds(specs, seed=7)
    feeds["attention_mask"][-1, seq // 2:] = 0  # padding on the last row exercises the additive mask
    want = run_ort(onnx.load(str(sample_path("bert_ts_op14"))), feeds)
    got = run_with_references(onnx.load(str(bert_plugin)), feeds)
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)


# ---- GPU: the enqueue path (pointers -> tensors -> Triton kernels) against the numpy references ----

_GPU_CASES = {
    "SurgeryLayerNorm": ([(4, 16, 96)], {"epsilon": 1e-12}),
    "SurgeryRMSNorm": ([(4, 16, 96)], {"epsilon": 1e-6}),
    "SurgeryGroupNorm": ([(2, 32, 9, 7)], {"num_groups": 8, "epsilon": 1e-5, "activation": 1}),
    "SurgeryGelu": ([(4, 16, 96)], {"approximate": 0}),
    "SurgeryAttention": ([(2, 4, 33, 16), (2, 2, 33, 16), (2, 2, 33, 16), (2, 1, 1, 33)],
                         {"num_heads": 4, "scale": 0.25, "causal": 0, "mask_kind": 1}),
}
_LIMITS = {"float32": 1e-5, "float16": 1e-3}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("op", sorted(_GPU_CASES))
def test_enqueue_matches_the_reference_on_gpu(op, dtype, rng):
    reason = _gpu_reason()
    if reason:
        pytest.skip(reason)
    import torch

    from converter.plugins.trt.plugin import enqueue_op

    shapes, fields = _GPU_CASES[op]
    fields = dict(fields)
    ins_np = [rng.standard_normal(s).astype(dtype) for s in shapes]
    if op == "SurgeryAttention":
        ins_np[3] = np.where(rng.random(shapes[3]) < 0.2, -10000.0, 0.0).astype(dtype)
    c = shapes[0][1] if op == "SurgeryGroupNorm" else shapes[0][-1]
    for name in ("gamma", "beta"):
        if name in plugin_specs()[op].fields:
            fields[name] = (1.0 + 0.1 * rng.standard_normal(c)).astype(np.float32)
    ref = plugin_specs()[op].reference([a.astype(np.float64) for a in ins_np], fields)[0]
    ins = [torch.from_numpy(a).cuda() for a in ins_np]
    out = torch.full(ref.shape, float("nan"), dtype=ins[0].dtype, device="cuda")
    trt_name = {"float32": "FLOAT", "float16": "HALF"}[dtype]

    def desc(t):
        return SimpleNamespace(dims=tuple(t.shape), type=SimpleNamespace(name=trt_name))

    stream = torch.cuda.Stream()
    torch.cuda.synchronize()
    enqueue_op(PLUGIN_OPS[op], fields, lambda n: torch.as_tensor(fields[n], device="cuda"), [desc(t) for t in ins],
               [desc(out)], [t.data_ptr() for t in ins], [out.data_ptr()], stream.cuda_stream)
    stream.synchronize()
    got = out.double().cpu().numpy()
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    assert rel <= _LIMITS[dtype], f"{op} {dtype}: max|d|/max|ref| = {rel:.2e}"
