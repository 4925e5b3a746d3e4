"""Round-trip what onnx-graphsurgeon 0.6 drops or cannot export, so valid models survive import/export.

gs skips ``TYPE_PROTO`` attributes on import (the ``type`` of ``Optional``, ``SequenceEmpty``'s
dtype is an int and fine) and fails to export a graph input or output whose type is an optional (an
unbound local in ``export_value_info_proto``), so a model with ``Optional`` ops or an ``If`` returning an
optional could not be optimized at all. ``install()`` wraps three gs functions, once per process:

- import: ``TYPE_PROTO`` attributes are kept as ``onnx.TypeProto`` values (gs exports those through
  ``onnx.helper.make_attribute``, which knows them);
- import: a variable whose type is not a plain tensor remembers its full ``TypeProto``;
- export: such a variable is written with that type; one gs cannot describe and never had one
  is written untyped, as gs does for variables without a dtype;
- export: a string constant whose values were read into numpy is written as strings (gs writes
  every constant as raw bytes, which ONNX forbids for strings).
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import onnx
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter
from onnx_graphsurgeon.importers.onnx_importer import OnnxImporter

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    import_attributes = OnnxImporter.import_attributes
    import_tensor = OnnxImporter.import_tensor
    export_value_info = OnnxExporter.export_value_info_proto
    export_tensor = OnnxExporter.export_tensor_proto

    def export_tensor_with_strings(tensor):
        values = getattr(tensor, "_values", None)
        if isinstance(values, np.ndarray) and values.dtype.kind in "OSU":  # gs writes raw bytes: not for strings
            return onnx.numpy_helper.from_array(values.astype(object), tensor.name)
        return export_tensor(tensor)

    def import_attributes_keeping_types(onnx_attributes, *args, **kwargs):
        typed = {a.name: a.tp for a in onnx_attributes if a.type == onnx.AttributeProto.TYPE_PROTO}
        plain = [a for a in onnx_attributes if a.type != onnx.AttributeProto.TYPE_PROTO]
        attrs = import_attributes(plain, *args, **kwargs)
        if not typed:
            return attrs
        ordered = OrderedDict()
        for a in onnx_attributes:
            if a.name in typed:
                ordered[a.name] = _copy(typed[a.name])
            elif a.name in attrs:
                ordered[a.name] = attrs[a.name]
        return ordered

    def import_tensor_keeping_type(onnx_tensor):
        tensor = import_tensor(onnx_tensor)
        if isinstance(onnx_tensor, onnx.ValueInfoProto) and onnx_tensor.type.ByteSize() > 0 \
                and not onnx_tensor.type.HasField("tensor_type"):
            tensor.onnx_type = _copy(onnx_tensor.type)
        return tensor

    def export_value_info_with_type(tensor, do_type_check):
        onnx_type = getattr(tensor, "onnx_type", None)
        if onnx_type is not None and getattr(tensor, "type", None) != "tensor_type":
            vi = onnx.ValueInfoProto(name=tensor.name)
            vi.type.CopyFrom(onnx_type)
            return vi
        try:
            return export_value_info(tensor, do_type_check)
        except UnboundLocalError:  # a non-tensor type gs has no writer for
            return onnx.helper.make_empty_tensor_value_info(tensor.name)

    OnnxImporter.import_attributes = staticmethod(import_attributes_keeping_types)
    OnnxImporter.import_tensor = staticmethod(import_tensor_keeping_type)
    OnnxExporter.export_value_info_proto = staticmethod(export_value_info_with_type)
    OnnxExporter.export_tensor_proto = staticmethod(export_tensor_with_strings)


def _copy(tp: onnx.TypeProto) -> onnx.TypeProto:
    out = onnx.TypeProto()
    out.CopyFrom(tp)
    return out
