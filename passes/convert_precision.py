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

Reads either precision (no Cast is inserted for them): Shape, Size, IsNaN, IsInf where the opset admits the
low type; their output does not depend on the float type they read.

With ``emit="ort"`` the model is for onnxruntime, whose fp16 LayerNormalization, Softmax, LogSoftmax and
com.microsoft SkipLayerNormalization kernels already accumulate in fp32 (CPU and CUDA): those ops run in
fp16 without an fp32 island, as onnxruntime's transformers optimizer does. The com.microsoft ops the fusions
emit (Attention, MultiHeadAttention, SkipLayerNormalization, Gelu, FastGelu, BiasGelu, QuickGelu, RotaryEmbedding) have
fp16 kernels and are lowered.

Options:
    ctx.options["precision"]: "fp16" (default) or "bf16".
    ctx.options["keep_io_types"]: keep float32 graph inputs/outputs (default True).
    ctx.options["emit"]: "ort" drops the islands onnxruntime's kernels make unnecessary (above).

Numerics:
    fp16 stays within rtol 1e-2 of fp32 on the tests' models. With ``emit="ort"`` and fp16, a Where that
    builds an attention bias (it feeds, directly or through Expand, input 5 of com.microsoft Attention or
    MultiHeadAttention) with a fill below fp16's range (transformers writes float32's lowest) gets the fill
    -65504 and runs in fp16, as onnxruntime's own fp16 conversion clamps it: masked scores still vanish
    after Softmax, no fp32 island and Cast are needed, and the bias holds no -inf (the old fill cast to
    fp16), so a fully masked row (left padding under a causal mask) depends on no kernel's -inf handling.
    bf16 has fp32's range but ~3 significant digits and is checked structurally (onnxruntime's CPU provider lacks bf16 kernels).
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
# onnxruntime's fp16 kernels of these accumulate in fp32: no island when the model is for onnxruntime
ORT_ACCUMULATES_IN_FP32 = frozenset("LayerNormalization Softmax LogSoftmax".split())
CHAIN_OPS = frozenset("Add Sub Mul Div".split())
# the com.microsoft ops our fusions emit; each has fp16 kernels on onnxruntime's CPU and CUDA providers
MS_LOW_PRECISION = frozenset(
    "Attention MultiHeadAttention SkipLayerNormalization Gelu FastGelu BiasGelu QuickGelu RotaryEmbedding".split())
# ops whose output does not depend on the float type they read: they read whichever version exists
READS_EITHER = frozenset("Shape Size IsNaN IsInf".split())
POLYMORPHIC = frozenset(
    "MatMul Gemm Conv ConvTranspose Add Sub Mul Div Relu LeakyRelu Gelu Erf Tanh Sigmoid HardSigmoid HardSwish "
    "Neg Abs Max Min Clip Reciprocal Sin Cos Transpose Reshape Flatten Squeeze Unsqueeze Concat Split Slice Gather "
    "GatherElements Expand Tile Where Identity MaxPool AveragePool GlobalAveragePool GlobalMaxPool Pad Einsum "
    "Attention BatchNormalization DepthToSpace SpaceToDepth Mish Softplus Elu Selu PRelu LayerNormalization Softmax "
    "LogSoftmax".split())  # the last three are islands unless emit="ort"


@register_pass
class ConvertPrecisionPass(Pass):
    name = "convert-precision"
    summary = "Run float32 compute in fp16/bf16 with fp32 islands for normalizations and large constants."
    tolerance = (1e-2, 1e-2)
    emits = ("onnx", "ort", "plugin")

    def requires(self, graph: gs.Graph, ctx: PassContext) -> None:
        if (ctx.options.precision or "fp16") not in _TYPES:
            raise PreconditionError(f"precision must be fp16 or bf16, got {ctx.options.precision!r}")

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        precision = ctx.options.precision or "fp16"
        keep_io = ctx.options.keep_io_types
        result = PassResult()
        if ctx.options.emit == "ort" and precision == "fp16":
            _clamp_mask_fills(graph, result)  # before the types are read: the new fills are typed too
        dtypes = _float_types(graph)
        is_f32 = lambda t: dtypes.get(t.name) == onnx.TensorProto.FLOAT  # noqa: E731
        islands = ISLAND_OPS - ORT_ACCUMULATES_IN_FP32 if ctx.options.emit == "ort" else ISLAND_OPS
        low, readers = self._choose(graph, is_f32, precision, islands, result)
        if not low:
            return result
        _Rewriter(graph, low, readers, is_f32, precision, keep_io).apply()
        for node in low:
            result.apply(node.name, f"to-{precision}")
        held = {s["site"] for s in result.sites if s["outcome"] == "kept-fp32"}
        kept = [n.name for n in graph.nodes if n.name in held and n.op in islands | CHAIN_OPS]
        if kept:
            result.notes.append(f"kept in fp32 ({len(kept)}): " + ", ".join(kept))
        graph.cleanup().toposort()
        return result

    def _choose(self, graph: gs.Graph, is_f32, precision: str, islands: frozenset[str],
                result: PassResult) -> tuple[list[gs.Node], set[int]]:
        """The nodes to lower, and the readers of either precision (ids)."""
        island = {id(n) for n in graph.nodes if n.op in islands}
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
        low, readers = [], set()
        for n in graph.nodes:
            floats = [t for t in list(n.inputs) + list(n.outputs) if is_f32(t)]
            if not floats:
                continue
            if n.op in READS_EITHER and not n.domain and _schema_allows(n, int(graph.opset), precision):
                readers.add(id(n))
                result.stats["reads-either"] += 1
                continue
            ms_op = n.domain == "com.microsoft" and n.op in MS_LOW_PRECISION
            if id(n) in island:
                reason = "island-op" if n.op in islands else "island-chain"
            elif n.op not in POLYMORPHIC and not ms_op:
                reason = "not-polymorphic"
            elif not ms_op and not _schema_allows(n, int(graph.opset), precision):
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
        return low, readers


def _schema_allows(node: gs.Node, opset: int, precision: str) -> bool:
    """True when every type constraint of the node's used inputs/outputs that admits float32 admits the low type
    (LayerNormalization's stash type U, for its optional Mean/InvStdDev outputs, does not count when unused)."""
    want = "tensor(float16)" if precision == "fp16" else "tensor(bfloat16)"
    try:
        schema = onnx.defs.get_schema(node.op, opset, node.domain or "")
    except onnx.defs.SchemaError:
        return False
    used = {_formal(schema.inputs, i).type_str for i, t in enumerate(node.inputs) if t.name} | \
        {_formal(schema.outputs, j).type_str for j, t in enumerate(node.outputs) if t.name}
    return all(want in c.allowed_type_strs for c in schema.type_constraints
               if c.type_param_str in used and "tensor(float)" in c.allowed_type_strs)


def _formal(params, index: int):
    """The formal parameter of position ``index`` (the last one repeats when it is variadic)."""
    return params[min(index, len(params) - 1)]


_BIAS_INPUT = 5  # attention_bias of com.microsoft Attention and MultiHeadAttention


def _feeds_only_attention_bias(t: gs.Tensor, depth: int = 3) -> bool:
    readers = list(t.outputs)
    if not readers or depth == 0:
        return False
    for node in readers:
        if node.op == "Expand" and node.inputs[0] is t:
            if not _feeds_only_attention_bias(node.outputs[0], depth - 1):
                return False
        elif not (node.domain == "com.microsoft" and node.op in ("Attention", "MultiHeadAttention")
                  and len(node.inputs) > _BIAS_INPUT and node.inputs[_BIAS_INPUT] is t
                  and all(i is not t for j, i in enumerate(node.inputs) if j != _BIAS_INPUT)):
            return False
    return True


def _clamp_mask_fills(graph: gs.Graph, result: PassResult) -> None:
    """Attention-bias Wheres: a constant fill below -FP16_MAX becomes -FP16_MAX (see Numerics)."""
    for node in graph.nodes:
        if node.op != "Where" or node.domain or not _feeds_only_attention_bias(node.outputs[0]):
            continue
        for i in (1, 2):
            v = const_value(node.inputs[i])
            if v is None or v.dtype != np.float32 or not _too_large(node.inputs[i]):
                continue
            if not np.all(v <= -FP16_MAX):
                continue
            node.inputs[i] = gs.Constant(f"{node.name}/fill_fp16", np.full(v.shape, -FP16_MAX, np.float32))
            result.stats["mask-fill-clamped"] += 1
            result.sites.append({"site": node.name, "outcome": "mask-fill-clamped", "reason": "fill below fp16 range"})


def _too_large(tensor: gs.Tensor) -> bool:
    v = const_value(tensor)
    if v is None or v.dtype.kind != "f" or v.size == 0:
        return False
    finite = v[np.isfinite(v)]
    return bool(finite.size and np.abs(finite).max() > FP16_MAX)


def _float_types(graph: gs.Graph) -> dict[str, int]:
    """Element type of every tensor we can learn, via ONNX shape inference on a weightless export (weights are
    typed graph inputs there). ONNX does not know the com.microsoft ops: each of MS_LOW_PRECISION gives its
    first output the type of its first input, and inference runs again past them."""
    model = weightless_model(graph)
    while True:
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
        learned = [(n.output[0], out[n.input[0]]) for n in model.graph.node
                   if n.domain == "com.microsoft" and n.op_type in MS_LOW_PRECISION and n.input and n.output
                   and out.get(n.input[0]) and not out.get(n.output[0])]
        if not learned:
            return out
        for name, elem_type in learned:
            model.graph.value_info.append(onnx.helper.make_tensor_value_info(name, elem_type, None))


class _Rewriter:
    """Applies the chosen split: retypes low-precision tensors and inserts boundary Casts."""

    def __init__(self, graph: gs.Graph, low: list[gs.Node], readers: set[int], is_f32, precision: str,
                 keep_io: bool) -> None:
        self.graph, self.low, self.is_f32, self.keep_io = graph, low, is_f32, keep_io
        self.low_ids = {id(n) for n in low}
        self.takes_low = self.low_ids | readers  # nodes that read a lowered tensor without a Cast back
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
                fp32_users = [c for c in out.outputs if id(c) not in self.takes_low]
                if out.name in outputs and self.keep_io:
                    inner = gs.Variable(self.names("/" + out.name.split("/")[-1]), dtype=self.onnx_type, shape=out.shape)
                    users = [c for c in out.outputs]
                    node.outputs[j] = inner
                    self._retarget(users, out, inner)
                    cast = gs.Node("Cast", self.names("/cast_out"), {"to": onnx.TensorProto.FLOAT}, inputs=[inner], outputs=[out])
                    self.graph.nodes.append(cast)
                    out = inner
                    fp32_users = [c for c in inner.outputs if id(c) not in self.takes_low and c is not cast]
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
