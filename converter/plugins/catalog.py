"""Catalog of TensorRT's own (standard) plugins: name, version, namespace, fields, input layout, status.

Data only, summarised in our own words from the NVIDIA/TensorRT ``plugin/*/README.md`` files and the
OSS CHANGELOG (releases 10.0-10.14), and, for ROIAlign_TRT, checked against the creator that
TensorRT-RTX 1.7 registers. ``surgery check`` compares plugin nodes with these entries when no
creator (or no field list) is available, and ``--plugin-map`` uses them to type the fields it writes.

Versions: from TensorRT 10.x on, each plugin got an ``IPluginV3`` version that keeps the I/O and
fields of the ``IPluginV2*`` version it replaces; the old version is deprecated. We list the current
version; ``notes`` says what it replaced and what is uncertain. All standard plugins use the empty
namespace. Field types: float, int (also 0/1 booleans), ints, floats, string, tensor (weights: write
them as TENSOR attributes of float32/float16 or int32 data, never INT64).

These specs live in their own table keyed by (name, version), not in ``surgery.plugins``: several
versions of one plugin coexist, and these plugins have no numpy reference (ours carry one in ``passes/plugins.py``).
"""
from __future__ import annotations

from surgery.plugins import FIELD_TYPES, PluginSpec

_CATALOG: dict[tuple[str, str], PluginSpec] = {}


def _add(spec: PluginSpec) -> None:
    assert spec.builtin and all(t in FIELD_TYPES for t in spec.fields.values()), spec.op
    _CATALOG[(spec.op, spec.version)] = spec


def catalog() -> dict[tuple[str, str], PluginSpec]:
    """Every catalog entry by (plugin name, version)."""
    return dict(sorted(_CATALOG.items()))


def catalog_spec(op: str, version: str | None = None) -> PluginSpec | None:
    """The entry for ``op`` at ``version`` (any listed version when None), else None."""
    if version is not None:
        return _CATALOG.get((op, str(version)))
    found = [s for (name, _), s in sorted(_CATALOG.items()) if name == op]
    return found[-1] if found else None


_add(PluginSpec(
    op="ROIAlign_TRT", version="2",
    fields={"coordinate_transformation_mode": "int", "mode": "int", "output_height": "int", "output_width": "int",
            "sampling_ratio": "int", "spatial_scale": "float"},
    inputs=("X", "rois", "batch_indices"), outputs=("Y",), builtin=True,
    notes="ONNX RoiAlign semantics. X [N,C,H,W], rois [R,4], batch_indices [R] (int32); Y [R,C,oh,ow]. "
          "mode 1 = avg, 0 = max; coordinate_transformation_mode 1 = half_pixel (shift by 0.5), 0 = output_half_pixel; "
          "every field has a default. v2 (IPluginV3, TensorRT 10.1) replaces v1, and the ONNX parser imports RoiAlign "
          "through it. Fields and types checked against the TensorRT-RTX 1.7 creator.",
))
_add(PluginSpec(
    op="EfficientNMS_TRT", version="1",
    fields={"score_threshold": "float", "iou_threshold": "float", "max_output_boxes": "int", "background_class": "int",
            "score_activation": "int", "class_agnostic": "int", "box_coding": "int"},
    inputs=("boxes", "scores", "anchors"),
    outputs=("num_detections", "detection_boxes", "detection_scores", "detection_classes"), builtin=True,
    notes="DEPRECATED since TensorRT 10.12 with no newer version (use ONNX NonMaxSuppression / the native NMS layer). "
          "boxes [B,N,4] or [B,N,C,4], scores [B,N,C], optional anchors [1|B,N,4] switch on the fused box decoder; "
          "outputs num_detections [B,1] int32, boxes [B,K,4], scores [B,K], classes [B,K] int32. "
          "box_coding 0 = corners, 1 = center-size; score_activation/class_agnostic are 0/1 booleans; background_class -1 = none.",
))
_add(PluginSpec(
    op="ScatterElements", version="2",
    fields={"axis": "int", "reduction": "string"},
    inputs=("data", "indices", "updates"), builtin=True,
    notes="ONNX ScatterElements with reduction add/mul/max/min (reduction none is native TensorRT). indices must be "
          "int64. v2 (IPluginV3, TensorRT 10.3) replaces v1. Its name is an ONNX op name: the parser imports a node "
          "called ScatterElements as the ONNX op (and routes reductions to this plugin itself), so write the ONNX op, "
          "not a plugin node.",
))
_add(PluginSpec(
    op="ModulatedDeformConv2d", version="2",
    fields={"stride": "ints", "padding": "ints", "dilation": "ints", "group": "int", "deformable_group": "int"},
    inputs=("x", "offset", "mask", "weight", "bias"), builtin=True,
    notes="Modulated deformable convolution (DCNv2), NCHW. offset [N, 2*dg*kh*kw, oh, ow], mask [N, dg*kh*kw, oh, ow], "
          "weight [Cout, Cin/group, kh, kw], optional bias [Cout]; weight and bias are inputs, not fields. "
          "v2 (IPluginV3, TensorRT 10.11) replaces v1 (deprecated in 10.11/10.12; the README and CHANGELOG differ).",
))
_add(PluginSpec(
    op="InstanceNormalization_TRT", version="3",
    fields={"epsilon": "float", "scale": "tensor", "bias": "tensor", "relu": "int", "alpha": "float"},
    inputs=("input",), builtin=True,
    notes="Per-instance, per-channel normalisation of [N,C,H,W] (or 5-D) with scale/bias [C] as TENSOR fields. "
          "v3 (IPluginV3, TensorRT 10.2) is what the parser uses when native InstanceNormalization is turned off; "
          "v2 is deprecated since 10.12 (v1 status unclear). relu/alpha (optional leaky-ReLU after the norm) come "
          "from the plugin source, not the README: unsure. Uses cuDNN, so not supported on Blackwell and later; "
          "prefer the native normalization layer.",
))
_add(PluginSpec(
    op="GroupNormalizationPlugin", version="1",
    fields={"epsilon": "float", "num_groups": "int"},
    inputs=("input", "scale", "bias"), builtin=True,
    notes="DEPRECATED since TensorRT 10.12, no replacement version (native GroupNormalization / normalization layer). "
          "input [N,C,H,W] with C divisible by num_groups; scale and bias [C] are inputs. fp32 only, cuDNN-based "
          "(not on Blackwell and later).",
))
_add(PluginSpec(
    op="CustomSkipLayerNormPluginDynamic", version="5",
    fields={"type_id": "int", "ld": "int", "beta": "tensor", "gamma": "tensor", "bias": "tensor"},
    inputs=("input", "skip"), builtin=True,
    notes="IPluginV3 form of v1 (TensorRT 10.4): LayerNorm(input + skip [+ bias]) over E of [S,B,E,1,1]; ld = E; "
          "type_id 0 fp32, 1 fp16, 2 int8; beta/gamma/bias [1,1,E]; bias optional. No epsilon field.",
))
_add(PluginSpec(
    op="CustomSkipLayerNormPluginDynamic", version="6",
    fields={"type_id": "int", "beta": "tensor", "gamma": "tensor", "bias": "tensor"},
    inputs=("input", "skip"), builtin=True,
    notes="IPluginV3 form of v2 (variable sequence length, TensorRT 10.4); as v5 without ld. bias optional.",
))
_add(PluginSpec(
    op="CustomSkipLayerNormPluginDynamic", version="7",
    fields={"beta": "tensor", "gamma": "tensor"},
    inputs=("input", "skip"), builtin=True,
    notes="IPluginV3 form of v3 (int8 interleaved, variable sequence length; TensorRT 10.4): input [1,E,S',1].",
))
_add(PluginSpec(
    op="CustomSkipLayerNormPluginDynamic", version="8",
    fields={"beta": "tensor", "gamma": "tensor"},
    inputs=("input", "skip"), builtin=True,
    notes="IPluginV3 form of v4 (TensorRT 10.4): input [1,E,S',1]. The v4 layout is from the README's V3/V4 note.",
))
_add(PluginSpec(
    op="CustomQKVToContextPluginDynamic", version="4",
    fields={"type_id": "int", "hidden_size": "int", "num_heads": "int", "has_mask": "int", "dq_probs": "float"},
    inputs=("input", "input_mask"), builtin=True,
    notes="BERT fused MHA, IPluginV3 form of v1 (TensorRT 10.5). input [S,B,3E,1,1] with Q/K/V interleaved per head; "
          "optional input_mask [B] (valid lengths); output [S,B,E,1,1]. The newest plugin README marks versions 1-6 "
          "deprecated (we could not pin the release); prefer native attention.",
))
_add(PluginSpec(
    op="CustomQKVToContextPluginDynamic", version="5",
    fields={"type_id": "int", "hidden_size": "int", "num_heads": "int", "has_mask": "int", "dq_probs": "float",
            "var_seqlen": "int", "use_int8_scale_max": "int"},
    inputs=("input", "input_mask"), builtin=True,
    notes="IPluginV3 form of v2 (variable sequence length, TensorRT 10.5). Extra inputs in var_seqlen mode are not "
          "listed in the README: unsure. Deprecated in the newest README, as v4.",
))
_add(PluginSpec(
    op="CustomQKVToContextPluginDynamic", version="6",
    fields={"hidden_size": "int", "num_heads": "int", "dq_probs": "float", "use_int8_scale_max": "int"},
    inputs=("input", "input_mask"), builtin=True,
    notes="IPluginV3 form of v3 (int8 interleaved, TensorRT 10.5). Input list unsure (as v5). Deprecated in the newest README.",
))
_add(PluginSpec(
    op="MultiscaleDeformableAttnPlugin_TRT", version="2",
    fields={},
    inputs=("value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights"), builtin=True,
    notes="Deformable DETR multiscale deformable attention; no fields. v2 (IPluginV3, TensorRT 10.11) replaces v1.",
))
_add(PluginSpec(
    op="DisentangledAttention_TRT", version="2",
    fields={"span": "int", "factor": "float"},
    inputs=("c2c", "c2p", "p2c"), builtin=True,
    notes="DeBERTa disentangled attention scores; span = relative distance span, factor = 1/sqrt(scale). "
          "v2 (IPluginV3, TensorRT 10.11) replaces v1. Field names from memory of the v1 README: unsure.",
))
_add(PluginSpec(
    op="CropAndResizeDynamic", version="2",
    fields={"crop_width": "int", "crop_height": "int"},
    inputs=("feature_maps", "rois"), builtin=True,
    notes="TF crop_and_resize for dynamic shapes. v2 (IPluginV3, TensorRT 10.11/10.12; the CHANGELOG lists it in "
          "both) replaces v1; CropAndResize (static) is deprecated since 9.0.",
))
