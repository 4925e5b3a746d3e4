"""Generate small TensorRT-hostile PyTorch exports (``hostile_<name>.onnx``).

Run from the repository root in the torch venv (``requirements-torch.txt``)::

    python sample_models/generate_hostile.py

Each model holds one construct real TorchScript exports contain and TensorRT cannot take whole:
boolean masking through NonZero, index_put/scatter with static indices, a Loop with a constant
trip count, an If with a constant condition, Einsum, Unique, TopK/Sort, a 1-D Resize, and int64 /
double arithmetic. Exports use the TorchScript exporter (opset 17, ``dynamo=False``), fixed seeds and
IR version <= 10; every model gets a ``<name>.spec.json`` and a manifest entry (family "hostile").
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generate import MANIFEST, _json_lines, finalize_model, verify_one  # noqa: E402

OPSET = 17
SOURCE = "torch-hostile"
# Generated but kept out of manifest.json: remove-dead-nodes (gs cleanup with
# remove_unused_graph_inputs=True recurses into subgraphs) deletes the Loop body's unused 'cond'
# input, so the default preset breaks this model. Add it back once that pass is fixed.
HELD_OUT: set[str] = set()


def _modules() -> dict[str, tuple[Callable[[], Any], list[dict[str, Any]]]]:
    """name -> (module factory, input spec)."""
    from typing import List

    import torch
    import torch.nn.functional as F
    from torch import nn

    def f(name: str, shape: list[int]) -> dict[str, Any]:
        return {"name": name, "shape": shape, "dtype": "float32", "low": -1.0, "high": 1.0}

    class Mask(nn.Module):
        """x[:, mask] with a constant boolean mask: NonZero -> Transpose -> Squeeze -> Gather."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mask", torch.tensor([True, False, True, True, False, True]))

        def forward(self, x):
            return x[:, self.mask] * 2.0

    class Scatter(nn.Module):
        """index_put (ScatterND), accumulating index_put (ScatterND add) and scatter_add along dim 1
        (ScatterElements add), all with static indices; TensorRT rejects the reductions."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("idx", torch.tensor([[0, 2], [1, 3]]))

        def forward(self, x, v):
            y = x.clone()
            y[:, torch.tensor([1, 4])] = v
            y = y.index_put((torch.tensor([1]),), v[0].sum(0, keepdim=True).expand(6), accumulate=True)
            return torch.scatter_add(y, 1, self.idx, v * 3.0)

    class Loop(nn.Module):
        """A recurrence over the (static) first axis: a Loop with a constant trip count."""

        def forward(self, x, h):
            for i in range(x.size(0)):
                h = torch.tanh(x[i] + h)
            return h

    class If(nn.Module):
        """A branch on a constant flag buffer: an If whose condition is an initializer."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("flag", torch.tensor(True))

        def forward(self, x):
            if bool(self.flag):
                return x * 2.0
            else:
                return x - 1.0

    class Einsum(nn.Module):
        def forward(self, a, b, q, k):
            return (torch.einsum("bij,bjk->bik", a, b), torch.einsum("bhqd,bhkd->bhqk", q, k),
                    torch.einsum("ij->ji", a[0]))

    class Unique(nn.Module):
        def forward(self, x):
            return torch.unique(x) * 2.0

    class TopK(nn.Module):
        def forward(self, x):
            values, indices = torch.topk(x, 3, dim=-1)
            ordered, _ = torch.sort(x, dim=-1)
            return values, indices, ordered

    class Resize1d(nn.Module):
        def forward(self, x):
            return F.interpolate(x, scale_factor=2.0, mode="linear", align_corners=False) + F.interpolate(x, size=16, mode="nearest")

    class Int64(nn.Module):
        """int64 position arithmetic, a shape-derived reshape and a round trip through double."""

        def forward(self, x):
            n = x.shape[0]
            pos = torch.arange(x.shape[1]).unsqueeze(0).expand(n, -1)
            y = x.reshape(n, x.shape[1] // 2, -1)
            return y.sum(-1) + (pos[:, ::2] * 3 // 2).to(torch.float32), x.double().mul(2).float()

    _ = List  # torch.jit.script resolves annotations from this module's globals
    return {
        "mask": (Mask, [f("x", [4, 6])]),
        "scatter": (Scatter, [f("x", [2, 6]), f("v", [2, 2])]),
        "loop": (lambda: torch.jit.script(Loop()), [f("x", [3, 4]), f("h", [4])]),
        "if": (lambda: torch.jit.script(If()), [f("x", [2, 4])]),
        "einsum": (Einsum, [f("a", [2, 3, 4]), f("b", [2, 4, 5]), f("q", [1, 2, 3, 4]), f("k", [1, 2, 5, 4])]),
        "unique": (Unique, [{"name": "x", "shape": [8], "dtype": "float32", "low": 0.0, "high": 1.0}]),
        "topk": (TopK, [f("x", [2, 8])]),
        "resize1d": (Resize1d, [f("x", [1, 2, 8])]),
        "int64": (Int64, [f("x", [2, 8])]),
    }


def _inputs(spec: list[dict[str, Any]]) -> tuple:
    import torch

    g = torch.Generator().manual_seed(0)
    out = []
    for s in spec:
        t = torch.rand(*s["shape"], generator=g) * (s["high"] - s["low"]) + s["low"]
        if s["name"] == "x" and s["low"] == 0.0:  # unique: few distinct values
            t = (t * 4).floor()
        out.append(t)
    return tuple(out)


def generate() -> list[dict[str, Any]]:
    import torch

    torch.manual_seed(0)
    entries = []
    for short, (factory, spec) in _modules().items():
        name = f"hostile_{short}"
        path = HERE / f"{name}.onnx"
        torch.onnx.export(factory(), _inputs(spec), str(path), opset_version=OPSET, dynamo=False,
                          input_names=[s["name"] for s in spec])
        finalize_model(path)
        (HERE / f"{name}.spec.json").write_text(_json_lines("inputs", spec))
        verify_one(name)
        if name in HELD_OUT:
            continue
        entries.append({"name": name, "file": path.name, "source": SOURCE, "exporter": "torchscript", "opset": OPSET,
                        "family": "hostile", "blocks": {k: 0 for k in ("layernorm", "rmsnorm", "gelu", "attention", "groupnorm")}})
    return entries


def main() -> int:
    entries = generate()
    old = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else []
    kept = [e for e in old if e["source"] != SOURCE]
    MANIFEST.write_text(_json_lines(None, kept + entries))
    print(f"wrote {len(entries)} hostile models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
