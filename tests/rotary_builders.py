"""Tiny rotary-embedding models (hidden 16, seq 4, 2 heads of 8) in HF Llama's exported form."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.builders import const, make_model, tensor

HIDDEN, SEQ, HEADS = 16, 4, 2
HEAD = HIDDEN // HEADS
B = 2


def rotary_model(cache: str = "concat", split: int = HEAD // 2, concat_axis: int = -1, rank: int = 4,
                 extra_ops: bool = False) -> onnx.ModelProto:
    """y = q*cos + rotate_half(q)*sin on q = head split of x·W, rotate_half = Concat(-q[split:], q[:split]).

    Args:
        cache: ``concat`` (cos/sin = Unsqueeze(Cos/Sin(Concat(f, f))) of constant angles f [1,S,D/2], HF's
            rotary_emb), ``positions`` (f from a ``position_ids`` input [B,S] times inv_freq: a batch-B cache),
            ``const`` (cos/sin constant initializers with equal halves), ``uneven`` (constants whose halves
            differ), ``rank3`` (the concat form without the head Unsqueeze: cos [1,S,D]).
        rank: 4 (rotary on [B,H,S,D]) or 3 (rotary on [B,S,hidden] with D = hidden).
        extra_ops: add an LpNormalization output (its schema changes by opset 23: the opset raise refuses).
    """
    rng = np.random.default_rng(5)
    d = HEAD if rank == 4 else HIDDEN
    inits = [const("w", rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32) * 0.5),
             const("split", np.array([0, 0, HEADS, HEAD], np.int64)), const("ax1", np.array([1], np.int64)),
             const("ax_last", np.array([-1], np.int64)), const("one", np.array([1], np.int64)),
             const("s0", np.array([0], np.int64)), const("smid", np.array([split], np.int64)),
             const("send", np.array([np.iinfo(np.int64).max], np.int64))]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["x2"], name="proj")]
    if rank == 4:
        nodes += [helper.make_node("Reshape", ["x2", "split"], ["x4"], name="heads"),
                  helper.make_node("Transpose", ["x4"], ["q"], name="heads_t", perm=[0, 2, 1, 3])]
    else:
        nodes.append(helper.make_node("Identity", ["x2"], ["q"], name="q"))
    inputs = [tensor("x", [B, SEQ, HIDDEN])]
    angles = rng.uniform(-3, 3, (1, SEQ, d // 2)).astype(np.float32)
    if cache in ("const", "uneven"):
        full = np.concatenate([angles, angles + (0.5 if cache == "uneven" else 0.0)], -1)
        shape = (1, 1, SEQ, d) if rank == 4 else (1, SEQ, d)
        inits += [const("cos", np.cos(full).reshape(shape)), const("sin", np.sin(full).reshape(shape))]
    else:
        if cache == "positions":
            inputs.append(tensor("position_ids", [B, SEQ], TensorProto.INT64))
            inits.append(const("inv_freq", (1.0 / 10000 ** (np.arange(0, d, 2) / d)).astype(np.float32)))
            nodes += [helper.make_node("Cast", ["position_ids"], ["pos_f"], name="pos_cast", to=TensorProto.FLOAT),
                      helper.make_node("Unsqueeze", ["pos_f", "ax_last"], ["pos3"], name="pos_unsqueeze"),
                      helper.make_node("Mul", ["pos3", "inv_freq"], ["freqs"], name="freqs")]
        else:
            inits.append(const("freqs", angles))
        nodes.append(helper.make_node("Concat", ["freqs", "freqs"], ["emb"], name="emb", axis=-1))
        for fn in ("Cos", "Sin"):
            if rank == 4 and cache != "rank3":
                nodes += [helper.make_node(fn, ["emb"], [f"{fn.lower()}3"], name=fn.lower()),
                          helper.make_node("Unsqueeze", [f"{fn.lower()}3", "ax1"], [fn.lower()], name=f"{fn.lower()}_heads")]
            else:
                nodes.append(helper.make_node(fn, ["emb"], [fn.lower()], name=fn.lower()))
    axis = len([B, SEQ, d]) if rank == 3 else 3
    inits.append(const("axis", np.array([axis], np.int64)))
    nodes += [helper.make_node("Slice", ["q", "s0", "smid", "axis", "one"], ["x1"], name="slice_lo"),
              helper.make_node("Slice", ["q", "smid", "send", "axis", "one"], ["xh"], name="slice_hi"),
              helper.make_node("Neg", ["xh"], ["nx"], name="neg"),
              helper.make_node("Concat", ["nx", "x1"], ["rot"], name="rotate_half", axis=concat_axis),
              helper.make_node("Mul", ["q", "cos"], ["qc"], name="q_cos"),
              helper.make_node("Mul", ["rot", "sin"], ["rs"], name="rot_sin"),
              helper.make_node("Add", ["qc", "rs"], ["y"], name="rope")]
    out_shape = [B, HEADS, SEQ, HEAD] if rank == 4 else [B, SEQ, HIDDEN]
    outputs = [tensor("y", out_shape)]
    if extra_ops:
        nodes.append(helper.make_node("LpNormalization", ["x"], ["xn"], name="lpnorm"))
        outputs.append(tensor("xn", [B, SEQ, HIDDEN]))
    model = make_model(nodes, inputs, outputs, inits, opset=17)
    if concat_axis not in (-1, 3):  # shapes would not broadcast: keep only what the pass needs to see
        model.graph.value_info.append(tensor("q", [B, HEADS, SEQ, HEAD]))
        return model
    return onnx.shape_inference.infer_shapes(model)
