"""``surgery extract MODEL --inputs A,B --outputs C -o OUT``: isolate a subgraph by tensor names."""
from __future__ import annotations

import argparse
from pathlib import Path

import onnx_graphsurgeon as gs

from passes.infer_shapes import InferShapesPass
from surgery.errors import UserInputError
from surgery.io import load_model, save_model, to_graph, to_model
from surgery.pass_base import PassContext
from surgery.paths import check_outputs, model_files


def extract(graph: gs.Graph, inputs: list[str], outputs: list[str]) -> gs.Graph:
    """Cut ``graph`` down to what computes ``outputs`` from ``inputs`` (in place); boundary tensors get dtypes."""
    InferShapesPass().run(graph, PassContext())
    tensors = graph.tensors()
    missing = [n for n in inputs + outputs if n not in tensors]
    if missing:
        raise UserInputError(f"no tensor named {', '.join(repr(m) for m in missing)} in the model")
    for name in inputs + outputs:
        t = tensors[name]
        if isinstance(t, gs.Constant):
            raise UserInputError(f"tensor '{name}' is a constant; pick a computed tensor")
        if t.dtype is None:
            raise UserInputError(f"tensor '{name}' has no known dtype (shape inference could not type it)")
    graph.inputs = [tensors[n] for n in inputs]
    graph.outputs = [tensors[n] for n in outputs]
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    needed = {t.name for n in graph.nodes for t in n.inputs
              if not isinstance(t, gs.Constant) and not t.inputs and not t.is_empty()}  # "" = an omitted optional input
    unresolved = sorted(needed - set(inputs))
    if unresolved:
        raise UserInputError(f"outputs also depend on tensor(s) not given as inputs: {', '.join(unresolved[:5])}")
    return graph


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="input ONNX model")
    parser.add_argument("--inputs", required=True, help="comma-separated boundary input tensor names")
    parser.add_argument("--outputs", required=True, help="comma-separated output tensor names")
    parser.add_argument("-o", "--output", required=True, help="output ONNX model")


def _names(text: str, option: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserInputError(f"{option}: no tensor names given (comma-separated)")
    return names


def run(args: argparse.Namespace) -> int:
    loaded = load_model(args.model)
    data = Path(args.output).with_name(Path(args.output).name + ".data") if loaded.has_external_data else None
    check_outputs(model_files(loaded.path, loaded.model), {"-o": args.output, "-o's external data": data})
    graph = to_graph(loaded)
    inputs, outputs = (_names(args.inputs, "--inputs"), _names(args.outputs, "--outputs"))
    extract(graph, inputs, outputs)
    save_model(to_model(graph, like=loaded.model), args.output, source_dir=loaded.base_dir, protect=loaded.path)
    print(f"wrote {args.output}: {len(graph.nodes)} nodes, inputs {args.inputs}, outputs {args.outputs}")
    return 0
