"""What each onnx-surgery plugin op needs from TensorRT: output shape, accepted types, and its GPU call.

Field names, types, version and namespace are NOT repeated here: they come from the op's ``PluginSpec``
(``surgery/plugins.py``, registered by the fuse passes), so the plugin and the nodes the passes emit
cannot drift apart. Everything here is plain Python usable at build time on a CPU; ``run`` functions
receive torch CUDA tensors and are only called from ``enqueue``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

# Field values as the plugin holds them: python float/int/str, or numpy arrays for TENSOR fields.
Fields = dict[str, Any]
# run(inputs, output, fields, device_tensor) -> None; device_tensor(name) gives a TENSOR field on the GPU.
Runner = Callable[[list[Any], Any, Fields, Callable[[str], Any]], None]


@dataclass(frozen=True)
class PluginOp:
    """How one plugin op behaves in TensorRT.

    Attributes:
        op: plugin name (= ONNX op type).
        run: launches the kernel(s) on the current torch stream.
        same_type_inputs: how many leading inputs are float activations sharing input 0's type.
        value_dim_from: when set, the output's last dim is that input's last dim (attention: V's head size).
    """

    op: str
    run: Runner
    same_type_inputs: int = 1
    value_dim_from: int | None = None

    def input_type_ok(self, pos: int, dtype: str, first: str, fields: Fields) -> bool:
        """Whether input ``pos`` may have ``dtype`` ("FLOAT", "HALF", "BOOL", ...) given input 0's type."""
        if pos == 0:
            return dtype in ("FLOAT", "HALF")
        if pos < self.same_type_inputs:
            return dtype == first
        if self.op == "SurgeryAttention" and pos == 3:  # the mask
            return dtype == "BOOL" if int(fields.get("mask_kind", 0)) == 2 else dtype in ("FLOAT", "HALF")
        return False


def _layernorm(ins: list[Any], out: Any, f: Fields, dev: Callable[[str], Any]) -> None:
    from converter.plugins.trt import kernels

    kernels.layernorm(ins[0], dev("gamma"), dev("beta"), f["epsilon"], out=out)


def _rmsnorm(ins: list[Any], out: Any, f: Fields, dev: Callable[[str], Any]) -> None:
    from converter.plugins.trt import kernels

    kernels.rmsnorm(ins[0], dev("gamma"), f["epsilon"], out=out)


def _groupnorm(ins: list[Any], out: Any, f: Fields, dev: Callable[[str], Any]) -> None:
    from converter.plugins.trt import kernels

    kernels.groupnorm(ins[0], dev("gamma"), dev("beta"), int(f["num_groups"]), f["epsilon"],
                      silu=int(f.get("activation", 0)) == 1, out=out)


def _gelu(ins: list[Any], out: Any, f: Fields, dev: Callable[[str], Any]) -> None:
    from converter.plugins.trt import kernels

    kernels.gelu(ins[0], int(f.get("approximate", 0)), out=out)


def _attention(ins: list[Any], out: Any, f: Fields, dev: Callable[[str], Any]) -> None:
    from converter.plugins.trt import kernels

    kernels.attention(ins[0], ins[1], ins[2], ins[3] if len(ins) > 3 else None, scale=float(f["scale"]),
                      causal=bool(int(f.get("causal", 0))), mask_kind=int(f.get("mask_kind", 0)), out=out)


PLUGIN_OPS: dict[str, PluginOp] = {p.op: p for p in (
    PluginOp("SurgeryLayerNorm", _layernorm),
    PluginOp("SurgeryRMSNorm", _rmsnorm),
    PluginOp("SurgeryGroupNorm", _groupnorm),
    PluginOp("SurgeryGelu", _gelu),
    PluginOp("SurgeryAttention", _attention, same_type_inputs=3, value_dim_from=2),
)}
