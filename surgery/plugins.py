"""Plugin op descriptions: one ``PluginSpec`` per TensorRT plugin node a pass may emit.

A plugin node has op type = plugin name, attributes ``plugin_version`` and ``plugin_namespace``, and
its plugin fields as attributes (weights as TENSOR attributes, never INT64 tensors). Nodes are
placed in the ``trt.plugins`` domain so the ONNX checker accepts them; TensorRT's parser looks
plugins up by op type and ignores the domain.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import onnx_graphsurgeon as gs

PLUGIN_DOMAIN = "trt.plugins"
# reference(inputs in node order, plugin fields with TENSOR fields as arrays) -> outputs
Reference = Callable[[list[np.ndarray], dict[str, Any]], list[np.ndarray]]
_SPECS: dict[str, "PluginSpec"] = {}

FIELD_TYPES = ("float", "int", "ints", "floats", "string", "tensor")


@dataclass(frozen=True)
class PluginSpec:
    """A plugin op: name, version, namespace, its fields (name -> type), notes on its semantics and,
    for the ops our passes emit, the numpy ``reference`` that runs it on a CPU."""

    op: str
    version: str
    namespace: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ("output",)
    builtin: bool = False  # True: ships with TensorRT; False: an onnx-surgery plugin
    notes: str = ""
    reference: Reference | None = field(default=None, compare=False, repr=False)

    def validate_attrs(self, attrs: dict[str, Any]) -> list[str]:
        """Problems with ``attrs`` against the field schema (empty when all is well)."""
        problems = [f"missing field '{k}'" for k in self.fields if k not in attrs]
        for k, v in attrs.items():
            kind = self.fields.get(k)
            if kind is None:
                problems.append(f"unknown field '{k}'")
            elif kind == "tensor" and not isinstance(v, (np.ndarray, gs.Constant)):
                problems.append(f"field '{k}' must be a TENSOR attribute")
        return problems


def register_plugin(spec: PluginSpec) -> PluginSpec:
    if spec.op in _SPECS and _SPECS[spec.op] != spec:
        raise ValueError(f"plugin '{spec.op}' described twice")
    _SPECS[spec.op] = spec
    return spec


def plugin_specs() -> dict[str, PluginSpec]:
    return dict(sorted(_SPECS.items()))


def get_plugin_spec(op: str) -> PluginSpec | None:
    return _SPECS.get(op)


def make_plugin_node(spec: PluginSpec, inputs: Sequence[gs.Tensor], outputs: Sequence[gs.Tensor],
                     attrs: dict[str, Any], name: str = "") -> gs.Node:
    """Build a plugin node; inputs keep the order given (never a set)."""
    problems = spec.validate_attrs(attrs)
    if problems:
        raise ValueError(f"plugin {spec.op}: " + "; ".join(problems))
    full = {k: (gs.Constant(f"{name}/{k}", v) if isinstance(v, np.ndarray) else v) for k, v in attrs.items()}
    full["plugin_version"] = spec.version
    full["plugin_namespace"] = spec.namespace
    return gs.Node(spec.op, name=name, attrs=full, inputs=list(inputs), outputs=list(outputs), domain=PLUGIN_DOMAIN)
