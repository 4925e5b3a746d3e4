"""Generate the tiny PyTorch sample models used by the onnx-surgery tests.

Run from the repository root, in the venv described by ``requirements-torch.txt``::

    python sample_models/generate.py            # regenerate every torch model, then verify
    python sample_models/generate.py --verify   # only verify what is on disk (all sources)

Every model is built from a ``transformers`` config class or a hand-written
module with random weights (fixed seeds, no downloads), exported with the
TorchScript exporter (opset 17) and, where it works, the dynamo exporter
(opset 18).  Next to each ``<name>.onnx`` the script writes ``<name>.spec.json``
(a concrete input spec) and it updates the torch entries of ``manifest.json``.
The Keras models come from ``generate_keras.py`` (a different venv).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "manifest.json"
MAX_IR_VERSION = 10
TS_OPSET = 17
DYNAMO_OPSET = 18
# Opset 17 makes the TorchScript exporter emit a fused LayerNormalization; the extra
# opset-14 exports keep the classic decomposed ReduceMean/Sub/Pow/Sqrt/Div pattern.
LEGACY_OPSET = 14
BLOCK_KEYS = ("layernorm", "rmsnorm", "gelu", "attention", "groupnorm")

log = logging.getLogger("sample_models")


# --------------------------------------------------------------------------- helpers
def finalize_model(path: Path) -> None:
    """Embed external data, make node metadata machine-independent, cap the IR version, re-save."""
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    for ext in list(path.parent.glob(path.name + ".data")) + list(path.parent.glob(path.stem + ".onnx_data")):
        ext.unlink()
    # The dynamo exporter's node metadata maps each node to its module and source line, which the
    # source-mapping tests need. Keep those keys, with file paths made relative (site-packages and
    # repository prefixes dropped) so regeneration is reproducible across machines.
    graphs = [model.graph] + [f for f in model.functions]
    for g in graphs:
        for node in g.node:
            node.doc_string = ""
            kept = [(p.key, _relative_paths(p.value)) for p in node.metadata_props if p.key in KEPT_NODE_METADATA]
            del node.metadata_props[:]
            for key, value in kept:
                node.metadata_props.add(key=key, value=value)
    model.graph.doc_string = ""
    del model.metadata_props[:]
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise RuntimeError(f"{path.name}: initializer {t.name} still external")
    onnx.save_model(model, str(path), save_as_external_data=False)


KEPT_NODE_METADATA = ("namespace", "pkg.torch.onnx.class_hierarchy", "pkg.torch.onnx.name_scopes",
                      "pkg.torch.onnx.stack_trace")
_FILE_RE = re.compile(r'File "([^"]+)"')


def _relative_paths(text: str) -> str:
    """``File "/x/site-packages/torch/nn/f.py"`` -> ``File "torch/nn/f.py"``; repo files relative to the repo."""
    root = str(HERE.parent) + os.sep

    def rel(m: re.Match) -> str:
        name = m.group(1)
        if "site-packages/" in name:
            name = name.split("site-packages/", 1)[1]
        elif name.startswith(root):
            name = name[len(root):]
        return f'File "{name}"'

    return _FILE_RE.sub(rel, text)


def _json_lines(key: str | None, items: list[dict[str, Any]]) -> str:
    """One JSON object per line: small, readable and diff-friendly."""
    body = ",\n".join("  " + json.dumps(i) for i in items)
    return (f'{{"{key}": [\n{body}\n]}}\n' if key else f"[\n{body}\n]\n")


def write_spec(name: str, inputs: list[dict[str, Any]]) -> None:
    (HERE / f"{name}.spec.json").write_text(_json_lines("inputs", inputs))


def int_input(name: str, shape: list[int], low: int, high: int) -> dict[str, Any]:
    return {"name": name, "shape": shape, "dtype": "int64", "low": low, "high": high}


def float_input(name: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "shape": shape, "dtype": "float32"}


def feeds_from_spec(spec: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in spec["inputs"]:
        dtype = np.dtype(inp["dtype"])
        if np.issubdtype(dtype, np.integer):
            feeds[inp["name"]] = rng.integers(inp["low"], inp["high"], size=inp["shape"]).astype(dtype)
        else:
            feeds[inp["name"]] = rng.standard_normal(inp["shape"]).astype(dtype)
    return feeds


def torch_inputs(spec_inputs: list[dict[str, Any]], batch: int, seed: int = 0) -> tuple:
    """Example tensors for tracing; batch 2 so that the batch dim is not specialised to 1."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for inp in spec_inputs:
        shape = [batch] + list(inp["shape"][1:])
        if inp["dtype"] == "int64":
            out.append(torch.randint(inp["low"], inp["high"], shape, generator=g, dtype=torch.int64))
        else:
            out.append(torch.randn(shape, generator=g))
    return tuple(out)


@dataclass
class TorchSample:
    """One source model plus how to export it."""

    family: str
    build: Callable[[], Any]                      # returns an eval()-mode nn.Module
    inputs: list[dict[str, Any]]                   # spec inputs (batch 1)
    output_names: list[str]
    dynamic: dict[str, dict[int, str]]             # input/output name -> {axis: dim name}
    blocks: dict[str, int]
    legacy_opset: bool = False                     # also export <family>_ts_op14.onnx
    seed: int = 0
    notes: list[str] = field(default_factory=list)
    # dynamo only: "dim" = one strict torch.export.Dim per dim name; "multiple" = derived dims
    # k * Dim(f"{name}_div{k}") for the names in dynamo_dim_multiples, renamed back to the plain
    # names in the ONNX graph (unet_dyn: plain Dims fail the guards that the pools + skip
    # Concats put on height/width, and string/Dim.DYNAMIC dims crash torch's guard solver).
    dynamo_dims: str = "dim"
    dynamo_dim_multiples: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- models
def _hf_wrap(model, input_names: list[str], out_attr: str):
    """Wrap an HF model so it takes positional tensors (named like the ONNX inputs) and returns one tensor."""
    import torch

    class TextWrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, input_ids, attention_mask):
            return getattr(self.m(input_ids=input_ids, attention_mask=attention_mask), out_attr)

    class ImageWrapped(TextWrapped):
        def forward(self, pixel_values):  # type: ignore[override]
            return getattr(self.m(pixel_values=pixel_values), out_attr)

    cls = {("input_ids", "attention_mask"): TextWrapped, ("pixel_values",): ImageWrapped}[tuple(input_names)]
    return cls().eval()


def build_bert():
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=32, hidden_act="gelu",
                     attn_implementation="eager")
    m = BertModel(cfg, add_pooling_layer=False).eval()
    assert m.config._attn_implementation == "eager"
    return _hf_wrap(m, ["input_ids", "attention_mask"], "last_hidden_state")


def build_gpt2():
    from transformers import GPT2Config, GPT2Model

    cfg = GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=32, n_inner=128,
                     activation_function="gelu_new", use_cache=False, bos_token_id=99, eos_token_id=99, attn_implementation="eager")
    m = GPT2Model(cfg).eval()
    assert m.config._attn_implementation == "eager"
    return _hf_wrap(m, ["input_ids", "attention_mask"], "last_hidden_state")


def build_vit():
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=64, hidden_act="gelu",
                    attn_implementation="eager")
    m = ViTModel(cfg, add_pooling_layer=False).eval()
    assert m.config._attn_implementation == "eager"
    return _hf_wrap(m, ["pixel_values"], "last_hidden_state")


def build_llama():
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      rms_norm_eps=1e-6, use_cache=False, attn_implementation="eager")
    m = LlamaModel(cfg).eval()
    assert m.config._attn_implementation == "eager"
    return _hf_wrap(m, ["input_ids", "attention_mask"], "last_hidden_state")


def build_cnn():
    import torch
    from torch import nn

    def cbs(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())

    def bsc(cin: int, cout: int) -> nn.Sequential:
        # BN that follows a Concat cannot be folded into a Conv by the exporter, so one
        # BatchNormalization node survives in the ONNX graph.
        return nn.Sequential(nn.BatchNorm2d(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, 1, 1))

    class TinyCNN(nn.Module):
        """Stem -> stride-2 down -> nearest 2x upsample -> concat with the stem -> BN/SiLU/Conv -> 1x1 head."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = cbs(3, 8)
            self.down = cbs(8, 16, stride=2)
            self.mid = cbs(16, 16)
            self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
            self.fuse = bsc(24, 16)
            self.head = nn.Conv2d(16, 4, 1)

        def forward(self, x):
            s = self.stem(x)
            y = self.up(self.mid(self.down(s)))
            return self.head(self.fuse(torch.cat([y, s], dim=1)))

    m = TinyCNN()
    # Non-trivial BatchNorm statistics so that folding BN is numerically visible.
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return m.eval()


def build_unet():
    import torch
    from torch import nn

    class ResnetBlock(nn.Module):
        def __init__(self, ch: int, temb_ch: int, groups: int) -> None:
            super().__init__()
            self.norm1 = nn.GroupNorm(groups, ch, eps=1e-5)
            self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
            self.temb_proj = nn.Linear(temb_ch, ch)
            self.norm2 = nn.GroupNorm(groups, ch, eps=1e-5)
            self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
            self.act = nn.SiLU()

        def forward(self, x, temb):
            h = self.conv1(self.act(self.norm1(x)))
            h = h + self.temb_proj(self.act(temb))[:, :, None, None]
            h = self.conv2(self.act(self.norm2(h)))
            return x + h

    class Attention(nn.Module):
        """Decomposed multi-head attention: MatMul -> scale -> Softmax -> MatMul."""

        def __init__(self, dim: int, ctx_dim: int, heads: int) -> None:
            super().__init__()
            self.heads = heads
            self.scale = (dim // heads) ** -0.5
            self.to_q = nn.Linear(dim, dim, bias=False)
            self.to_k = nn.Linear(ctx_dim, dim, bias=False)
            self.to_v = nn.Linear(ctx_dim, dim, bias=False)
            self.to_out = nn.Linear(dim, dim)

        def _split(self, t):
            b, n, d = t.shape
            return t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

        def forward(self, x, ctx):
            q, k, v = self._split(self.to_q(x)), self._split(self.to_k(ctx)), self._split(self.to_v(ctx))
            attn = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * self.scale, dim=-1)
            out = torch.matmul(attn, v).transpose(1, 2)
            b, n, h, d = out.shape
            return self.to_out(out.reshape(b, n, h * d))

    class TransformerBlock(nn.Module):
        def __init__(self, ch: int, ctx_dim: int, heads: int, groups: int) -> None:
            super().__init__()
            self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
            self.proj_in = nn.Conv2d(ch, ch, 1)
            self.norm1 = nn.LayerNorm(ch)
            self.attn1 = Attention(ch, ch, heads)          # self-attention
            self.norm2 = nn.LayerNorm(ch)
            self.attn2 = Attention(ch, ctx_dim, heads)     # cross-attention
            self.norm3 = nn.LayerNorm(ch)
            self.ff = nn.Sequential(nn.Linear(ch, 4 * ch), nn.GELU(), nn.Linear(4 * ch, ch))
            self.proj_out = nn.Conv2d(ch, ch, 1)

        def forward(self, x, ctx):
            b, c, h, w = x.shape
            res = x
            t = self.proj_in(self.norm(x)).permute(0, 2, 3, 1).reshape(b, h * w, c)
            n1 = self.norm1(t)
            t = t + self.attn1(n1, n1)
            t = t + self.attn2(self.norm2(t), ctx)
            t = t + self.ff(self.norm3(t))
            t = t.reshape(b, h, w, c).permute(0, 3, 1, 2)
            return self.proj_out(t) + res

    class UNetBlock(nn.Module):
        def __init__(self, ch: int = 32, temb_ch: int = 32, ctx_dim: int = 24, heads: int = 2, groups: int = 8):
            super().__init__()
            self.resnet = ResnetBlock(ch, temb_ch, groups)
            self.transformer = TransformerBlock(ch, ctx_dim, heads, groups)

        def forward(self, sample, temb, encoder_hidden_states):
            return self.transformer(self.resnet(sample, temb), encoder_hidden_states)

    return UNetBlock().eval()


def build_lstm():
    from torch import nn

    class TinyLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(input_size=16, hidden_size=32, num_layers=2, batch_first=True)
            self.head = nn.Linear(32, 8)

        def forward(self, x):
            y, _ = self.lstm(x)
            return self.head(y)

    return TinyLSTM().eval()


def _randomize_bn(m) -> None:
    """Non-trivial BatchNorm statistics so that folding BN is numerically visible."""
    import torch
    from torch import nn

    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)


def build_yolo():
    import torch
    from torch import nn

    def cbs(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())

    class TinyYOLO(nn.Module):
        """3 stride-2 CBS stages (strides 2/4/8), nearest 2x upsample of the deepest feature,
        skip Concat with the stride-4 stage, 1x1 head, YOLOv5-style decode with a grid
        built from the runtime feature-map size (arange/meshgrid over h, w)."""

        na, nc = 3, 4
        stride = 4.0

        def __init__(self) -> None:
            super().__init__()
            self.s1 = cbs(3, 8, stride=2)
            self.s2 = cbs(8, 16, stride=2)
            self.s3 = cbs(16, 32, stride=2)
            self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
            self.head = nn.Conv2d(32 + 16, self.na * (5 + self.nc), 1)
            # anchor sizes in pixels, one (w, h) pair per anchor
            self.register_buffer("anchors", torch.tensor([[4.0, 5.0], [8.0, 10.0], [13.0, 16.0]]))

        def forward(self, images):
            f2 = self.s2(self.s1(images))
            f3 = self.s3(f2)
            p = self.head(torch.cat([self.up(f3), f2], dim=1))
            b, _, h, w = p.shape
            p = p.view(b, self.na, 5 + self.nc, h, w).permute(0, 1, 3, 4, 2)
            yv, xv = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                                    torch.arange(w, dtype=torch.float32), indexing="ij")
            grid = torch.stack((xv, yv), dim=2).view(1, 1, h, w, 2)
            xy = (torch.sigmoid(p[..., 0:2]) * 2.0 - 0.5 + grid) * self.stride
            wh = (torch.sigmoid(p[..., 2:4]) * 2.0) ** 2 * self.anchors.view(1, self.na, 1, 1, 2)
            conf = torch.sigmoid(p[..., 4:])
            return torch.cat([xy, wh, conf], dim=-1).reshape(b, -1, 5 + self.nc)

    m = TinyYOLO()
    _randomize_bn(m)
    return m.eval()


UNET_DYN_DOWNS = ("max", "conv", "max")     # per level: 2x2 MaxPool or 3x3 stride-2 Conv


def build_unet_dyn():
    import torch
    from torch import nn

    def down(kind: str, ch: int) -> nn.Module:
        return nn.MaxPool2d(2) if kind == "max" else nn.Conv2d(ch, ch, 3, 2, 1)

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class TinyUNet(nn.Module):
        """3 down levels (UNET_DYN_DOWNS: MaxPool / stride-2 Conv) and 3 up levels
        (ConvTranspose2d, bilinear Upsample, ConvTranspose2d), each up level
        concatenated with the encoder feature of the same resolution."""

        def __init__(self) -> None:
            super().__init__()
            self.enc0 = block(3, 8)                                              # H
            self.down1 = down(UNET_DYN_DOWNS[0], 8)
            self.enc1 = block(8, 16)                                             # H/2
            self.down2 = down(UNET_DYN_DOWNS[1], 16)
            self.enc2 = block(16, 32)                                            # H/4
            self.down3 = down(UNET_DYN_DOWNS[2], 32)
            self.mid = block(32, 32)                                             # H/8
            self.up3 = nn.ConvTranspose2d(32, 32, 2, stride=2)                   # -> H/4
            self.dec2 = block(32 + 32, 32)
            self.up2 = nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False)  # -> H/2
            self.dec1 = block(32 + 16, 16)
            self.up1 = nn.ConvTranspose2d(16, 16, 2, stride=2)                   # -> H
            self.dec0 = block(16 + 8, 8)
            self.out = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            e0 = self.enc0(x)
            e1 = self.enc1(self.down1(e0))
            e2 = self.enc2(self.down2(e1))
            m = self.mid(self.down3(e2))
            d2 = self.dec2(torch.cat([self.up3(m), e2], dim=1))
            d1 = self.dec1(torch.cat([self.up2(d2), e1], dim=1))
            d0 = self.dec0(torch.cat([self.up1(d1), e0], dim=1))
            return self.out(d0)

    m = TinyUNet()
    _randomize_bn(m)
    return m.eval()


def build_shape_arith():
    from torch import nn

    class ShapeArith(nn.Module):
        """space-to-depth by reshape/permute (h // 2, w // 2), Conv, flatten to tokens,
        Linear, and back to [b, c', h // 2, w // 2] from the *input* h, w."""

        def __init__(self, c: int = 8, c_out: int = 16) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4 * c, c_out, 3, 1, 1)
            self.act = nn.ReLU()
            self.proj = nn.Linear(c_out, c_out)

        def forward(self, x):
            b, c, h, w = x.shape
            x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)
            x = self.act(self.conv(x))
            c2 = x.shape[1]
            t = self.proj(x.flatten(2).transpose(1, 2))                          # [b, h*w/4, c']
            return t.transpose(1, 2).reshape(b, c2, h // 2, w // 2)

    return ShapeArith().eval()


def _text_dyn(names: list[str]) -> dict[str, dict[int, str]]:
    return {n: {0: "batch", 1: "seq"} for n in names}


SAMPLES: dict[str, TorchSample] = {
    "bert": TorchSample(
        family="bert", build=build_bert, seed=1,
        inputs=[int_input("input_ids", [1, 8], 0, 100), int_input("attention_mask", [1, 8], 1, 2)],
        output_names=["last_hidden_state"],
        dynamic=_text_dyn(["input_ids", "attention_mask", "last_hidden_state"]),
        blocks={"layernorm": 5, "gelu": 2, "attention": 2}, legacy_opset=True),
    "gpt2": TorchSample(
        family="gpt2", build=build_gpt2, seed=2,
        inputs=[int_input("input_ids", [1, 8], 0, 100), int_input("attention_mask", [1, 8], 1, 2)],
        output_names=["last_hidden_state"],
        dynamic=_text_dyn(["input_ids", "attention_mask", "last_hidden_state"]),
        blocks={"layernorm": 5, "gelu": 2, "attention": 2}, legacy_opset=True),
    "vit": TorchSample(
        family="vit", build=build_vit, seed=3,
        inputs=[float_input("pixel_values", [1, 3, 32, 32])],
        output_names=["last_hidden_state"],
        dynamic={"pixel_values": {0: "batch"}, "last_hidden_state": {0: "batch"}},
        blocks={"layernorm": 5, "gelu": 2, "attention": 2}),
    "llama": TorchSample(
        family="llama", build=build_llama, seed=4,
        inputs=[int_input("input_ids", [1, 8], 0, 100), int_input("attention_mask", [1, 8], 1, 2)],
        output_names=["last_hidden_state"],
        dynamic=_text_dyn(["input_ids", "attention_mask", "last_hidden_state"]),
        blocks={"rmsnorm": 5, "attention": 2}),
    "cnn": TorchSample(
        family="cnn", build=build_cnn, seed=5,
        inputs=[float_input("x", [1, 3, 32, 32])],
        output_names=["y"],
        dynamic={"x": {0: "batch"}, "y": {0: "batch"}},
        blocks={}),
    "unet": TorchSample(
        family="unet", build=build_unet, seed=6,
        inputs=[float_input("sample", [1, 32, 8, 8]), float_input("temb", [1, 32]),
                float_input("encoder_hidden_states", [1, 8, 24])],
        output_names=["out"],
        dynamic={"sample": {0: "batch"}, "temb": {0: "batch"},
                 "encoder_hidden_states": {0: "batch", 1: "ctx_len"}, "out": {0: "batch"}},
        blocks={"groupnorm": 3, "layernorm": 3, "gelu": 1, "attention": 2}),
    "lstm": TorchSample(
        family="lstm", build=build_lstm, seed=7,
        inputs=[float_input("x", [1, 8, 16])],
        output_names=["y"],
        dynamic={"x": {0: "batch", 1: "seq"}, "y": {0: "batch", 1: "seq"}},
        blocks={}),
    "yolo": TorchSample(
        family="yolo", build=build_yolo, seed=8,
        inputs=[float_input("images", [1, 3, 64, 64])],
        output_names=["detections"],
        dynamic={"images": {0: "batch", 2: "height", 3: "width"}, "detections": {0: "batch", 1: "num_boxes"}},
        blocks={}),
    "unet_dyn": TorchSample(
        family="unet_dyn", build=build_unet_dyn, seed=9,
        inputs=[float_input("x", [1, 3, 64, 64])],
        output_names=["y"],
        dynamic={"x": {0: "batch", 2: "height", 3: "width"}, "y": {0: "batch", 2: "height", 3: "width"}},
        blocks={}, dynamo_dims="multiple", dynamo_dim_multiples={"height": 8, "width": 8}),
    "shape_arith": TorchSample(
        family="shape_arith", build=build_shape_arith, seed=10,
        inputs=[float_input("x", [1, 8, 32, 32])],
        output_names=["y"],
        dynamic={"x": {0: "batch", 2: "height", 3: "width"}, "y": {0: "batch", 2: "half_height", 3: "half_width"}},
        blocks={}),
}


# --------------------------------------------------------------------------- export
def export_torchscript(sample: TorchSample, model, name: str, opset: int) -> Path:
    import torch

    path = HERE / f"{name}.onnx"
    args = torch_inputs(sample.inputs, batch=2, seed=sample.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=False, opset_version=opset,
                          input_names=[i["name"] for i in sample.inputs], output_names=sample.output_names,
                          dynamic_axes=sample.dynamic, do_constant_folding=True)
    return path


def export_dynamo(sample: TorchSample, model, name: str) -> Path:
    import torch

    path = HERE / f"{name}.onnx"
    args = torch_inputs(sample.inputs, batch=2, seed=sample.seed)
    dims: dict[str, Any] = {}
    dynamic_shapes = {}
    for inp in sample.inputs:
        axes = sample.dynamic.get(inp["name"], {})
        for dn in axes.values():
            k = sample.dynamo_dim_multiples.get(dn) if sample.dynamo_dims == "multiple" else None
            if dn not in dims:
                dims[dn] = torch.export.Dim(f"{dn}_div{k}", min=1) * k if k else torch.export.Dim(dn)
        dynamic_shapes[inp["name"]] = {ax: dims[dn] for ax, dn in axes.items()} or None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(model, args, dynamo=True, opset_version=DYNAMO_OPSET,
                                 input_names=[i["name"] for i in sample.inputs],
                                 output_names=sample.output_names,
                                 dynamic_shapes=dynamic_shapes,
                                 external_data=False, verbose=False)
    prog.save(str(path), external_data=False)
    if sample.dynamo_dims == "multiple":
        _rename_input_dims(path, sample)
    return path


def _rename_input_dims(path: Path, sample: TorchSample) -> None:
    """Give derived input dims (``8*height_div8``) their plain names everywhere in the graph."""
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    names: dict[str, str] = {}
    for gi in model.graph.input:
        for ax, dn in sample.dynamic.get(gi.name, {}).items():
            d = gi.type.tensor_type.shape.dim[ax]
            if d.dim_param and d.dim_param != dn:
                names[d.dim_param] = dn
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param in names:
                d.dim_param = names[d.dim_param]
    onnx.save_model(model, str(path), save_as_external_data=False)


def record(entries: list[dict[str, Any]], name: str, source: str, exporter: str, opset: int,
           family: str, blocks: dict[str, int]) -> None:
    entries.append({"name": name, "file": f"{name}.onnx", "source": source, "exporter": exporter,
                    "opset": opset, "family": family,
                    "blocks": {k: int(blocks.get(k, 0)) for k in BLOCK_KEYS}})


def generate_torch(only: list[str] | None) -> tuple[list[dict[str, Any]], dict[str, str]]:
    import torch

    torch.use_deterministic_algorithms(True)
    entries: list[dict[str, Any]] = []
    failures: dict[str, str] = {}
    for key, sample in SAMPLES.items():
        if only and key not in only:
            continue
        torch.manual_seed(sample.seed)
        model = sample.build()
        exports = [(f"{key}_ts", "torchscript", TS_OPSET)]
        if sample.legacy_opset:
            exports.append((f"{key}_ts_op{LEGACY_OPSET}", "torchscript", LEGACY_OPSET))
        exports.append((f"{key}_dynamo", "dynamo", DYNAMO_OPSET))
        for name, exporter, opset in exports:
            log.info("exporting %s (%s, opset %d)", name, exporter, opset)
            try:
                if exporter == "torchscript":
                    path = export_torchscript(sample, model, name, opset)
                else:
                    path = export_dynamo(sample, model, name)
                finalize_model(path)
                write_spec(name, sample.inputs)
                err = compare_with_torch(name, model)
                log.info("  %s matches torch (max abs err %.2e)", name, err)
            except Exception as exc:  # recorded in the report and README, file removed
                failures[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                log.warning("export of %s failed: %s", name, failures[name])
                log.debug("%s", traceback.format_exc())
                for p in (HERE / f"{name}.onnx", HERE / f"{name}.spec.json"):
                    p.unlink(missing_ok=True)
                continue
            record(entries, name, "torch", exporter, opset, sample.family, sample.blocks)
    return entries, failures


def update_manifest(entries: list[dict[str, Any]], source: str, replace_all: bool) -> None:
    old = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else []
    new_names = {e["name"] for e in entries}
    kept = [e for e in old if not (e["source"] == source and (replace_all or e["name"] in new_names))]
    merged = sorted(kept + entries, key=lambda e: (e["source"] != "torch", e["name"]))
    MANIFEST.write_text(_json_lines(None, merged))


# --------------------------------------------------------------------------- verify
def verify_one(name: str) -> dict[str, Any]:
    """check_model + onnxruntime CPU run on the spec's random inputs; outputs must be finite."""
    import onnx
    import onnxruntime as ort

    path = HERE / f"{name}.onnx"
    spec = json.loads((HERE / f"{name}.spec.json").read_text())
    model = onnx.load(str(path), load_external_data=False)
    if model.ir_version > MAX_IR_VERSION:
        raise ValueError(f"{name}: ir_version {model.ir_version} > {MAX_IR_VERSION}")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise ValueError(f"{name}: has external data")
    onnx.checker.check_model(model, full_check=True)
    graph_inputs = [i.name for i in model.graph.input]
    spec_inputs = [i["name"] for i in spec["inputs"]]
    if graph_inputs != spec_inputs:
        raise ValueError(f"{name}: graph inputs {graph_inputs} != spec inputs {spec_inputs}")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feeds = feeds_from_spec(spec, seed=0)
    outs = sess.run(None, feeds)
    for o, meta in zip(outs, sess.get_outputs()):
        if not np.all(np.isfinite(o)):
            raise ValueError(f"{name}: output {meta.name} is not finite")
    # Symbolic dims must really be dynamic: run again with each of them doubled.
    grown = {"inputs": []}
    for inp, gi in zip(spec["inputs"], model.graph.input):
        dims = gi.type.tensor_type.shape.dim
        shape = [s * 2 if d.dim_param or not d.HasField("dim_value") else s for s, d in zip(inp["shape"], dims)]
        grown["inputs"].append({**inp, "shape": shape})
    dynamic = grown["inputs"] != spec["inputs"]
    if dynamic:
        for o in sess.run(None, feeds_from_spec(grown, seed=1)):
            if not np.all(np.isfinite(o)):
                raise ValueError(f"{name}: non-finite output with grown dynamic dims")
    return {"name": name, "feeds": feeds, "outputs": outs, "dynamic": dynamic,
            "shapes": {m.name: list(o.shape) for m, o in zip(sess.get_outputs(), outs)}}


def compare_with_torch(name: str, model, atol: float = 1e-4, rtol: float = 1e-3) -> float:
    """The exported model must reproduce the torch module on the spec's inputs."""
    import torch

    info = verify_one(name)
    with torch.no_grad():
        ref = model(*[torch.from_numpy(v) for v in info["feeds"].values()])
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    worst = 0.0
    for r, o in zip(ref, info["outputs"]):
        r = r.numpy()
        worst = max(worst, float(np.max(np.abs(r - o))))
        np.testing.assert_allclose(o, r, atol=atol, rtol=rtol, err_msg=f"{name} vs torch")
    return worst


def verify_all() -> bool:
    entries = json.loads(MANIFEST.read_text())
    ok = True
    for e in entries:
        try:
            info = verify_one(e["name"])
            log.info("OK   %-22s dynamic=%-5s %s", e["name"], info["dynamic"], info["shapes"])
        except Exception as exc:
            ok = False
            log.error("FAIL %-22s %s", e["name"], exc)
    total = sum(p.stat().st_size for p in HERE.iterdir() if p.is_file())
    log.info("sample_models/ total size: %.2f MB", total / 1e6)
    if total > 8 * 1024 * 1024:
        log.error("sample_models/ exceeds 8 MB")
        ok = False
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verify", action="store_true", help="only verify the models listed in manifest.json")
    parser.add_argument("--only", nargs="*", help=f"subset of {sorted(SAMPLES)}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.DEBUG if os.environ.get("SAMPLE_MODELS_DEBUG") else logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not args.verify:
        entries, failures = generate_torch(args.only)
        update_manifest(entries, "torch", replace_all=not args.only)
        for name, why in failures.items():
            log.warning("skipped %s: %s", name, why)
    return 0 if verify_all() else 1


if __name__ == "__main__":
    sys.exit(main())
