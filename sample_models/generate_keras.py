"""Generate the tiny Keras sample models (converted with tf2onnx) for the onnx-surgery tests.

Run from the repository root, in the venv described by ``requirements-keras.txt``
(TensorFlow and tf2onnx need numpy<2 and protobuf 3.20, which the torch venv cannot share)::

    python sample_models/generate_keras.py

Builds three Keras models with random weights (fixed seeds), converts them with
``tf2onnx.convert.from_keras`` at opset 17, writes ``<name>.onnx`` and
``<name>.spec.json``, updates the keras entries of ``manifest.json`` and then verifies
every model in the manifest with the shared verifier from ``generate.py``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np

sys.dont_write_bytecode = True  # keep sample_models/ free of __pycache__
sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate as common  # noqa: E402  (shared spec/verify/manifest helpers; imports no torch)

HERE = common.HERE
OPSET = 17
log = logging.getLogger("sample_models.keras")

SEQ, DIM, HEADS, LAYERS, FF = 8, 32, 2, 2, 64


def build_mha():
    """Two post-norm transformer encoder blocks: MHA -> Add -> LN -> Dense(gelu) -> Dense -> Add -> LN."""
    import tensorflow as tf
    from tensorflow import keras

    x_in = keras.Input(shape=(SEQ, DIM), name="x")
    x = x_in
    for i in range(LAYERS):
        attn = keras.layers.MultiHeadAttention(num_heads=HEADS, key_dim=DIM // HEADS, name=f"mha_{i}")(x, x)
        x = keras.layers.LayerNormalization(epsilon=1e-5, name=f"ln_attn_{i}")(x + attn)
        h = keras.layers.Dense(FF, activation=lambda t: tf.nn.gelu(t, approximate=False), name=f"ff1_{i}")(x)
        h = keras.layers.Dense(DIM, name=f"ff2_{i}")(h)
        x = keras.layers.LayerNormalization(epsilon=1e-5, name=f"ln_ff_{i}")(x + h)
    return keras.Model(x_in, x, name="keras_mha")


def build_cnn():
    """NHWC Conv2D/BatchNorm/ReLU x2 with pooling and a Dense head."""
    from tensorflow import keras

    x_in = keras.Input(shape=(32, 32, 3), name="x")
    x = x_in
    for i, ch in enumerate((8, 16)):
        x = keras.layers.Conv2D(ch, 3, padding="same", use_bias=False, name=f"conv_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        x = keras.layers.ReLU(name=f"relu_{i}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(10, name="head")(x)
    model = keras.Model(x_in, x, name="keras_cnn")
    rng = np.random.default_rng(11)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.uniform(-0.2, 0.2, n),
                               rng.uniform(-0.5, 0.5, n), rng.uniform(0.5, 1.5, n)])
    return model


def build_lstm():
    from tensorflow import keras

    x_in = keras.Input(shape=(None, 16), name="x")
    x = keras.layers.LSTM(32, return_sequences=True, name="lstm")(x_in)
    x = keras.layers.Dense(8, name="head")(x)
    return keras.Model(x_in, x, name="keras_lstm")


# name -> (builder, family, seed, spec inputs, symbolic input shape, blocks)
KERAS_SAMPLES: dict[str, tuple[Callable[[], Any], str, int, list[dict[str, Any]], tuple, dict[str, int]]] = {
    "keras_mha": (build_mha, "keras_mha", 21, [common.float_input("x", [1, SEQ, DIM])], (None, SEQ, DIM),
                  {"layernorm": 2 * LAYERS, "gelu": LAYERS, "attention": LAYERS}),
    "keras_cnn": (build_cnn, "keras_cnn", 22, [common.float_input("x", [1, 32, 32, 3])], (None, 32, 32, 3), {}),
    "keras_lstm": (build_lstm, "keras_lstm", 23, [common.float_input("x", [1, SEQ, 16])], (None, None, 16), {}),
}


def _layer_prefix(name: str, model_name: str) -> str:
    """``keras_mha/mha_0/query/einsum/Einsum__12`` -> ``keras_mha/mha_0``; generated names -> model name."""
    parts = name.split("/")
    return "/".join(parts[:2]) if parts[0] == model_name and len(parts) > 2 else model_name


def canonicalize(path: Path, model_name: str, dim_names: dict[int, str]) -> None:
    """Make tf2onnx output byte-for-byte reproducible.

    tf2onnx names generated nodes with a process-global counter and Python object ids, and
    its optimizers visit nodes in an order that varies between runs (which of two equal
    constants survives, which node comes first).  Rebuild the graph in a canonical order
    (topological level, then a content hash of each node) and rename every internal node,
    tensor and initializer as ``<model>/<keras layer>/<Op>_<k>``; graph inputs and outputs
    keep their names, and their symbolic dims get stable names.
    """
    import hashlib

    import onnx

    model = onnx.load(str(path))
    g = model.graph
    key: dict[str, str] = {i.name: "in:" + i.name for i in g.input}
    for t in g.initializer:
        anon = onnx.TensorProto()
        anon.CopyFrom(t)
        anon.name = ""
        key[t.name] = "init:" + hashlib.sha1(anon.SerializeToString(deterministic=True)).hexdigest()
    level = {name: 0 for name in key}
    pending = list(g.node)
    ordered: list[tuple[int, str, onnx.NodeProto]] = []
    while pending:
        rest = []
        for n in pending:
            if all(i == "" or i in key for i in n.input):
                attrs = b"".join(a.SerializeToString(deterministic=True) for a in n.attribute)
                h = hashlib.sha1("|".join([n.op_type, n.domain] + [key.get(i, "") for i in n.input]).encode()
                                 + attrs).hexdigest()
                lv = 1 + max([level.get(i, 0) for i in n.input] or [0])
                for j, o in enumerate(n.output):
                    key[o], level[o] = f"{h}:{j}", lv
                ordered.append((lv, h, n))
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise RuntimeError(f"{path.name}: graph is not a DAG")
        pending = rest
    ordered.sort(key=lambda t: (t[0], t[1]))

    keep = {v.name for v in list(g.input) + list(g.output)}
    rename: dict[str, str] = {}
    counters: dict[str, int] = {}

    def fresh(stem: str) -> str:
        counters[stem] = counters.get(stem, -1) + 1
        return f"{stem}_{counters[stem]}"

    inits = {t.name: t for t in g.initializer}
    used_inits: list[onnx.TensorProto] = []
    for _, _, n in ordered:
        prefix = _layer_prefix(n.name, model_name)
        for i in n.input:
            if i in inits and i not in rename:
                # Named after its first consumer: tf2onnx shares equal constants between
                # layers, and which layer's copy survives varies from run to run.
                rename[i] = fresh(f"{prefix}/const")
                used_inits.append(inits[i])
        n.name = fresh(f"{prefix}/{n.op_type}")
        for j, o in enumerate(n.output):
            if o and o not in keep:
                rename[o] = f"{n.name}:{j}"
    for n in (t[2] for t in ordered):
        n.input[:] = [rename.get(i, i) for i in n.input]
        n.output[:] = [rename.get(o, o) for o in n.output]
    for t in used_inits:
        t.name = rename[t.name]
    del g.value_info[:]  # stale after renaming; shape inference recreates it on demand
    nodes = [onnx.NodeProto() for _ in ordered]
    for dst, (_, _, src) in zip(nodes, ordered):
        dst.CopyFrom(src)
    inits_sorted = [onnx.TensorProto() for _ in used_inits]
    for dst, src in zip(inits_sorted, used_inits):
        dst.CopyFrom(src)
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    g.initializer.extend(inits_sorted)
    for vi in list(g.input) + list(g.output):
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_param"):
                d.dim_param = dim_names.get(axis, f"dim{axis}")
    onnx.save_model(model, str(path))


def convert(name: str, entries: list[dict[str, Any]]) -> None:
    import tensorflow as tf
    import tf2onnx

    build, family, seed, inputs, sym_shape, blocks = KERAS_SAMPLES[name]
    tf.keras.utils.set_random_seed(seed)
    model = build()
    path = HERE / f"{name}.onnx"
    spec = [tf.TensorSpec(sym_shape, tf.float32, name=inputs[0]["name"])]
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET, output_path=str(path))
    common.finalize_model(path)
    canonicalize(path, name, {0: "batch", 1: "seq"} if family != "keras_cnn" else {0: "batch"})
    common.write_spec(name, inputs)
    info = common.verify_one(name)
    ref = model(info["feeds"][inputs[0]["name"]], training=False).numpy()
    np.testing.assert_allclose(info["outputs"][0], ref, atol=1e-4, rtol=1e-3, err_msg=f"{name} vs keras")
    log.info("  %s matches keras (max abs err %.2e)", name, float(np.max(np.abs(info["outputs"][0] - ref))))
    common.record(entries, name, "keras", "tf2onnx", OPSET, family, blocks)


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    common.log.setLevel(logging.INFO)
    entries: list[dict[str, Any]] = []
    for name in KERAS_SAMPLES:
        log.info("converting %s (tf2onnx, opset %d)", name, OPSET)
        convert(name, entries)
    common.update_manifest(entries, "keras", replace_all=True)
    return 0 if common.verify_all() else 1


if __name__ == "__main__":
    sys.exit(main())
