"""convert-precision: run float32 compute in fp16 or bf16, keeping numerically sensitive islands in fp32.

Summary:
    Nodes whose op is type-polymorphic float compute (MatMul, Conv, elementwise, activations, data
    movement) switch to the low precision; their float32 weights are converted (fp16) or cast (bf16).
    Casts are inserted wherever a tensor crosses between an fp32 node and a low-precision node.

Matches (per node, not a pattern):
    x(fp32) -> MatMul(W fp32) -> Add -> LayerNormalization -> ...
    becomes
    x(fp32) -> Cast(fp16) -> MatMul(W fp16) -> Add -> Cast(fp32) -> LayerNormalization -> ...

Keeps in fp32 (reasons in stats as ``kept-fp32:<reason>``, and one site per node kept, outcome ``kept-fp32``):
    island-op: LayerNormalization, GroupNormalization, InstanceNormalization, RMSNormalization, Softmax,
        LogSoftmax, Reduce{Mean,Sum,SumSquare,L2,LogSumExp}, Pow, Sqrt, Exp, Log;
    island-chain: Add/Sub/Mul/Div between island nodes (the eps add and the centering of a decomposed
        LayerNorm/RMSNorm) or combining two island values;
    large-constant: consumes a constant beyond the fp16 range (|v| > 65504, e.g. -1e9 attention masks);
    not-polymorphic: every op not on the float-compute list (Cast, Constant, Resize, LSTM, ...).

Options:
    ctx.options["precision"]: "fp16" (default) or "bf16".
    ctx.options["keep_io_types"]: keep float32 graph inputs/outputs (default True).

Numerics:
    fp16 stays within rtol 1e-2 of fp32 on the tests' models; bf16 has fp32's range but ~3 significant
    digits and is checked structurally (onnxruntime's CPU provider lacks bf16 kernels).
"""
from __future__ import annotations


import numpy as np
import onnx
import onnx_graphsurgeon as gs

from surgery.graph_utils import NameGen, const_value
from surgery.io import weightless_model
from surgery.pass_base import Pass, PassContext, PassResult
from surgery.registry import register_pass
from surgery.errors import PreconditionError

FP16_MAX = 65504.0
_TYPES = {"fp16": (onnx.TensorProto.FLOAT16, np.float16), "bf16": (onnx.TensorProto.BFLOAT16, None)}
ISLAND_OPS = frozenset(
    "LayerNormalization GroupNormalization InstanceNormalization RMSNormalization Softmax LogSoftmax ReduceMean "
    "ReduceSum ReduceSumSquare ReduceL2 ReduceLogSumExp Pow Sqrt Exp Log".split())
CHAIN_OPS = frozenset("Add Sub Mul Div".split())
POLYMORPHIC = frozenset(
    "MatMul Gemm Conv ConvTranspose Add Sub Mul Div Relu LeakyRelu Gelu Erf Tanh Sigmoid HardSigmoid HardSwish "
    "Neg Abs Max Min Clip Reciprocal Sin Cos Transpose Reshape Flatten Squeeze Unsqueeze Concat Split Slice Gather "
    "GatherElements Expand Tile Where Identity MaxPool AveragePool GlobalAveragePool GlobalMaxPool Pad Einsum "
    "Attention BatchNormalization DepthToSpace SpaceToDepth Mish Softplus Elu Selu PRelu".split())


@register_pass
class ConvertPrecisionPass(Pass):
    name = "convert-precision"
    summary = "Run float32 compute in fp16/bf16 with fp32 islands for normalizations and large constants."
    tolerance = (1e-2, 1e-2)

    def requires(self, graph: gs.Graph, ctx: PassContext) -> None:
        if (ctx.options.precision or "fp16") not in _TYPES:
            raise PreconditionError(f"precision must be fp16 or bf16, got {ctx.options.precision!r}")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        precision = ctx.options.precision or "fp16"
        keep_io = ctx.options.keep_io_types
        result = PassResult()
        dtypes = _float_types(graph)
        is_f32 = lambda t: dtypes.get(t.name) == onnx.TensorProto.FLOAT  # noqa: E731
        low = self._choose(graph, is_f32, precision, result)
        if not low:
            return result
        _Rewriter(graph, low, is_f32, precision, keep_io).apply()
        for node in low:
            result.apply(node.name, f"to-{precision}")
        kept = [n.name for n in graph.nodes if id(n) not in {id(x) for x in low} and n.op in ISLAND_OPS | CHAIN_OPS]
        if kept:
            result.notes.append(f"kept in fp32 ({len(kept)}): " + ", ".join(kept))
        graph.cleanup().toposort()
        return result

    def _choose(self, graph: gs.Graph, is_f32, precision: str, result: PassResult) -> list[gs.Node]:
        island = {id(n) for n in graph.nodes if n.op in ISLAND_OPS}
        changed = True
        while changed:  # grow islands along elementwise chains
            changed = False
            for n in graph.nodes:
                if id(n) in island or n.op not in CHAIN_OPS:
                    continue
                srcs = [t.inputs[0] for t in n.inputs if len(t.inputs) == 1 and const_value(t) is None]
                from_island = [s for s in srcs if id(s) in island]
                feeds_island = any(id(c) in island for o in n.outputs for c in o.outputs)
                if (from_island and feeds_island) or (len(from_island) >= 2 and len(from_island) == len(srcs)):
                    island.add(id(n))
                    changed = True
        low = []
        for n in graph.nodes:
            floats = [t for t in list(n.inputs) + list(n.outputs) if is_f32(t)]
            if not floats:
                continue
            if id(n) in island:
                reason = "island-op" if n.op in ISLAND_OPS else "island-chain"
            elif n.op not in POLYMORPHIC:
                reason = "not-polymorphic"
            elif not _schema_allows(n, int(graph.opset), precision):
                reason = "type-not-allowed-at-opset"
            elif precision == "fp16" and any(_too_large(t) for t in n.inputs):
                reason = "large-constant"
            elif not all(is_f32(o) for o in n.outputs if o.name):
                reason = "mixed-output-types"
            else:
                low.append(n)
                continue
            result.stats["kept-fp32:" + reason] += 1
            result.sites.append({"site": n.name, "outcome": "kept-fp32", "reason": reason})
        return low


def _schema_allows(node: gs.Node, opset: int, precision: str) -> bool:
    """True when every type constraint of the op that admits float32 also admits the low type."""
    want = "tensor(float16)" if precision == "fp16" else "tensor(bfloat16)"
    try:
        schema = onnx.defs.get_schema(node.op, opset, node.domain or "")
    except onnx.defs.SchemaError:
        return False
    return all(want in c.allowed_type_strs for c in schema.type_constraints if "tensor(float)" in c.allowed_type_strs)


def _too_large(tensor: gs.Tensor) -> bool:
    v = const_value(tensor)
    if v is None or v.dtype.kind != "f" or v.size == 0:
        return False
    finite = v[np.isfinite(v)]
    return bool(finite.size and np.abs(finite).max() > FP16_MAX)


def _float_types(graph: gs.Graph) -> dict[str, int]:
    """Element type of every tensor we can learn, via ONNX shape inference on a weightless export (weights are
    typed graph inputs there)."""
    model = weightless_model(graph)
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:
        raise PreconditionError(f"shape inference failed: {str(exc).splitlines()[0]}") from exc
    out = {vi.name: vi.type.tensor_type.elem_type for vi in
           list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    out.update({t.name: t.data_type for t in model.graph.initializer})
    for node in model.graph.node:  # Constant nodes' outputs are not always in value_info
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    out.setdefault(node.output[0], a.t.data_type)
    return out


class _Rewriter:
    """Applies the chosen split: retypes low-precision tensors and inserts boundary Casts."""

    def __init__(self, graph: gs.Graph, low: list[gs.Node], is_f32, precision: str, keep_io: bool) -> None:
        self.graph, self.low, self.is_f32, self.keep_io = graph, low, is_f32, keep_io
        self.low_ids = {id(n) for n in low}
        self.onnx_type, self.np_type = _TYPES[precision]
        self.names = NameGen(graph, "convert-precision")
        self.to_low: dict[str, gs.Tensor] = {}
        self.to_f32: dict[str, gs.Tensor] = {}
        self.lowered: set[str] = set()

    def apply(self) -> None:
        outputs = {t.name for t in self.graph.outputs}
        if not self.keep_io:
            for t in self.graph.inputs:
                if self.is_f32(t) and t.outputs and all(id(c) in self.low_ids for c in t.outputs):
                    t.dtype = self.onnx_type
                    self.lowered.add(t.name)
        for node in self.low:
            for out in node.outputs:
                if self.is_f32(out):
                    self.lowered.add(out.name)
        for node in self.low:
            for i, t in enumerate(list(node.inputs)):
                if self.is_f32(t) and t.name not in self.lowered:
                    node.inputs[i] = self._low_version(t)
        for node in self.low:
            for j, out in enumerate(list(node.outputs)):
                if not self.is_f32(out):
                    continue
                fp32_users = [c for c in out.outputs if id(c) not in self.low_ids]
                if out.name in outputs and self.keep_io:
                    inner = gs.Variable(self.names("/" + out.name.split("/")[-1]), dtype=self.onnx_type, shape=out.shape)
                    users = [c for c in out.outputs]
                    node.outputs[j] = inner
                    self._retarget(users, out, inner)
                    cast = gs.Node("Cast", self.names("/cast_out"), {"to": onnx.TensorProto.FLOAT}, inputs=[inner], outputs=[out])
                    self.graph.nodes.append(cast)
                    out = inner
                    fp32_users = [c for c in inner.outputs if id(c) not in self.low_ids and c is not cast]
                out.dtype = self.onnx_type
                if fp32_users:
                    back = self._f32_version(out)
                    self._retarget(fp32_users, out, back)

    def _retarget(self, users: list[gs.Node], old: gs.Tensor, new: gs.Tensor) -> None:
        for user in users:
            for k, t in enumerate(user.inputs):
                if t is old:
                    user.inputs[k] = new

    def _low_version(self, t: gs.Tensor) -> gs.Tensor:
        if t.name in self.to_low:
            return self.to_low[t.name]
        if isinstance(t, gs.Constant) and self.np_type is not None:
            new: gs.Tensor = gs.Constant(self.names("/" + t.name.split("/")[-1]), np.asarray(t.values).astype(self.np_type))
        else:
            new = gs.Variable(self.names("/cast_in"), dtype=self.onnx_type, shape=t.shape)
            self.graph.nodes.append(gs.Node("Cast", self.names("/cast"), {"to": self.onnx_type}, inputs=[t], outputs=[new]))
        self.to_low[t.name] = new
        return new

    def _f32_version(self, t: gs.Tensor) -> gs.Tensor:
        if t.name not in self.to_f32:
            new = gs.Variable(self.names("/cast_f32"), dtype=np.float32, shape=t.shape)
            self.graph.nodes.append(gs.Node("Cast", self.names("/cast"), {"to": onnx.TensorProto.FLOAT}, inputs=[t], outputs=[new]))
            self.to_f32[t.name] = new
        return self.to_f32[t.name]


__all__ = ["ConvertPrecisionPass"]
