"""Export real-size PyTorch models (random weights, no downloads) for ``bench/pipeline.py --real``.

Run with the torch venv (``sample_models/requirements-torch.txt``; the package itself never imports torch)::

    /work/genvenv/bin/python bench/real_exports.py --out /tmp/real      # all models, both exporters
    /work/genvenv/bin/python bench/real_exports.py --out /tmp/real --only bert vit
    /work/genvenv/bin/python bench/real_exports.py --out /tmp/real-ext --external --only bert llama

Models, built from ``transformers`` configs with fixed seeds: BERT-base (``BertConfig()``), GPT-2 small
(``GPT2Config()``), ViT-B/16 (``ViTConfig()``, 224x224), ResNet-50 (``ResNetConfig()``: transformers'
ResNet, since torchvision is not in the venv) and a Llama-like model with grouped-query attention of
about 1 GB fp32; biases and norm scales get trained-looking values (``_trained_like``). Each is exported with the TorchScript exporter (opset 17) and the dynamo exporter
(opset 18) into one file with the weights embedded (or, with ``--external``, in ``<name>.onnx.data``;
IR version capped at 10), with a dynamic batch
(and sequence for text models). Next to ``<name>.onnx`` go ``<name>.spec.json`` (the input spec, as in
``sample_models/``) and ``<name>.bench.json`` (family, exporter, and the ORT transformers optimizer's
``model_type``/``num_heads``/``hidden_size``). Exports already in ``--out`` are kept.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "sample_models"))
from generate import (MAX_IR_VERSION, _hf_wrap, _json_lines, _randomize_bn, feeds_from_spec,  # noqa: E402
                      float_input, int_input, torch_inputs)

TS_OPSET, DYNAMO_OPSET = 17, 18
TEXT_SEQ = 128


@dataclass(frozen=True)
class RealModel:
    family: str
    build: Callable[[], Any]              # returns (eval-mode nn.Module, config)
    inputs: list[dict[str, Any]]          # spec inputs, batch 1
    dynamic: dict[str, dict[int, str]]    # input/output name -> {axis: dim name}
    # onnxruntime.transformers.optimizer --model_type. It has no CNN type ("unet"/"vae" turn on the CUDA-only
    # NhwcConv), so ResNet-50 takes the generic "bert"; the Llama-like decoder takes the generic "gpt2".
    ort_model_type: str
    max_seq: int = 0                      # dynamo: upper bound of the sequence dim (position table)
    seed: int = 0


def _text(vocab: int) -> list[dict[str, Any]]:
    return [int_input("input_ids", [1, TEXT_SEQ], 0, vocab), int_input("attention_mask", [1, TEXT_SEQ], 1, 2)]


def _text_dynamic() -> dict[str, dict[int, str]]:
    return {n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "last_hidden_state")}


def build_bert():
    from transformers import BertConfig, BertModel

    cfg = BertConfig(attn_implementation="eager")
    return _hf_wrap(BertModel(cfg, add_pooling_layer=False).eval(), ["input_ids", "attention_mask"],
                    "last_hidden_state"), cfg


def build_gpt2():
    from transformers import GPT2Config, GPT2Model

    cfg = GPT2Config(use_cache=False, attn_implementation="eager")
    return _hf_wrap(GPT2Model(cfg).eval(), ["input_ids", "attention_mask"], "last_hidden_state"), cfg


def build_vit():
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(attn_implementation="eager")
    return _hf_wrap(ViTModel(cfg, add_pooling_layer=False).eval(), ["pixel_values"], "last_hidden_state"), cfg


def build_resnet50():
    import torch
    from transformers import ResNetConfig, ResNetModel

    cfg = ResNetConfig()  # bottleneck layers, depths [3, 4, 6, 3], widths 256..2048: ResNet-50

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = ResNetModel(cfg)

        def forward(self, pixel_values):
            return self.m(pixel_values=pixel_values).pooler_output

    model = Pooled()
    _randomize_bn(model)
    return model.eval(), cfg


# hidden 1024, 16 query heads sharing 4 key/value heads, 20 layers: 258M parameters, ~1.03 GB fp32.
LLAMA = dict(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=20,
             num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-6)


def build_llama():
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(**LLAMA, use_cache=False, attn_implementation="eager")
    return _hf_wrap(LlamaModel(cfg).eval(), ["input_ids", "attention_mask"], "last_hidden_state"), cfg


MODELS: dict[str, RealModel] = {
    "bert": RealModel("bert", build_bert, _text(30522), _text_dynamic(), "bert", max_seq=512, seed=1),
    "gpt2": RealModel("gpt2", build_gpt2, _text(50257), _text_dynamic(), "gpt2", max_seq=1024, seed=2),
    "vit": RealModel("vit", build_vit, [float_input("pixel_values", [1, 3, 224, 224])],
                     {"pixel_values": {0: "batch"}, "last_hidden_state": {0: "batch"}}, "vit", seed=3),
    "resnet50": RealModel("resnet50", build_resnet50, [float_input("pixel_values", [1, 3, 224, 224])],
                          {"pixel_values": {0: "batch"}, "pooled": {0: "batch"}}, "bert", seed=4),
    "llama": RealModel("llama", build_llama, _text(32000), _text_dynamic(), "gpt2", max_seq=2048, seed=5),
}


def output_name(model: RealModel) -> str:
    return next(n for n in model.dynamic if n not in {i["name"] for i in model.inputs})


def export_torchscript(model: RealModel, module, path: Path) -> None:
    import torch

    args = torch_inputs(model.inputs, batch=2, seed=model.seed)
    torch.onnx.export(module, args, str(path), dynamo=False, opset_version=TS_OPSET,
                      input_names=[i["name"] for i in model.inputs], output_names=[output_name(model)],
                      dynamic_axes=model.dynamic, do_constant_folding=True)


def export_dynamo(model: RealModel, module, path: Path) -> None:
    import torch

    args = torch_inputs(model.inputs, batch=2, seed=model.seed)
    dims = {"batch": torch.export.Dim("batch"), "seq": torch.export.Dim("seq", max=model.max_seq or None)}
    shapes = {i["name"]: {ax: dims[dn] for ax, dn in model.dynamic[i["name"]].items()} for i in model.inputs}
    prog = torch.onnx.export(module, args, dynamo=True, opset_version=DYNAMO_OPSET,
                             input_names=[i["name"] for i in model.inputs], output_names=[output_name(model)],
                             dynamic_shapes=shapes, external_data=False, verbose=False)
    prog.save(str(path), external_data=False)


def finalize(path: Path, external: bool) -> None:
    """Load any external data the exporter wrote, cap the IR version, save as one file (``external``: with
    the weights in ``<name>.onnx.data``)."""
    import onnx

    onnx_model = onnx.load(str(path), load_external_data=True)
    onnx_model.ir_version = min(onnx_model.ir_version, MAX_IR_VERSION)
    for data in [p for p in path.parent.iterdir() if p.name.startswith(path.name) and p != path]:
        data.unlink()
    onnx.save_model(onnx_model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                    location=path.name + ".data")


def check_against_torch(path: Path, spec: dict[str, Any], module) -> float:
    """Max abs difference between onnxruntime CPU and torch on the spec's inputs (raises past 1e-3)."""
    import onnxruntime as ort
    import torch

    feeds = feeds_from_spec(spec, seed=0)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    got = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    with torch.no_grad():
        want = module(*[torch.from_numpy(v) for v in feeds.values()]).numpy()
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-3, err_msg=path.name)
    return float(np.max(np.abs(got - want)))


def _trained_like(module) -> None:
    """Give the 1-D parameters a fresh model leaves at 0 or 1 (biases, norm scales) trained-looking values.

    transformers initialises every bias to 0 and every norm weight to 1; passes rightly drop ``Add(x, 0)``
    and share identical constants, which a trained model would never let them do, so the benchmark would
    measure graphs no user has.
    """
    import torch

    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for param in module.parameters():
            if param.ndim != 1:
                continue
            if bool(torch.all(param == 0)):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
            elif bool(torch.all(param == 1)):
                param.copy_(1 + (torch.rand(param.shape, generator=gen) - 0.5) * 0.4)


def sidecar(model: RealModel, cfg, exporter: str, opset: int) -> dict[str, Any]:
    hidden = getattr(cfg, "hidden_size", 0)
    heads = getattr(cfg, "num_attention_heads", 0)
    return {"family": model.family, "exporter": exporter, "opset": opset,
            "ort_model_type": model.ort_model_type,
            "num_heads": heads if model.family != "resnet50" else 0,
            "hidden_size": hidden if model.family != "resnet50" else 0}


def export_family(key: str, out: Path, external: bool) -> None:
    import torch

    model = MODELS[key]
    jobs = [(f"{key}_ts", "torchscript", TS_OPSET, export_torchscript),
            (f"{key}_dynamo", "dynamo", DYNAMO_OPSET, export_dynamo)]
    todo = [j for j in jobs if not (out / f"{j[0]}.onnx").exists() or not (out / f"{j[0]}.bench.json").exists()]
    if not todo:
        print(f"{key}: cached", flush=True)
        return
    torch.manual_seed(model.seed)
    module, cfg = model.build()
    _trained_like(module)
    spec = {"inputs": model.inputs}
    for name, exporter, opset, export in todo:
        path = out / f"{name}.onnx"
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export(model, module, path)
        finalize(path, external)
        err = check_against_torch(path, spec, module)
        (out / f"{name}.spec.json").write_text(_json_lines("inputs", model.inputs))
        (out / f"{name}.bench.json").write_text(json.dumps(sidecar(model, cfg, exporter, opset), indent=1) + "\n")
        size = sum(p.stat().st_size for p in out.iterdir() if p.name.startswith(path.name))
        print(f"{name}: {size / 2**20:.0f} MiB in {time.perf_counter() - start:.0f}s, "
              f"max |ort - torch| {err:.1e}", flush=True)
        gc.collect()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder of the exports (existing ones are kept)")
    parser.add_argument("--only", nargs="*", choices=sorted(MODELS), help="a subset of the models")
    parser.add_argument("--external", action="store_true", help="weights in <name>.onnx.data instead of embedded")
    args = parser.parse_args(argv)
    import torch

    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    for key in args.only or MODELS:
        export_family(key, args.out, args.external)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
