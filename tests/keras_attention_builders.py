"""Keras MultiHeadAttention as tf2onnx lowers its einsums (hidden 8, seq 4, 2 heads of 4), built in code.

Mirrors sample_models/keras_mha.onnx after the trt preset's cleanup: Q/K/V [B,S,H,D] -> Unsqueeze ->
5-D Transpose -> Reshape [B*H,.,.] -> MatMul -> Reshape [B,H,.,.,1] -> Squeeze, Softmax on axis 2 of the
transposed scores [B,H,Sk,Sq]; with ``dynamic`` the Reshape targets come from Shape of the 5-D tensors.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from tests.builders import const, make_model, tensor

HIDDEN, SEQ, HEADS = 8, 4, 2
HEAD = HIDDEN // HEADS
LAYOUT = {"q": (1, [0, 3, 1, 2, 4]), "k": (2, [0, 3, 1, 2, 4]), "v": (2, [0, 3, 2, 4, 1]), "p": (2, [0, 1, 4, 2, 3])}


def keras_attention_model(scaled: bool = True, dynamic: bool = True, scale_shape: tuple = (), gather_idx=(0, 1),
                          flat_q=None, score_target=None, extra_output: str = "") -> onnx.ModelProto:
    """The tf2onnx Keras MHA core between the Q/K/V projections and the output projection.

    Args:
        scaled: Mul the query by 1/√D first (Keras does).
        dynamic: batch ``batch`` and run-time Reshape targets; else batch 2 and constant targets.
        scale_shape: shape of the query scale constant (``(HEAD,)`` makes it per-channel).
        gather_idx: the indices the dynamic plumbing gathers from each Shape (B and H are 0, 1).
        flat_q: constant target tail override for the query flatten Reshape (``dynamic=False``), whole target.
        score_target: (constant target, squeeze axis) override for the scores unflatten (``dynamic=False``).
        extra_output: expose this internal tensor as a graph output too.
    """
    rng = np.random.default_rng(3)
    b = "batch" if dynamic else 2
    inits = [const(f"w{n}", rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32) * 0.5) for n in "qkv"]
    inits += [const("split", np.array([0, 0, HEADS, HEAD], np.int64)), const("merge", np.array([0, 0, HIDDEN], np.int64)),
              const("gidx", np.array(gather_idx, np.int64)), const("ax4", np.array([4], np.int64)),
              const("c_m1", np.array([-1], np.int64)), const("c_1", np.array([1], np.int64)),
              const("c_s", np.array([SEQ], np.int64)), const("c_d", np.array([HEAD], np.int64)),
              const("qscale", np.full(scale_shape, HEAD ** -0.5, np.float32))]
    inits += [const(f"ax_{n}", np.array([a], np.int64)) for n, (a, _) in LAYOUT.items()]
    nodes = []
    for n in "qkv":
        nodes += [helper.make_node("MatMul", ["x", f"w{n}"], [f"{n}2"], name=f"proj_{n}"),
                  helper.make_node("Reshape", [f"{n}2", "split"], [f"{n}4"], name=f"split_{n}")]
    q = "q4"
    if scaled:
        nodes.append(helper.make_node("Mul", ["q4", "qscale"], ["qs"], name="q_scale"))
        q = "qs"

    def flat(n: str, src: str, tail: list[str], override=None) -> str:
        nodes.extend([helper.make_node("Unsqueeze", [src, f"ax_{n}"], [f"{n}u"], name=f"{n}_unsqueeze"),
                      helper.make_node("Transpose", [f"{n}u"], [f"{n}t"], name=f"{n}_t5", perm=LAYOUT[n][1])])
        if dynamic:
            nodes.extend([helper.make_node("Shape", [f"{n}t"], [f"{n}sh"], name=f"{n}_shape"),
                          helper.make_node("Gather", [f"{n}sh", "gidx"], [f"{n}g"], name=f"{n}_gather"),
                          helper.make_node("ReduceProd", [f"{n}g"], [f"{n}p"], name=f"{n}_prod", keepdims=1),
                          helper.make_node("Concat", [f"{n}p", *tail], [f"{n}tg"], name=f"{n}_target", axis=0)])
        else:
            value = override if override is not None else [2 * HEADS, -1, SEQ if tail[1] == "c_s" else HEAD]
            inits.append(const(f"{n}tg", np.array(value, np.int64)))
        nodes.append(helper.make_node("Reshape", [f"{n}t", f"{n}tg"], [f"{n}r"], name=f"{n}_flat"))
        return f"{n}r"

    def unflat(name: str, src: str, a: str, c: str, tail: list[int], override=None) -> str:
        axis = "ax4"
        if dynamic:
            nodes.extend([helper.make_node("Max", [f"{a}g", f"{c}g"], [f"{name}m"], name=f"{name}_max"),
                          helper.make_node("Concat", [f"{name}m", *[f"{name}c{i}" for i in range(3)]], [f"{name}tg"],
                                           name=f"{name}_target", axis=0)])
            inits.extend(const(f"{name}c{i}", np.array([v], np.int64)) for i, v in enumerate(tail))
        else:
            value, squeeze = override if override is not None else ([2, HEADS, *tail], 4)
            inits.extend([const(f"{name}tg", np.array(value, np.int64)), const(f"{name}ax", np.array([squeeze], np.int64))])
            axis = f"{name}ax"
        nodes.extend([helper.make_node("Reshape", [src, f"{name}tg"], [f"{name}5"], name=f"{name}_unflat"),
                      helper.make_node("Squeeze", [f"{name}5", axis], [f"{name}4"], name=f"{name}_squeeze")])
        return f"{name}4"

    qr = flat("q", q, ["c_m1", "c_d"], flat_q)
    nodes.append(helper.make_node("Transpose", [qr], ["qrt"], name="q_t3", perm=[0, 2, 1]))
    kr = flat("k", "k4", ["c_m1", "c_d"])
    nodes.append(helper.make_node("MatMul", [kr, "qrt"], ["scores3"], name="scores"))
    scores = unflat("sc", "scores3", "k", "q", [SEQ, SEQ, 1], score_target)
    nodes.append(helper.make_node("Softmax", [scores], ["probs"], name="softmax", axis=2))
    pr = flat("p", "probs", ["c_m1", "c_s"])
    vr = flat("v", "v4", ["c_m1", "c_s"])
    nodes += [helper.make_node("Transpose", [vr], ["vrt"], name="v_t3", perm=[0, 2, 1]),
              helper.make_node("MatMul", [pr, "vrt"], ["ctx3"], name="context")]
    ctx = unflat("o", "ctx3", "p", "v", [SEQ, HEAD, 1])
    nodes += [helper.make_node("Transpose", [ctx], ["ctx_t"], name="merge_t", perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ctx_t", "merge"], ["y"], name="merge")]
    outputs = [tensor("y", [b, SEQ, HIDDEN])] + ([tensor(extra_output, [b, HEADS, SEQ, SEQ])] if extra_output else [])
    model = make_model(nodes, [tensor("x", [b, SEQ, HIDDEN])], outputs, inits, opset=17)
    return onnx.shape_inference.infer_shapes(model)
