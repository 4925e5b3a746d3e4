"""Generate a BERT-like encoder in the TorchScript-export style, weights streamed to external data.

The graph is built with ``onnx.helper``; each initializer is drawn from a seeded rng and written to the
data file at once, so generation holds one tensor in memory at a time. Patterns reproduced from
``torch.onnx.export`` (opset 14) of HuggingFace BERT: decomposed LayerNorm
(ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add), erf GELU, attention with Reshape/Transpose head
split, MatMul, Div scale, Add mask, Softmax, and the dynamic-shape subgraphs
Shape -> Gather -> Unsqueeze -> Concat -> Reshape.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 14


@dataclass(frozen=True)
class BertConfig:
    layers: int
    hidden: int = 1024
    heads: int = 16
    vocab: int = 30522
    max_pos: int = 512

    @property
    def layer_bytes(self) -> int:
        h = self.hidden
        return 4 * (4 * h * h + 2 * 4 * h * h + 13 * h)

    @property
    def fixed_bytes(self) -> int:
        return 4 * (self.vocab + self.max_pos + 2 + 2) * self.hidden


def config_for_bytes(target: int, hidden: int = 1024) -> BertConfig:
    base = BertConfig(layers=1, hidden=hidden)
    layers = max(1, math.ceil((target - base.fixed_bytes) / base.layer_bytes))
    return BertConfig(layers=layers, hidden=hidden)


class _Builder:
    def __init__(self, data_path: Path, seed: int) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.data = open(data_path, "wb")
        self.location = data_path.name
        self.offset = 0
        self.n = 0
        self.bytes = 0

    def weight(self, name: str, shape: tuple[int, ...], kind: str = "normal") -> str:
        if kind == "normal":
            arr = self.rng.standard_normal(shape, dtype=np.float32)
            arr *= np.float32(0.02)
        else:  # LayerNorm gamma ("ones") / biases ("zeros"): trained values, never exactly 1 or 0
            arr = self.rng.standard_normal(shape, dtype=np.float32)
            arr *= np.float32(0.02)
            arr += np.float32(1.0 if kind == "ones" else 0.0)
        raw = arr.tobytes()
        del arr
        pad = (-self.offset) % 64
        self.data.write(b"\0" * pad)
        self.offset += pad
        self.data.write(raw)
        t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape))
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.location), ("offset", str(self.offset)), ("length", str(len(raw)))):
            t.external_data.add(key=k, value=v)
        self.offset += len(raw)
        self.bytes += len(raw)
        self.inits.append(t)
        return name

    def const(self, value, dtype=None) -> str:
        """A small inline initializer, named like the TorchScript exporter's ``onnx::`` constants."""
        self.n += 1
        name = f"onnx::Constant_{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], prefix: str, n_out: int = 1, **attrs) -> str | list[str]:
        self.n += 1
        outs = [f"{prefix}/{op_type}_{self.n}_output_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=f"{prefix}/{op_type}_{self.n}", **attrs))
        return outs[0] if n_out == 1 else outs

    def close(self) -> None:
        self.data.close()


def _layer_norm(b: _Builder, x: str, prefix: str, hidden: int) -> str:
    mean = b.op("ReduceMean", [x], prefix, axes=[-1], keepdims=1)
    d = b.op("Sub", [x, mean], prefix)
    p = b.op("Pow", [d, b.const(np.float32(2.0))], prefix)
    var = b.op("ReduceMean", [p], prefix, axes=[-1], keepdims=1)
    s = b.op("Sqrt", [b.op("Add", [var, b.const(np.float32(1e-12))], prefix)], prefix)
    n = b.op("Div", [d, s], prefix)
    m = b.op("Mul", [n, b.weight(f"{prefix}.weight", (hidden,), "ones")], prefix)
    return b.op("Add", [m, b.weight(f"{prefix}.bias", (hidden,), "zeros")], prefix)


def _linear(b: _Builder, x: str, prefix: str, n_in: int, n_out: int) -> str:
    # TorchScript stores the transposed weight as an anonymous initializer and adds the bias first.
    w = b.weight(f"onnx::MatMul_{prefix}", (n_in, n_out))
    y = b.op("MatMul", [x, w], prefix)
    return b.op("Add", [b.weight(f"{prefix}.bias", (n_out,), "zeros"), y], prefix)


def _dim(b: _Builder, x: str, axis: int, prefix: str) -> str:
    shape = b.op("Shape", [x], prefix)
    g = b.op("Gather", [shape, b.const(np.int64(axis))], prefix, axis=0)
    return b.op("Unsqueeze", [g, b.const([0], np.int64)], prefix)


def _heads(b: _Builder, x: str, cfg: BertConfig, prefix: str, perm: list[int]) -> str:
    new_shape = b.op("Concat", [_dim(b, x, 0, prefix), _dim(b, x, 1, prefix),
                                b.const([cfg.heads], np.int64), b.const([cfg.hidden // cfg.heads], np.int64)],
                     prefix, axis=0)
    return b.op("Transpose", [b.op("Reshape", [x, new_shape], prefix)], prefix, perm=perm)


def _layer(b: _Builder, x: str, mask: str, cfg: BertConfig, i: int) -> str:
    h, pre = cfg.hidden, f"encoder.layer.{i}"
    q = _heads(b, _linear(b, x, f"{pre}.attention.self.query", h, h), cfg, f"{pre}.attention.self", [0, 2, 1, 3])
    k = _heads(b, _linear(b, x, f"{pre}.attention.self.key", h, h), cfg, f"{pre}.attention.self", [0, 2, 3, 1])
    v = _heads(b, _linear(b, x, f"{pre}.attention.self.value", h, h), cfg, f"{pre}.attention.self", [0, 2, 1, 3])
    sp = f"{pre}.attention.self"
    scores = b.op("Div", [b.op("MatMul", [q, k], sp), b.const(np.float32(math.sqrt(h // cfg.heads)))], sp)
    probs = b.op("Softmax", [b.op("Add", [scores, mask], sp)], sp, axis=-1)
    ctx = b.op("Transpose", [b.op("MatMul", [probs, v], sp)], sp, perm=[0, 2, 1, 3])
    merged = b.op("Concat", [_dim(b, ctx, 0, sp), _dim(b, ctx, 1, sp), b.const([h], np.int64)], sp, axis=0)
    ctx = b.op("Reshape", [ctx, merged], sp)
    attn = _linear(b, ctx, f"{pre}.attention.output.dense", h, h)
    x = _layer_norm(b, b.op("Add", [attn, x], pre), f"{pre}.attention.output.LayerNorm", h)
    inter = _linear(b, x, f"{pre}.intermediate.dense", h, 4 * h)
    gp = f"{pre}.intermediate.intermediate_act_fn"
    erf = b.op("Erf", [b.op("Div", [inter, b.const(np.float32(1.4142135381698608))], gp)], gp)
    gelu = b.op("Mul", [b.op("Mul", [inter, b.op("Add", [erf, b.const(np.float32(1.0))], gp)], gp),
                        b.const(np.float32(0.5))], gp)
    out = _linear(b, gelu, f"{pre}.output.dense", 4 * h, h)
    return _layer_norm(b, b.op("Add", [out, x], pre), f"{pre}.output.LayerNorm", h)


def build(path: Path, cfg: BertConfig, seed: int = 0) -> int:
    """Write ``path`` and ``path.data``; return the bytes of weights written."""
    data_path = path.with_name(path.name + ".data")
    b = _Builder(data_path, seed)
    try:
        ids, types, amask = "input_ids", "token_type_ids", "attention_mask"
        ep = "embeddings"
        words = b.op("Gather", [b.weight(f"{ep}.word_embeddings.weight", (cfg.vocab, cfg.hidden)), ids], ep)
        seq = b.op("Unsqueeze", [b.op("Gather", [b.op("Shape", [ids], ep), b.const(np.int64(1))], ep, axis=0),
                                 b.const([0], np.int64)], ep)
        pos_ids = b.op("Slice", [b.const(np.arange(cfg.max_pos, dtype=np.int64)[None]), b.const([0], np.int64),
                                 seq, b.const([1], np.int64)], ep)
        pos = b.op("Gather", [b.weight(f"{ep}.position_embeddings.weight", (cfg.max_pos, cfg.hidden)), pos_ids], ep)
        tok = b.op("Gather", [b.weight(f"{ep}.token_type_embeddings.weight", (2, cfg.hidden)), types], ep)
        emb = b.op("Add", [b.op("Add", [words, tok], ep), pos], ep)
        x = _layer_norm(b, emb, f"{ep}.LayerNorm", cfg.hidden)
        m = b.op("Unsqueeze", [b.op("Unsqueeze", [amask, b.const([1], np.int64)], "mask"), b.const([2], np.int64)], "mask")
        m = b.op("Cast", [m], "mask", to=TensorProto.FLOAT)
        m = b.op("Mul", [b.op("Sub", [b.const(np.float32(1.0)), m], "mask"), b.const(np.float32(-10000.0))], "mask")
        for i in range(cfg.layers):
            x = _layer(b, x, m, cfg, i)
        b.nodes[-1].output[0] = "last_hidden_state"
    finally:
        b.close()
    dims = ["batch_size", "sequence_length"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, dims) for n in (ids, types, amask)]
    output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [*dims, cfg.hidden])
    graph = helper.make_graph(b.nodes, "main_graph", inputs, [output], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="pytorch",
                              producer_version="2.1.0")
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return b.bytes
