"""Raw TensorRT API helpers shared by ``check`` and ``convert``: networks, profiles, a check build.

Everything is feature-detected: ``EXPLICIT_BATCH`` only where it still exists, ``STRONGLY_TYPED``
only where the flag exists, layer metadata only where layers have it.
"""
from __future__ import annotations

import importlib
import pickle
import re
import subprocess
import sys
from types import ModuleType
from typing import Any, Sequence

from converter.trt.backends import make_logger
from surgery.errors import ConversionError

_LAYER_META = re.compile(r"\[ONNX Layer: ([^\]]+)\]")


def network_flags(trt: ModuleType, strongly_typed: bool = False) -> int:
    """Creation flags for an explicit-batch network (the default from TensorRT 10 on)."""
    flags = 0
    ndcf = trt.NetworkDefinitionCreationFlag
    version = str(getattr(trt, "__version__", "0")).split(".")[0]
    if hasattr(ndcf, "EXPLICIT_BATCH") and version.isdigit() and int(version) < 10 and "rtx" not in trt.__name__:
        flags |= 1 << int(ndcf.EXPLICIT_BATCH)
    if strongly_typed:
        if not hasattr(ndcf, "STRONGLY_TYPED"):
            raise ConversionError(f"{trt.__name__} {trt.__version__} has no strongly typed networks")
        flags |= 1 << int(ndcf.STRONGLY_TYPED)
    return flags


def create_network(trt: ModuleType, logger: Any, strongly_typed: bool = False) -> tuple[Any, Any]:
    """(builder, network), wrapping a failure to create a builder (no GPU for full TensorRT)."""
    try:
        builder = trt.Builder(logger)
    except Exception as exc:
        raise ConversionError(f"{trt.__name__} cannot create a builder here ({exc}); "
                              "full TensorRT needs a GPU, TensorRT-RTX builds on CPU") from exc
    if builder is None:
        raise ConversionError(f"{trt.__name__} cannot create a builder here (no usable GPU?)")
    return builder, builder.create_network(network_flags(trt, strongly_typed))


def add_profiles(trt: ModuleType, builder: Any, network: Any, config: Any,
                 profiles: Sequence[dict[str, tuple[list[int], list[int], list[int]]]]) -> None:
    """Add optimization profiles (input -> (min, opt, max)) to ``config``."""
    for prof in profiles:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in prof.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)


def network_profiles(network: Any, profiles: Sequence[dict[str, tuple[list[int], list[int], list[int]]]]
                     ) -> list[dict[str, tuple[list[int], list[int], list[int]]]]:
    """``profiles`` restricted to the network inputs that have a dynamic dim (TensorRT takes no others)."""
    dynamic = {network.get_input(i).name for i in range(network.num_inputs) if any(d < 0 for d in network.get_input(i).shape)}
    return [{k: v for k, v in p.items() if k in dynamic} for p in profiles if any(k in dynamic for k in p)]


def layer_table(network: Any) -> list[dict[str, str]]:
    """Name, type and ONNX-node metadata of every layer in ``network``."""
    out = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        out.append({"name": layer.name, "type": str(layer.type).split(".")[-1], "metadata": getattr(layer, "metadata", "") or ""})
    return out


def mark_attention_decomposable(trt: ModuleType, network: Any) -> int:
    """Let TensorRT decompose attention layers that have no dedicated kernel (e.g. fp32); returns how many."""
    if not hasattr(getattr(trt, "IAttention", object), "decomposable"):
        return 0
    marked = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == trt.LayerType.ATTENTION_INPUT:
            layer.__class__ = trt.IAttentionInputLayer
            layer.attention.decomposable = True
            marked += 1
    return marked


def build_check(trt: ModuleType, data: bytes, path: str, profiles: Sequence[dict],
                decomposable_attention: bool = False) -> tuple[bool, str, list[dict[str, str]]]:
    """Parse and build once with default settings; returns (ok, error text, layer table)."""
    logger = make_logger(trt)
    builder, network = create_network(trt, logger)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data, path):
        desc = "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors))
        return False, desc, layer_table(network)
    if decomposable_attention:
        mark_attention_decomposable(trt, network)
    config = builder.create_builder_config()
    add_profiles(trt, builder, network, config, network_profiles(network, profiles))
    layers = layer_table(network)
    try:
        blob = builder.build_serialized_network(network, config)
    except Exception as exc:  # some versions raise instead of returning None
        return False, f"{exc}\n" + "\n".join(logger.capture.errors()), layers
    if blob is None:
        return False, "\n".join(logger.capture.errors()) or "build returned no engine", layers
    return True, "", layers


def _probe_main() -> None:
    """Child-process entry: read (module, data, path, specs) from stdin, write the result to stdout."""
    module_name, data, path, profiles, decomposable = pickle.load(sys.stdin.buffer)
    trt = importlib.import_module(module_name)
    try:
        from converter.plugins.trt import register_python_plugins

        register_python_plugins(trt)  # the parent's registry does not reach this process
        result = build_check(trt, data, path, profiles, decomposable)
    except Exception as exc:  # report it; the parent turns it into a build failure
        result = (False, f"{type(exc).__name__}: {exc}", [])
    sys.stdout.buffer.write(pickle.dumps(result))


def build_check_isolated(trt: ModuleType, data: bytes, path: str, profiles: Sequence[dict],
                         decomposable_attention: bool = False, timeout_s: float = 600.0) -> tuple[bool, str, list[dict[str, str]]]:
    """``build_check`` in a child process, so a crash inside TensorRT becomes a build failure.

    TensorRT-RTX 1.7 was seen to segfault while building a valid network (an Attention node whose
    q, k and v are one tensor); a crash must not take the whole report down.
    """
    payload = pickle.dumps((trt.__name__, data, path, list(profiles), decomposable_attention))
    cmd = [sys.executable, "-c", "from converter.trt.raw import _probe_main; _probe_main()"]
    try:
        proc = subprocess.run(cmd, input=payload, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return False, f"the TensorRT build did not finish within {timeout_s:.0f} s", []
    if proc.returncode != 0 or not proc.stdout:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] if proc.stderr else []
        return False, f"the TensorRT builder crashed ({how}) while building this model" + (f": {tail[0]}" if tail else ""), []
    return pickle.loads(proc.stdout)


def layer_to_node(layers: Sequence[dict[str, str]], node_names: Sequence[str]) -> dict[str, str]:
    """Map TensorRT layer names to the ONNX node names they came from."""
    by_len = sorted(node_names, key=len, reverse=True)
    out = {}
    for layer in layers:
        m = _LAYER_META.search(layer.get("metadata", ""))
        if m and m.group(1) in node_names:
            out[layer["name"]] = m.group(1)
            continue
        for node in by_len:
            if layer["name"] == node or layer["name"].startswith(node + "_") or layer["name"].startswith(node + "/"):
                out[layer["name"]] = node
                break
    return out


def attribute_build_error(error: str, layers: Sequence[dict[str, str]], node_ops: dict[str, str]) -> set[str]:
    """ONNX node names a builder error is about: named layers/nodes, else the op kind it mentions."""
    mapping = layer_to_node(layers, list(node_ops))
    names = {node for layer, node in mapping.items() if layer and layer in error}
    names |= {n for n in node_ops if n and re.search(rf"(?<![\w/]){re.escape(n)}(?![\w/])", error)}
    if names:
        return names
    for op in sorted(set(node_ops.values())):
        if re.search(rf"\b{re.escape(op)} (operation|layer|node)", error, flags=re.IGNORECASE):
            names |= {n for n, o in node_ops.items() if o == op}
    return names
