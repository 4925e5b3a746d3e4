"""IPluginV3 classes written in Python, generated per (TensorRT module, plugin op).

The classes subclass the given module's ``IPluginV3`` + ``IPluginV3OneCore/Build/Runtime`` and
``IPluginCreatorV3One`` (``tensorrt`` or ``tensorrt_rtx``: same names in both), so they are made by a
factory rather than at import time. Build-time methods are pure Python and run on a CPU; ``enqueue``
imports torch, wraps TensorRT's device pointers as tensors without copying (``__cuda_array_interface__``)
and launches the Triton kernels on TensorRT's stream.
"""
from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

import numpy as np

from converter.plugins.trt.ops import Fields, PluginOp
from surgery.plugins import PluginSpec

log = logging.getLogger(__name__)

_SCALAR_TYPES = {"float": ("FLOAT32", np.float32), "int": ("INT32", np.int32),
                 "floats": ("FLOAT32", np.float32), "ints": ("INT32", np.int32)}
_ARRAY_TYPES = {np.dtype(np.float32): "FLOAT32", np.dtype(np.float16): "FLOAT16", np.dtype(np.float64): "FLOAT64",
                np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64", np.dtype(np.int8): "INT8",
                np.dtype(np.int16): "INT16"}
_TYPESTR = {"FLOAT": "<f4", "HALF": "<f2", "BOOL": "|b1", "INT32": "<i4", "INT64": "<i8", "INT8": "|i1", "UINT8": "|u1"}


class PluginFieldError(ValueError):
    """The fields handed to a plugin creator do not match the op's PluginSpec."""


def fields_from_collection(spec: PluginSpec, fc: Any) -> Fields:
    """Decode a PluginFieldCollection (from the ONNX parser or a serialized engine) against ``spec``."""
    out: Fields = {}
    for f in fc:
        kind = spec.fields.get(f.name)
        if kind is None:
            raise PluginFieldError(f"{spec.op}: unknown field '{f.name}' (fields: {', '.join(spec.fields)})")
        data = np.array(f.data, copy=True).reshape(-1)
        if kind == "float":
            out[f.name] = float(data[0])
        elif kind == "int":
            out[f.name] = int(data[0])
        elif kind == "string":
            out[f.name] = data.astype(np.uint8).tobytes().split(b"\0", 1)[0].decode()
        elif kind in ("floats", "ints"):
            out[f.name] = [float(v) if kind == "floats" else int(v) for v in data]
        else:  # tensor: TensorRT passes the flattened TENSOR attribute in its own dtype
            out[f.name] = data
    missing = [k for k in spec.fields if k not in out]
    if missing:
        raise PluginFieldError(f"{spec.op}: missing field(s) {', '.join(missing)}")
    return out


def fields_to_collection(trt: ModuleType, spec: PluginSpec, fields: Fields, keep: list[np.ndarray]) -> Any:
    """The PluginFieldCollection that ``fields_from_collection`` decodes back to ``fields``.

    A PluginField points into its numpy array without holding a reference, and TensorRT reads the
    data after ``get_fields_to_serialize`` returns: the arrays are appended to ``keep``, which the
    caller must keep alive (a dropped array is freed and its memory reused by the next field).
    """
    items = []
    for name, kind in spec.fields.items():
        value = fields[name]
        if kind in _SCALAR_TYPES:
            tname, dtype = _SCALAR_TYPES[kind]
            arr = np.array(value if kind in ("floats", "ints") else [value], dtype=dtype)
        elif kind == "string":
            tname, arr = "CHAR", np.frombuffer(str(value).encode() + b"\0", dtype=np.int8).copy()
        else:
            arr = np.ascontiguousarray(value)
            tname = _ARRAY_TYPES.get(arr.dtype)
            if tname is None:
                raise PluginFieldError(f"{spec.op}: field '{name}' has dtype {arr.dtype}, which has no plugin field type")
        keep.append(arr)
        items.append(trt.PluginField(name, arr, getattr(trt.PluginFieldType, tname)))
    return trt.PluginFieldCollection(items)


class _DeviceArray:
    """A device pointer TensorRT owns, described for ``torch.as_tensor`` (no copy, no ownership)."""

    def __init__(self, ptr: int, shape: tuple[int, ...], typestr: str) -> None:
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (int(ptr), False), "version": 2}


def _as_tensor(torch: Any, desc: Any, ptr: int) -> Any:
    shape = tuple(int(d) for d in desc.dims)
    typestr = _TYPESTR.get(desc.type.name)
    if typestr is None:
        raise TypeError(f"plugin tensor of type {desc.type.name} is not supported")
    if int(np.prod(shape, dtype=np.int64)) == 0:
        return torch.empty(shape, dtype=torch.float32, device="cuda")
    return torch.as_tensor(_DeviceArray(ptr, shape, typestr), device="cuda")


def enqueue_op(pop: PluginOp, fields: Fields, device_field: Any, input_desc: Any, output_desc: Any, inputs: Any,
               outputs: Any, stream: int) -> None:
    """The body of ``enqueue``: wrap TensorRT's buffers as torch tensors and run ``pop`` on ``stream``.

    ``input_desc``/``output_desc`` need only ``dims`` and ``type.name`` (PluginTensorDesc has both),
    so this runs, and is tested, on a GPU without a TensorRT that can execute engines there.
    """
    import torch

    ins = [_as_tensor(torch, d, p) for d, p in zip(input_desc, inputs)]
    out = _as_tensor(torch, output_desc[0], outputs[0])
    if out.numel() == 0:
        return
    with torch.cuda.stream(torch.cuda.ExternalStream(int(stream))):
        pop.run(ins, out, fields, device_field)


def make_plugin_classes(trt: ModuleType, spec: PluginSpec, pop: PluginOp) -> tuple[type, type]:
    """(plugin class, creator class) for ``spec`` on module ``trt``."""

    class Plugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime):
        def __init__(self, fields: Fields, phase: Any = None) -> None:
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.num_outputs = 1
            self.plugin_name = spec.op
            self.plugin_namespace = spec.namespace
            self.plugin_version = spec.version
            self.timing_cache_id = ""
            self.fields = fields
            self.phase = phase
            self._on_device: dict[str, Any] = {}

        # -- core / build (CPU) --
        def get_capability_interface(self, type: Any) -> Any:
            return self

        def clone(self) -> "Plugin":
            return Plugin(dict(self.fields), self.phase)

        def get_output_data_types(self, input_types: Any) -> list[Any]:
            return [input_types[0]]

        def get_output_shapes(self, inputs: Any, shape_inputs: Any, expr_builder: Any) -> list[Any]:
            dims = trt.DimsExprs(inputs[0])
            if pop.value_dim_from is not None:
                src = inputs[pop.value_dim_from]
                dims[len(dims) - 1] = src[len(src) - 1]
            return [dims]

        def supports_format_combination(self, pos: int, in_out: Any, num_inputs: int) -> bool:
            desc = in_out[pos].desc
            if desc.format != trt.TensorFormat.LINEAR:
                return False
            first = in_out[0].desc.type.name
            if pos >= num_inputs:
                return desc.type.name == first
            return pop.input_type_ok(pos, desc.type.name, first, self.fields)

        def configure_plugin(self, inp: Any, out: Any) -> None:
            return None

        def get_workspace_size(self, input_desc: Any, output_desc: Any) -> int:
            return 0

        def get_valid_tactics(self) -> list[int]:
            return []

        # -- runtime --
        def set_tactic(self, tactic: int) -> None:
            return None

        def on_shape_change(self, inp: Any, out: Any) -> None:
            return None

        def attach_to_context(self, context: Any) -> "Plugin":
            return self.clone()

        def get_fields_to_serialize(self) -> Any:
            self._field_buffers: list[np.ndarray] = []  # alive as long as the plugin
            return fields_to_collection(trt, spec, self.fields, self._field_buffers)

        def _device_field(self, name: str) -> Any:
            if name not in self._on_device:
                import torch

                self._on_device[name] = torch.from_numpy(np.ascontiguousarray(self.fields[name])).to("cuda")
            return self._on_device[name]

        def enqueue(self, input_desc: Any, output_desc: Any, inputs: Any, outputs: Any, workspace: int,
                    stream: int) -> None:
            enqueue_op(pop, self.fields, self._device_field, input_desc, output_desc, inputs, outputs, stream)

    class Creator(trt.IPluginCreatorV3One):
        def __init__(self) -> None:
            trt.IPluginCreatorV3One.__init__(self)
            self.name = spec.op
            self.plugin_namespace = spec.namespace
            self.plugin_version = spec.version
            self._empty = np.zeros(0, np.float32)  # PluginField does not own its data
            self.field_names = trt.PluginFieldCollection([
                trt.PluginField(name, self._empty, getattr(trt.PluginFieldType, "CHAR" if kind == "string" else
                                                           _SCALAR_TYPES.get(kind, ("FLOAT32",))[0]))
                for name, kind in spec.fields.items()])

        def create_plugin(self, name: str, fc: Any, phase: Any) -> Plugin:
            return Plugin(fields_from_collection(spec, fc), phase)

    Plugin.__name__ = Plugin.__qualname__ = f"{spec.op}Plugin"
    Creator.__name__ = Creator.__qualname__ = f"{spec.op}PluginCreator"
    return Plugin, Creator
