"""map-plugins: op-type and named-pattern rules, field sources and types, rejections, idempotence, TOML loading."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from converter.cli.main import main
from converter.plugins.map import load_plugin_map
from passes.map_plugins import parse_plugin_map
from surgery.errors import UserInputError
from surgery.plugins import PLUGIN_DOMAIN
from tests.builders import const, make_model, tensor
from tests.fusion_builders import layernorm_model
from tests.helpers import apply_pass, ops, same_graph

LN_RULE = {"op": "LayerNormalization", "plugin": "MyLayerNorm", "version": "3", "namespace": "acme",
           "attrs": {"epsilon": "eps"}, "const_inputs": {"1": "gamma", "2": "beta"}, "fields": {"kind": 1}}


def _ln_model(scale_is_input: bool = False) -> onnx.ModelProto:
    inputs = [tensor("x", [2, 4, 8])] + ([tensor("scale", [8])] if scale_is_input else [])
    inits = [const("bias", np.linspace(-1, 1, 8, dtype=np.float32))]
    if not scale_is_input:
        inits.append(const("scale", np.arange(8, dtype=np.float32)))
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("LayerNormalization", ["r", "scale", "bias"], ["y"], name="ln", axis=-1, epsilon=1e-6)]
    return make_model(nodes, inputs, [tensor("y", [2, 4, 8])], inits)


def _attrs(model: onnx.ModelProto, op: str) -> dict[str, onnx.AttributeProto]:
    node = next(n for n in model.graph.node if n.op_type == op)
    return {a.name: a for a in node.attribute}


def _map(model, *rules, **opts):
    return apply_pass(model, "map-plugins", ctx_options={"plugin_map": {"map": list(rules)}, **opts})


def test_op_rule_maps_node_with_typed_fields():
    model = _ln_model()
    out, result = _map(model, LN_RULE)
    assert result.changed == 1 and result.stats["applied"] == 1
    assert ops(out) == Counter({"Relu": 1, "MyLayerNorm": 1})
    node = next(n for n in out.graph.node if n.op_type == "MyLayerNorm")
    assert node.domain == PLUGIN_DOMAIN and list(node.input) == ["r"] and list(node.output) == ["y"]
    a = _attrs(out, "MyLayerNorm")
    assert a["gamma"].type == onnx.AttributeProto.TENSOR and a["gamma"].t.data_type == TensorProto.FLOAT
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(a["gamma"].t), np.arange(8, dtype=np.float32))
    assert a["beta"].type == onnx.AttributeProto.TENSOR
    assert a["eps"].type == onnx.AttributeProto.FLOAT and a["eps"].f == pytest.approx(1e-6)
    assert a["kind"].type == onnx.AttributeProto.INT and a["kind"].i == 1
    assert a["plugin_version"].s == b"3" and a["plugin_namespace"].s == b"acme"
    assert [o.name for o in out.graph.output] == ["y"]


def test_int64_constant_becomes_int32_tensor_and_input_order_follows_the_map():
    nodes = [helper.make_node("Gather", ["data", "idx"], ["g"], name="gather", axis=1),
             helper.make_node("Add", ["g", "other"], ["y"], name="add")]
    model = make_model(nodes, [tensor("data", [2, 5]), tensor("other", [2, 3])], [tensor("y", [2, 3])],
                       [const("idx", np.array([4, 0, 2], np.int64))])
    rule = {"op": "Add", "plugin": "MyAdd", "version": "1", "inputs": [1, 0]}
    gather = {"op": "Gather", "plugin": "MyGather", "version": "1", "attrs": {"axis": "axis"},
              "const_inputs": {"1": "indices"}}
    out, result = _map(model, gather, rule)
    assert result.changed == 2
    assert ops(out) == Counter({"MyGather": 1, "MyAdd": 1})
    indices = _attrs(out, "MyGather")["indices"]
    assert indices.type == onnx.AttributeProto.TENSOR and indices.t.data_type == TensorProto.INT32
    add = next(n for n in out.graph.node if n.op_type == "MyAdd")
    assert list(add.input)[0] == "other"  # order from the map: input 1, then input 0


def test_non_constant_field_input_is_rejected_and_graph_untouched():
    model = _ln_model(scale_is_input=True)
    before, _ = apply_pass(model, "remove-dead-nodes")
    out, result = _map(model, LN_RULE)
    assert result.changed == 0 and result.stats["rejected:field-input-not-constant"] == 1
    assert same_graph(out, before)


def test_values_table_and_catalog_types_translate_onnx_roialign():
    nodes = [helper.make_node("RoiAlign", ["X", "rois", "bi"], ["Y"], name="roi", mode="max", output_height=2,
                              output_width=2, spatial_scale=0.5)]
    model = make_model(nodes, [tensor("X", [1, 2, 4, 4]), tensor("rois", [3, 4]), tensor("bi", [3], TensorProto.INT64)],
                       [tensor("Y", [3, 2, 2, 2])])
    rule = {"op": "RoiAlign", "plugin": "ROIAlign_TRT", "version": "2", "values": {"mode": {"avg": 1, "max": 0}},
            "attrs": {"mode": "mode", "output_height": "output_height", "output_width": "output_width",
                      "spatial_scale": "spatial_scale"}, "fields": {"sampling_ratio": 0}}
    out, result = _map(model, rule)
    assert result.changed == 1
    a = _attrs(out, "ROIAlign_TRT")
    assert a["mode"].i == 0 and a["spatial_scale"].type == onnx.AttributeProto.FLOAT
    bad = {**rule, "values": {"mode": {"avg": 1}}}
    _, result = _map(model, bad)
    assert result.changed == 0 and result.stats["rejected:attr-value-not-mapped"] == 1


def test_second_run_changes_nothing_even_when_plugin_keeps_the_op_name():
    nodes = [helper.make_node("MyOp", ["x"], ["y"], name="custom", domain="acme", alpha=2.0)]
    graph = helper.make_graph(nodes, "custom", [tensor("x", [2])], [tensor("y", [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme", 1)])
    rule = {"op": "MyOp", "plugin": "MyOp", "version": "2", "attrs": {"alpha": "alpha"}}
    once, first = _map(model, rule)
    twice, second = _map(once, rule)
    assert first.changed == 1 and second.changed == 0
    assert same_graph(once, twice)


def test_named_pattern_maps_the_nodes_a_fusion_emitted():
    fused, fusion = apply_pass(layernorm_model(), "fuse-layernorm")
    assert fusion.changed == 1
    rule = {"pattern": "fuse-layernorm", "plugin": "MyLayerNorm", "version": "1", "attrs": {"epsilon": "eps"},
            "const_inputs": {"1": "gamma"}, "inputs": [0]}
    out, result = _map(fused, rule)
    assert result.changed == 1
    assert ops(out)["MyLayerNorm"] == 1 and ops(out)["LayerNormalization"] == 0
    _, result = _map(layernorm_model(), rule)  # nothing emitted by fuse-layernorm: no match
    assert result.changed == 0


@pytest.mark.parametrize("data,words", [
    ({"map": [{"plugin": "P", "version": "1"}]}, "needs 'op'"),
    ({"map": [{"op": "X", "version": "1"}]}, "missing required key 'plugin'"),
    ({"map": [{"op": "X", "plugin": "P", "version": "1", "colour": 1}]}, "unknown key 'colour'"),
    ({"maps": []}, "unknown top-level key 'maps'"),
    ({"map": [{"pattern": "fuse-nothing", "plugin": "P", "version": "1"}]}, "not a registered pass"),
    ({"map": [{"op": "X", "plugin": "P", "version": "1", "const_inputs": {"a": "w"}}]}, "input index"),
])
def test_bad_maps_raise_one_line_user_errors(data, words):
    with pytest.raises(UserInputError, match=words) as info:
        parse_plugin_map(data)
    assert "\n" not in str(info.value)


def test_toml_errors_and_catalog_field_check(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[map]\nop = 'X'\n")
    with pytest.raises(UserInputError, match="invalid TOML"):
        load_plugin_map(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[[map]]\nop = "RoiAlign"\nplugin = "ROIAlign_TRT"\nversion = "2"\nfields = { pooled = 1 }\n')
    with pytest.raises(UserInputError, match="ROIAlign_TRT v2 has no field 'pooled'"):
        load_plugin_map(unknown)


def test_cli_plugin_map_appends_the_pass_and_types_fields_from_the_catalog(tmp_path):
    nodes = [helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], name="inorm", epsilon=1e-5)]
    model = make_model(nodes, [tensor("x", [1, 2, 3, 3])], [tensor("y", [1, 2, 3, 3])],
                       [const("s", np.ones(2, np.float32)), const("b", np.zeros(2, np.float32))])
    src, dst, cfg = tmp_path / "m.onnx", tmp_path / "out.onnx", tmp_path / "map.toml"
    onnx.save(model, str(src))
    cfg.write_text('[[map]]\nop = "InstanceNormalization"\nplugin = "InstanceNormalization_TRT"\nversion = "3"\n'
                   'attrs = { epsilon = "epsilon" }\nconst_inputs = { 1 = "scale", 2 = "bias" }\nfields = { relu = 0, alpha = 0 }\n')
    assert main(["optimize", str(src), "-o", str(dst), "--passes", "infer-shapes", "--plugin-map", str(cfg)]) == 0
    out = onnx.load(str(dst))
    assert ops(out) == Counter({"InstanceNormalization_TRT": 1})
    a = _attrs(out, "InstanceNormalization_TRT")
    assert a["alpha"].type == onnx.AttributeProto.FLOAT  # literal 0 typed by the catalog entry
    assert a["scale"].type == onnx.AttributeProto.TENSOR and a["relu"].type == onnx.AttributeProto.INT
    assert [o.name for o in out.graph.output] == ["y"]
