"""Plugin pre-flight in `surgery check`: not loaded, wrong version, field mismatch, INT64 fields, ONNX-name collision."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from onnx import numpy_helper

from converter.trt.backends import select_backend
from converter.trt.capability import check_model
from converter.plugins.catalog import catalog, catalog_spec
from converter.plugins.check import diagnose
from surgery.plugins import FIELD_TYPES
from tests.converter import tiny


def _node(tmp_path, backend: str, op: str, version: str, **fields):
    path = tiny.save(tiny.with_plugin(op, version, **fields), tmp_path, "plugin")
    report = check_model(path, select_backend(backend), build=False)
    return next(n for n in report.nodes if n.name == "plugin")


def test_catalog_entries_are_builtin_typed_and_current():
    entries = catalog()
    assert ("ROIAlign_TRT", "2") in entries and ("InstanceNormalization_TRT", "3") in entries
    assert ("ModulatedDeformConv2d", "2") in entries and ("ScatterElements", "2") in entries
    assert {v for (op, v) in entries if op == "CustomSkipLayerNormPluginDynamic"} == {"5", "6", "7", "8"}
    for spec in entries.values():
        assert spec.builtin and spec.namespace == "" and spec.notes
        assert set(spec.fields.values()) <= set(FIELD_TYPES)
    assert "DEPRECATED" in catalog_spec("EfficientNMS_TRT").notes
    assert catalog_spec("ROIAlign_TRT", "1") is None


@pytest.mark.trt
def test_plugin_not_loaded(tmp_path):
    node = _node(tmp_path, "tensorrt-rtx", "MissingPlugin_TRT", "1")
    assert (node.status, node.kind) == ("unsupported", "plugin-not-loaded")
    assert "--plugins" in node.remedy


@pytest.mark.trt
def test_wrong_version_names_the_registered_one(tmp_path):
    node = _node(tmp_path, "tensorrt-rtx", "ROIAlign_TRT", "1")
    assert node.kind == "plugin-not-loaded"
    assert "registered: v2 namespace ''" in node.reason


@pytest.mark.trt
@pytest.mark.parametrize("fields,words", [
    ({"bogus_field": 3}, "unknown field 'bogus_field'"),
    ({"spatial_scale": 1}, "field 'spatial_scale' is INT but the registered creator expects FLOAT32"),
    ({"output_height": numpy_helper.from_array(np.array([2], np.int64), "oh")}, "'output_height' is an INT64 tensor"),
])
def test_field_mismatch_against_the_creator(tmp_path, fields, words):
    node = _node(tmp_path, "tensorrt-rtx", "ROIAlign_TRT", "2", **fields)
    assert (node.status, node.kind) == ("unsupported", "plugin-field-mismatch"), node.reason
    assert words in node.reason


@pytest.mark.trt
def test_matching_fields_pass(tmp_path):
    node = _node(tmp_path, "tensorrt-rtx", "ROIAlign_TRT", "2", spatial_scale=0.5, output_height=2)
    assert node.kind != "plugin-field-mismatch", node.reason


@pytest.mark.parametrize("fields,words", [
    ({"scale": numpy_helper.from_array(np.ones(4, np.int64), "s")}, "'scale' is an INT64 tensor"),
    ({"scale": [1.0, 1.0, 1.0, 1.0]}, "'scale' is FLOATS but the InstanceNormalization_TRT v3 catalog entry expects tensor"),
    ({"epsilon": 1}, "'epsilon' is INT"),
])
def test_static_backend_checks_fields_against_the_catalog(tmp_path, fields, words):
    node = _node(tmp_path, "static", "InstanceNormalization_TRT", "3", **fields)
    assert node.kind == "plugin-field-mismatch" and words in node.reason


@pytest.mark.parametrize("backend", ["static", pytest.param("tensorrt-rtx", marks=pytest.mark.trt)])
def test_plugin_named_like_an_onnx_op_is_flagged(tmp_path, backend):
    node = _node(tmp_path, backend, "LayerNormalization", "1", epsilon=1e-5)
    assert (node.status, node.kind) == ("unsupported", "plugin-name-collision")
    assert "ONNX op LayerNormalization" in node.reason and "no ONNX op" in node.remedy


def test_registry_without_get_creator_falls_back_to_the_creator_list():
    field = SimpleNamespace(name="alpha", type=SimpleNamespace(name="FLOAT32"))
    creator = SimpleNamespace(name="Leaky_X", plugin_version="1", plugin_namespace="", field_names=[field])
    trt = SimpleNamespace(get_plugin_registry=lambda: SimpleNamespace(all_creators=[creator]))
    assert diagnose(trt, "Leaky_X", {"plugin_version": "1", "alpha": 0.1}) == ("ok", "")
    kind, reason = diagnose(trt, "Leaky_X", {"plugin_version": "1", "plugin_namespace": "acme"})
    assert kind == "plugin-not-loaded" and "registered: v1 namespace ''" in reason
