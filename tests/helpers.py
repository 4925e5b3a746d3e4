"""Test helpers: run one pass through the registry, compare on onnxruntime, describe structure."""
from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from surgery import PassContext, get_pass, to_graph, to_model
from converter.runtime.numerics import random_feeds, run_ort, spec_from_model
from surgery.pass_base import PassResult
from surgery.verify import verify_model


def ops(model_or_graph: onnx.ModelProto | gs.Graph) -> Counter:
    if isinstance(model_or_graph, gs.Graph):
        return Counter(n.op for n in model_or_graph.nodes)
    return Counter(n.op_type for n in model_or_graph.graph.node)


def apply_pass(model: onnx.ModelProto, name: str, explain: bool = False, **options) -> tuple[onnx.ModelProto, PassResult]:
    """Run one registered pass on a copy of ``model``; returns the new model (verified) and the result."""
    graph = to_graph(copy.deepcopy(model))
    ctx = PassContext(explain=frozenset({name}) if explain else frozenset(), options=options.pop("ctx_options", {}))
    result = get_pass(name, **options)(graph, ctx)
    out = to_model(graph, like=model)
    verify_model(out)
    return out, result


def assert_same_outputs(original: onnx.ModelProto, candidate: onnx.ModelProto, *, feeds=None, rtol=1e-5, atol=1e-6, seed=0) -> None:
    feeds = feeds if feeds is not None else random_feeds(spec_from_model(original, dim_default=2), seed=seed)
    ref = run_ort(original, feeds)
    got = run_ort(candidate, feeds, outputs=list(ref))
    for name, value in ref.items():
        np.testing.assert_allclose(got[name], value, rtol=rtol, atol=atol, err_msg=f"output {name}")


def same_graph(a: onnx.ModelProto, b: onnx.ModelProto) -> bool:
    return a.graph.SerializeToString(deterministic=True) == b.graph.SerializeToString(deterministic=True)
