"""Post-training quantization for TensorRT: Q/DQ pairs where TensorRT fuses them, calibrated on onnxruntime.

TensorRT 11 takes precision from the ONNX graph alone (the builder's --int8/--fp8 flags are gone), so
quantization is written into the model as QuantizeLinear/DequantizeLinear pairs. Placement follows
TensorRT's recommendations for explicit quantization:

* the inputs of Conv, MatMul and Gemm are quantized: activations per tensor (scale from calibration),
  constant weights per output channel, all symmetric (zero point 0, as TensorRT requires); their
  outputs are not (TensorRT fuses DQ -> op and picks the output precision itself);
* every other reader of a quantized tensor keeps reading the float tensor, so residual Adds, Concat,
  normalizations, Softmax and reductions stay in higher precision;
* fp8 (E4M3FN) only at MatMul/Gemm: TensorRT-RTX runs FP8 in GEMMs only (Ada or later);
* int8 weight-only: the constant 2-D weights of MatMul/Gemm become int8 + DequantizeLinear
  (TensorRT's weight-only GEMM); activations are not quantized.

Calibration and Q/DQ insertion are ``onnxruntime.quantization.quantize_static`` (QDQ format). Each
quantized node's own error is then measured: its output when only its inputs are quantized (fed the
float model's activations) against its float output, as relative L2 over the calibration feeds. A node
above ``max_node_error`` stays in float ("measured error") and the model is quantized again without it.

Not a pass: calibration runs the model on onnxruntime, which passes/ must not import. ``optimize``
runs this after the pass pipeline and reports it like a pass (``quantize-<mode>``).
NVIDIA ModelOpt was not used: its 0.47 wheel requires torch (with CUDA 13 wheels), and its onnx extra
pins onnx~=1.21 and onnxruntime-gpu~=1.24 on Linux x86-64, which would replace this project's onnx and
onnxruntime.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from converter.runtime.numerics import (QUANT_THRESHOLDS, InputSpec, MetricThresholds, OutputDiff, compare,
                                        is_classifier_output, ort_session, random_feeds)
from surgery.errors import UserInputError
from surgery.verify import verify_model

MODES = ("int8", "fp8", "int8-weight-only")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
QUANTIZABLE = ("Conv", "MatMul", "Gemm")  # the ops TensorRT fuses Q/DQ inputs into
GEMMS = ("MatMul", "Gemm")
PROBE_SAMPLES = 4  # calibration feeds the per-node error is measured on
VALIDATION_SAMPLES = 4  # random feeds the result is validated on when calibration came from the spec
RANDOM_CALIBRATION_WARNING = ("random feeds from the input spec: the scales fit random data, which is meaningless "
                              "for a real model's activations; give --calibration-data with real inputs")


@dataclass(frozen=True)
class QuantizeOptions:
    mode: str
    calibration_data: Path | None = None  # .npz of input feeds; None: random feeds from the input spec
    calibration_samples: int = 8  # random feeds drawn when there is no file
    calibration_method: str = "minmax"  # int8 only; fp8 needs onnxruntime's 'distribution' method
    exclude: tuple[str, ...] = ()  # node names kept in float
    max_node_error: float = 0.1  # a quantized node's own relative L2 error beyond which it stays float
    seed: int = 0


@dataclass
class Decision:
    """Why a Conv/MatMul/Gemm was or was not quantized; ``error`` is its measured own error."""

    rule: str
    reason: str
    error: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "reason": self.reason}
        if self.error is not None:
            out["error"] = round(self.error, 6)
        return out


@dataclass
class Calibration:
    feeds: list[dict[str, np.ndarray]]
    source: str  # "FILE.npz (N samples)" or the random-feeds warning
    from_file: bool


@dataclass
class QuantizeResult:
    model: onnx.ModelProto
    decisions: dict[str, Decision]
    record: dict[str, Any]  # shaped like a pass record of the pipeline report
    validation: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.validation.get("status") == "passed"


# ---- calibration feeds -----------------------------------------------------------------------------------------

def calibration_feeds(model: onnx.ModelProto, specs: Sequence[InputSpec], opts: QuantizeOptions) -> Calibration:
    """Feeds from ``opts.calibration_data`` (each input: one sample, or samples stacked on a new first axis),
    else ``calibration_samples`` seeded random feeds from ``specs``."""
    if opts.calibration_data is None:
        feeds = [random_feeds(list(specs), seed=opts.seed + i) for i in range(opts.calibration_samples)]
        return Calibration(feeds, f"{len(feeds)} {RANDOM_CALIBRATION_WARNING}", False)
    path = Path(opts.calibration_data)
    if not path.is_file():
        raise UserInputError(f"{path}: no such calibration file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:
        raise UserInputError(f"{path}: not a .npz of input arrays ({str(exc)[:120]})") from None
    ranks = _input_ranks(model)
    missing = [name for name in ranks if name not in arrays]
    if missing:
        raise UserInputError(f"{path}: missing calibration input(s) {', '.join(missing)} (keys: {', '.join(arrays)})")
    dtypes = {s.name: np.dtype(s.dtype) for s in specs}
    counts = set()
    for name, rank in ranks.items():
        a = arrays[name]
        if a.ndim == rank:
            arrays[name] = a[None]
        elif a.ndim != rank + 1:
            raise UserInputError(f"{path}: '{name}' has {a.ndim} dims; the input has {rank} (one sample) "
                                 f"or {rank + 1} (samples stacked on the first axis)")
        counts.add(arrays[name].shape[0])
    if len(counts) != 1 or 0 in counts:
        raise UserInputError(f"{path}: inputs hold different or zero sample counts ({sorted(counts)})")
    n = counts.pop()
    feeds = [{k: np.ascontiguousarray(arrays[k][i]).astype(dtypes.get(k, arrays[k].dtype), copy=False) for k in ranks}
             for i in range(n)]
    return Calibration(feeds, f"{path} ({n} sample{'s' if n != 1 else ''})", True)


def _input_ranks(model: onnx.ModelProto) -> dict[str, int]:
    inits = {t.name for t in model.graph.initializer}
    return {vi.name: len(vi.type.tensor_type.shape.dim) for vi in model.graph.input if vi.name not in inits}


def validation_feeds(specs: Sequence[InputSpec], calibration: Calibration, seed: int) -> tuple[list[dict], str]:
    """Held-out random feeds when calibration was random too; the calibration samples themselves when they
    came from a file (random feeds would be out of their distribution)."""
    if calibration.from_file:
        return calibration.feeds, "the calibration samples (in-sample: no held-out data was given)"
    feeds = [random_feeds(list(specs), seed=seed + 1000 + i) for i in range(VALIDATION_SAMPLES)]
    return feeds, f"{len(feeds)} random feeds from the input spec, seeds other than the calibration's"


# ---- which nodes ---------------------------------------------------------------------------------------------

def _constants(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    out = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = n.attribute[0].t
    return out


def candidates(model: onnx.ModelProto, opts: QuantizeOptions) -> dict[str, Decision]:
    """A decision for every Conv/MatMul/Gemm: 'quantized' (pending calibration) or the rule that keeps it float."""
    consts = _constants(model)
    excluded = set(opts.exclude)
    unknown = sorted(excluded - {n.name for n in model.graph.node})
    if unknown:
        raise UserInputError(f"--quantize-exclude: no node named '{unknown[0]}'")
    decisions: dict[str, Decision] = {}
    for n in model.graph.node:
        if n.op_type not in QUANTIZABLE:
            continue
        weight = consts.get(n.input[1]) if len(n.input) > 1 else None
        if n.name in excluded:
            decisions[n.name] = Decision("excluded", "excluded by --quantize-exclude")
        elif opts.mode == "fp8" and n.op_type not in GEMMS:
            decisions[n.name] = Decision("fp8-gemm-only", "fp8: TensorRT-RTX runs FP8 only in matrix multiplications "
                                                          "(MatMul/Gemm), so a Conv stays fp32")
        elif opts.mode == "int8-weight-only" and n.op_type not in GEMMS:
            decisions[n.name] = Decision("weight-only-gemm-only", "weight-only quantization is TensorRT's for "
                                                                  "MatMul/Gemm weights only")
        elif opts.mode == "int8-weight-only" and weight is None:
            decisions[n.name] = Decision("needs-constant-weight", "weight-only: the second input is computed, not "
                                                                  "a constant weight")
        elif n.op_type == "MatMul" and weight is not None and len(weight.dims) != 2:
            decisions[n.name] = Decision("needs-2d-weight", f"its constant weight has {len(weight.dims)} dims; "
                                                            "per-channel scales need a 2-D [K, N] weight")
        else:
            decisions[n.name] = Decision("quantized", "")
    return decisions


# ---- onnxruntime quantize_static ----------------------------------------------------------------------------

class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
        self._it: Iterator[Mapping[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> Mapping[str, np.ndarray] | None:
        return next(self._it, None)


def _ort_quantize(model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]], opts: QuantizeOptions,
                  nodes: Sequence[str]) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if opts.mode == "fp8":
        qtype, method = QuantType.QFLOAT8E4M3FN, CalibrationMethod.Distribution
    else:
        qtype = QuantType.QInt8
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[opts.calibration_method]
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
             "OpTypesToExcludeOutputQuantization": list(QUANTIZABLE), "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}}
    with tempfile.TemporaryDirectory(prefix="surgery-quantize-") as tmp:
        out = Path(tmp) / "quantized.onnx"
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(max(quiet, logging.ERROR))  # quantize_static logs a pre-processing hint
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # and its fp8 calibration prints its progress
                quantize_static(copy.deepcopy(model), out, _Reader(feeds), quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=list(QUANTIZABLE), nodes_to_quantize=list(nodes), per_channel=True,
                                activation_type=qtype, weight_type=qtype, calibrate_method=method, extra_options=extra)
        finally:
            logging.getLogger().setLevel(quiet)
        quantized = onnx.load(str(out))
    _float_for_other_readers(quantized, set(nodes))
    if opts.mode == "int8-weight-only":
        _drop_activation_qdq(quantized)
    _drop_unused_initializers(quantized)
    quantized.producer_name, quantized.producer_version = model.producer_name, model.producer_version
    return quantized


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _float_for_other_readers(model: onnx.ModelProto, targets: set[str]) -> None:
    """Readers of a dequantized activation other than the quantized nodes read the float tensor again.

    quantize_static shares one Q/DQ pair among all readers of a tensor, so a residual Add or a Concat
    next to a quantized Conv would read the rounded value; TensorRT's placement leaves them in float.
    """
    producers = _producers(model)
    for node in model.graph.node:
        if node.name in targets:
            continue
        for i, name in enumerate(node.input):
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
    _drop_dead_qdq(model)


def _drop_activation_qdq(model: onnx.ModelProto) -> None:
    """Weight-only: every Q -> DQ pair on an activation is bypassed; the weights' DQ stay."""
    producers = _producers(model)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
    _drop_dead_qdq(model)


def _drop_dead_qdq(model: onnx.ModelProto) -> None:
    """Remove Q/DQ nodes nothing reads any more (repeated: a dead DQ leaves its Q dead)."""
    outputs = {o.name for o in model.graph.output}
    while True:
        read = {i for n in model.graph.node for i in n.input} | outputs
        dead = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in read for o in n.output)]
        if not dead:
            return
        for n in dead:
            model.graph.node.remove(n)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in read]
    if len(keep) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)


# ---- measured error per node --------------------------------------------------------------------------------

def node_errors(original: onnx.ModelProto, quantized: onnx.ModelProto, nodes: Sequence[str],
                feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """Each quantized node's own error: relative L2 of its output when only its inputs are quantized.

    One probe model: the float ``original`` plus, per node, a copy of its Q/DQ inputs and of the node,
    reading the original's float tensors. Errors do not accumulate from earlier layers.
    """
    if not nodes:
        return {}
    probe = copy.deepcopy(original)
    qnodes = {n.name: n for n in quantized.graph.node}
    producers = _producers(quantized)
    qinits = {t.name: t for t in quantized.graph.initializer}
    have = {t.name for t in probe.graph.initializer}
    pairs: dict[str, tuple[str, str]] = {}
    for name in nodes:
        node = qnodes[name]
        prefix = f"probe/{name}/"
        inputs = []
        for tensor in node.input:
            dq = producers.get(tensor)
            if dq is None or dq.op_type != "DequantizeLinear":
                inputs.append(tensor)
                continue
            q = producers.get(dq.input[0])
            chain = [q, dq] if q is not None and q.op_type == "QuantizeLinear" else [dq]
            renamed: dict[str, str] = {}
            for link in chain:
                clone = copy.deepcopy(link)
                clone.name = prefix + link.name
                clone.input[:] = [renamed.get(i, i) for i in link.input]
                for j, out in enumerate(link.output):
                    renamed[out] = clone.output[j] = prefix + out
                probe.graph.node.append(clone)
                for i in link.input:
                    if i in qinits and i not in have:
                        probe.graph.initializer.append(qinits[i])
                        have.add(i)
            inputs.append(renamed[dq.output[0]])
        clone = copy.deepcopy(node)
        clone.name = prefix + node.name
        clone.input[:] = inputs
        clone.output[:] = [prefix + o for o in node.output]
        probe.graph.node.append(clone)
        pairs[name] = (node.output[0], clone.output[0])
    _raise_opset(probe, quantized)
    names = [t for pair in pairs.values() for t in pair]
    for t in names:
        probe.graph.output.append(helper.make_empty_tensor_value_info(t))
    sess = ort_session(probe)
    wanted = {i.name for i in sess.get_inputs()}
    diff2 = dict.fromkeys(pairs, 0.0)
    ref2 = dict.fromkeys(pairs, 0.0)
    for feed in feeds:
        values = dict(zip(names, sess.run(names, {k: v for k, v in feed.items() if k in wanted})))
        for name, (ref, cand) in pairs.items():
            r, c = values[ref].astype(np.float64), values[cand].astype(np.float64)
            diff2[name] += float(np.sum((r - c) ** 2))
            ref2[name] += float(np.sum(r ** 2))
    return {name: (np.sqrt(diff2[name] / ref2[name]) if ref2[name] > 0 else (0.0 if diff2[name] == 0 else float("inf")))
            for name in pairs}


def _raise_opset(model: onnx.ModelProto, like: onnx.ModelProto) -> None:
    """The default-domain opset of ``like`` where it is higher (fp8 Q/DQ need 19)."""
    want = next((o.version for o in like.opset_import if o.domain in ("", "ai.onnx")), 0)
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx") and o.version < want:
            o.version = want


# ---- validation ---------------------------------------------------------------------------------------------

def validate_quantized(reference: onnx.ModelProto, candidate: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]],
                       thresholds: MetricThresholds) -> list[OutputDiff]:
    """Every output of both models over all ``feeds`` (stacked), judged by ``thresholds``."""
    ref_sess, cand_sess = ort_session(reference), ort_session(candidate)
    names = [o.name for o in reference.graph.output]
    ref_out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    cand_out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feed in feeds:
        for sess, out in ((ref_sess, ref_out), (cand_sess, cand_out)):
            wanted = {i.name for i in sess.get_inputs()}
            for n, v in zip(names, sess.run(names, {k: x for k, x in feed.items() if k in wanted})):
                out[n].append(np.asarray(v))
    diffs = []
    for n in names:
        classifier = is_classifier_output(ref_out[n][0].shape)
        r, c = np.stack(ref_out[n]), np.stack(cand_out[n])
        diffs.append(compare(r, c, n, rtol=0.0, atol=0.0, metrics=thresholds, top1=classifier))
    return diffs


# ---- the step -----------------------------------------------------------------------------------------------

def quantize_model(model: onnx.ModelProto, calibration: Calibration, opts: QuantizeOptions, *,
                   reference: onnx.ModelProto | None = None, validation: tuple[list[dict], str] | None = None
                   ) -> QuantizeResult:
    """Quantize the float ``model`` (the pipeline's output) and validate it against ``reference``
    (the original; default ``model``) on ``validation`` feeds (default: the calibration feeds)."""
    if opts.mode not in MODES:
        raise UserInputError(f"quantization mode must be one of {', '.join(MODES)}, got {opts.mode!r}")
    if opts.calibration_method not in CALIBRATION_METHODS:
        raise UserInputError(f"--calibration-method must be one of {', '.join(CALIBRATION_METHODS)}")
    start = time.perf_counter()
    decisions = candidates(model, opts)
    targets = [n for n, d in decisions.items() if d.rule == "quantized"]
    quantized = _ort_quantize(model, calibration.feeds, opts, targets) if targets else copy.deepcopy(model)
    probe_feeds = calibration.feeds[:PROBE_SAMPLES]
    errors = node_errors(model, quantized, targets, probe_feeds)
    too_far = [n for n in targets if errors[n] > opts.max_node_error]
    for n in too_far:
        decisions[n] = Decision("measured-error", f"measured error: its output moved by relative L2 {errors[n]:.3g} "
                                                  f"with its inputs quantized (limit {opts.max_node_error:g})", errors[n])
    if too_far:  # the activation ranges come from the float model, so the others' errors stay as measured
        targets = [n for n in targets if n not in too_far]
        quantized = _ort_quantize(model, calibration.feeds, opts, targets) if targets else copy.deepcopy(model)
    for n in targets:
        decisions[n] = Decision("quantized" if opts.mode != "int8-weight-only" else "weight-only",
                                _quantized_reason(opts.mode), errors[n])
    verify_model(quantized)
    seconds = time.perf_counter() - start
    counts = {op: sum(1 for n in quantized.graph.node if n.op_type == op) for op in ("QuantizeLinear", "DequantizeLinear")}
    stats: dict[str, int] = {"applied": len(targets), **counts}
    for d in decisions.values():
        if d.rule not in ("quantized", "weight-only"):
            stats[f"kept-float:{d.rule}"] = stats.get(f"kept-float:{d.rule}", 0) + 1
    notes = [f"calibration: {calibration.source}" + (f", {opts.calibration_method}" if opts.mode != "fp8" else
                                                     ", distribution (onnxruntime's method for fp8)")]
    if too_far:
        notes.append(f"kept in float for measured error > {opts.max_node_error:g}: {', '.join(too_far)}")
    result = QuantizeResult(quantized, decisions, {
        "name": f"quantize-{opts.mode}", "changed": len(targets), "stats": dict(sorted(stats.items())), "notes": notes,
        "seconds": round(seconds, 4), "verified": True, "sweep": 0})
    feeds, where = validation or (calibration.feeds, "the calibration samples")
    thresholds = QUANT_THRESHOLDS[opts.mode]
    diffs = validate_quantized(reference if reference is not None else model, quantized, feeds, thresholds)
    status = "passed" if all(d.passed for d in diffs) else "failed"
    result.validation = {"status": status, "against": "the original model", "feeds": where,
                         "thresholds": thresholds.describe(),
                         "outputs": [{"name": d.name, "cosine": d.cosine, "rel_l2": d.rel_l2, "top1": d.top1,
                                      "max_abs": d.max_abs, "passed": d.passed} for d in diffs]}
    notes.append(f"validation {status} on {where}: " + "; ".join(d.describe() for d in diffs)
                 + f" (thresholds: {thresholds.describe()})")
    return result


def _quantized_reason(mode: str) -> str:
    if mode == "int8-weight-only":
        return "int8 weight-only: the constant weight is int8 per output channel; activations stay float"
    kind = "int8" if mode == "int8" else "fp8 E4M3"
    return (f"{kind}: activation inputs per tensor (calibrated), weights per output channel, symmetric; "
            "TensorRT fuses the Q/DQ into the kernel")


__all__ = ["MODES", "CALIBRATION_METHODS", "QuantizeOptions", "QuantizeResult", "Decision", "Calibration",
           "calibration_feeds", "validation_feeds", "candidates", "node_errors", "quantize_model",
           "validate_quantized", "RANDOM_CALIBRATION_WARNING"]
