"""What TensorRT does with a Q/DQ model's QuantizeLinear/DequantizeLinear pairs, from a real parse and build.

The parse turns each Q/DQ node into an IQuantizeLayer/IDequantizeLayer. A verbose TensorRT-RTX build
on the CPU prints the kernels it compiled (``Name: ..., LayerType: gemm, Inputs: [... Datatype: Int8 ...],
Constants: [...], Outputs: [...], ... Metadata: [ONNX Layer: ...]``): which ONNX nodes each kernel
covers and the data types of its inputs, constant weights and outputs. From that this module says, per
quantized Conv/MatMul/Gemm, whether it runs in a kernel that reads int8/fp8 data, and whether any Q/DQ
node was left as a kernel of its own (not fused). The build (DETAILED profiling verbosity) runs in a child
process (a crash inside TensorRT must not end the check), once more than the check's own build and only
for Q/DQ models.
"""
from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import onnx

from converter.trt.backends import Backend, select_backend
from converter.trt.build import BuildOptions, EngineBuild

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_HEAD = re.compile(r"^Name: (?P<name>.*?), LayerType: (?P<type>[\w-]+), Inputs: \[")
_KEYS = re.compile(r"(?:^|, )(Inputs|Constants|Outputs|TacticName|StreamId|Metadata): ")
_DTYPE = re.compile(r"Datatype: (\w+)")
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")
_LOW = {"Int8", "FP8", "Fp8", "Float8", "Int4", "FP4"}
_COMPUTE = {"gemm", "correlation", "convolution", "deconvolution", "matmul"}


def has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QDQ_OPS for n in model.graph.node)


def kernels_from_log(text: str) -> list[dict[str, Any]]:
    """The kernels a verbose build printed: name, type, data types of inputs/constants/outputs, ONNX nodes."""
    out = []
    for line in text.splitlines():
        line = line.split("] ", 1)[1] if line.startswith("[") and "] Name: " in line else line
        m = _HEAD.match(line)
        if not m:
            continue
        parts = _sections(line)
        out.append({"name": m["name"], "type": m["type"], "inputs": _DTYPE.findall(parts.get("Inputs", "")),
                    "constants": _DTYPE.findall(parts.get("Constants", "")),
                    "outputs": _DTYPE.findall(parts.get("Outputs", "")),
                    "onnx_nodes": _ONNX_LAYER.findall(parts.get("Metadata", ""))})
    return out


def _sections(line: str) -> dict[str, str]:
    """``Key: value`` sections of a kernel line, split at the known keys (values hold commas and brackets)."""
    found = sorted((m.start(), m.group(1)) for m in _KEYS.finditer(line))
    return {key: line[start + len(key) + 2:(found[i + 1][0] if i + 1 < len(found) else len(line))]
            for i, (start, key) in enumerate(found)}


def _probe_main() -> None:
    """Child-process entry: the one ``EngineBuild``, verbose; (parsed, built, layer types, log text) on stdout."""
    name, model, options = pickle.load(sys.stdin.buffer)
    result_fd = os.dup(1)
    os.dup2(2, 1)  # what TensorRT or polygraphy print goes to stderr (the parent reads it: Myelin logs there)
    build = EngineBuild(select_backend(name), model, options, verbose=True)
    try:
        build()
        built = True
    except Exception:  # a refusal is reported as not built; the check's own build says why
        built = False
    types = dict(Counter(layer["type"] for layer in build.layers))
    with os.fdopen(result_fd, "wb") as out:
        out.write(pickle.dumps((bool(build.layers), built, types, build.logger.capture.text())))


def _verbose_build(backend: Backend, model: bytes | str | Path, options: BuildOptions,
                   timeout_s: float = 600.0) -> tuple[bool, bool, dict[str, int], str]:
    payload = pickle.dumps((backend.name, model, options))
    cmd = [sys.executable, "-c", "from converter.trt.qdq import _probe_main; _probe_main()"]
    try:
        proc = subprocess.run(cmd, input=payload, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return False, False, {}, ""
    if proc.returncode != 0 or not proc.stdout:
        return False, False, {}, proc.stderr.decode(errors="replace")
    parsed, built, types, text = pickle.loads(proc.stdout)
    return parsed, built, types, text + "\n" + proc.stderr.decode(errors="replace")


def qdq_report(backend: Backend, model: onnx.ModelProto, source: bytes | str | Path, options: BuildOptions) -> dict[str, Any]:
    """Q/DQ counts in the model and in the parsed network, and what the build compiled them into."""
    inits = {t.name for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    ops = Counter(n.op_type for n in model.graph.node if n.op_type in QDQ_OPS)
    weight_dq = sum(1 for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits)
    quantized = [n.name for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm")
                 and any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input)]
    parsed, built, layer_types, text = _verbose_build(backend, source, options)
    kernels = kernels_from_log(text) if built else []
    home: dict[str, dict[str, Any]] = {}
    for k in kernels:  # a node's own kernel: the compute kernel (gemm, convolution) before any epilogue kernel
        for node in k["onnx_nodes"]:
            if node not in home or (k["type"] in _COMPUTE and home[node]["type"] not in _COMPUTE):
                home[node] = k
    qdq_names = {n.name for n in model.graph.node if n.op_type in QDQ_OPS}
    nodes = {}
    for name in quantized:
        k = home.get(name)
        nodes[name] = ({"kernel": k["name"], "type": k["type"], "input_types": k["inputs"], "weight_types": k["constants"],
                        "low_precision_inputs": any(t in _LOW for t in k["inputs"] + k["constants"])}
                       if k else {"kernel": None})
    alone = [k["name"] for k in kernels if k["onnx_nodes"] and set(k["onnx_nodes"]) <= qdq_names]
    low = [n for n, v in nodes.items() if v.get("low_precision_inputs")]
    summary = [f"parsed: {ops['QuantizeLinear']} QuantizeLinear -> {layer_types.get('QUANTIZE', 0)} QUANTIZE layers, "
               f"{ops['DequantizeLinear']} DequantizeLinear -> {layer_types.get('DEQUANTIZE', 0)} DEQUANTIZE layers "
               f"({weight_dq} on constant weights)" if parsed else "the parser rejected the model"]
    if built and kernels:
        summary.append(f"built: {len(kernels)} kernels; {len(low)} of {len(quantized)} quantized nodes run in kernels "
                       "that read int8/fp8 data; " + (f"{len(alone)} Q/DQ kernel(s) run alone (not fused): "
                                                       f"{', '.join(alone[:4])}" if alone else
                                                       "every Q/DQ node was fused into a compute kernel"))
        summary.append("the data types are fixed by this build; kernel tactics are finished on the GPU the engine "
                       "runs on (TensorRT-RTX compiles just in time)")
    elif built:
        summary.append("built, but this TensorRT printed no kernel table (only TensorRT-RTX's verbose build does)")
    else:
        summary.append("the verbose build did not produce an engine (see the check's build result)")
    return {"onnx": dict(ops), "weight_dequantize": weight_dq, "quantized_nodes": len(quantized),
            "parsed_layers": {k: layer_types.get(k, 0) for k in ("QUANTIZE", "DEQUANTIZE")}, "built": built,
            "nodes": nodes, "standalone_qdq_kernels": alone,
            "kernels": [k for k in kernels if set(k["onnx_nodes"]) & (qdq_names | set(quantized))], "summary": summary}
