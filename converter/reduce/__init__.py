"""Automatic reduction of a failing model to a minimal failing subgraph (``surgery reduce``).

``subgraph`` cuts valid standalone models out of node subsets, ``probes`` says whether a cut still
fails (parse, build, accuracy on onnxruntime, or an engine against onnxruntime), ``search`` bisects and
delta-debugs, ``reducer`` puts them together.
"""
from converter.reduce.reducer import NothingToReduce, ReduceResult, reduce_model

__all__ = ["NothingToReduce", "ReduceResult", "reduce_model"]
