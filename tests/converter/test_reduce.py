"""surgery reduce: 1-minimal failing subgraphs for parse, build and accuracy failures; check's use of it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from converter.cli.main import main
from converter.reduce import reduce_model
from converter.reduce.probes import AccuracyProbe, BuildProbe, Failure, Normalizer
from converter.reduce.reducer import tensor_values
from converter.reduce.search import Search, bisect_window, delta_debug, minimize
from converter.reduce.subgraph import Subgraphs
from converter.runtime.numerics import Tolerance, random_feeds
from converter.runtime.specs import resolve_spec
from tests.samples import sample_path, spec_path

# fuse-attention without --preset trt's attention_kernels: fp32 Attention-23, which TensorRT has no kernel for
ATTENTION_PASSES = ("infer-shapes,fold-constants,remove-dead-nodes,fixpoint(eliminate-noops,cse,fold-constants,"
                    "remove-dead-nodes),canonicalize-attention-layout,fuse-attention,"
                    "fixpoint(eliminate-noops,cse,fold-constants,remove-dead-nodes)")


# ---- the search ------------------------------------------------------------------------------------------------

def _needs(*required: int):
    return lambda nodes: set(required) <= set(nodes)


@pytest.mark.parametrize("required", [(37,), (3, 7), (0, 63), (5, 20, 41)])
def test_search_returns_exactly_what_the_failure_needs(required):
    search = Search(_needs(*required))
    assert minimize(search, tuple(range(64))) == tuple(sorted(required))
    again = Search(_needs(*required))
    minimize(again, tuple(range(64)))
    assert again.probes == search.probes  # the same probes in the same order: deterministic


def test_search_result_is_one_minimal_even_when_failure_is_not_monotone():
    fails = lambda nodes: (2 in nodes and 9 in nodes) or (len(nodes) >= 3 and 30 in nodes and 31 in nodes)  # noqa: E731
    search = Search(fails)
    found = minimize(search, tuple(range(40)))
    assert fails(found)
    assert not any(fails(tuple(n for n in found if n != drop)) for drop in found)


def test_bisect_only_lands_on_failing_windows_and_seeds_come_first():
    search = Search(_needs(10, 12))
    window = bisect_window(search, tuple(range(32)))
    assert window == tuple(range(10, 13)) and delta_debug(search, window) == (10, 12)
    seeded = Search(_needs(10, 12))
    # the seed, then each of its two nodes alone
    assert minimize(seeded, tuple(range(32)), seeds=[(10, 12)]) == (10, 12) and seeded.probes == 3


def test_search_never_probes_the_empty_set():
    calls = []
    Search(lambda nodes: calls.append(nodes) or True).fails(())
    assert calls == []


# ---- cuts --------------------------------------------------------------------------------------------------------

def test_cuts_are_valid_models_whose_boundaries_carry_observed_dtypes_and_shapes():
    model = onnx.load(sample_path("bert_ts"))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # as reduce_model fixes them
    feeds = random_feeds(resolve_spec(model, sample_path("bert_ts"), None))
    cuts = Subgraphs(model, tensor_values(model, feeds))
    matmul = next(i for i, n in enumerate(model.graph.node) if n.name == "/m/encoder/layer.1/attention/self/MatMul")
    sub = cuts.cut((matmul,))
    onnx.checker.check_model(sub, full_check=True)
    dims = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in sub.graph.input}
    assert dims == {"/m/encoder/layer.1/attention/self/Transpose_output_0": [1, 2, 8, 16],
                    "/m/encoder/layer.1/attention/self/Transpose_2_output_0": [1, 2, 16, 8]}
    reshape = next(i for i, n in enumerate(model.graph.node) if n.name == "/m/encoder/layer.1/attention/self/Reshape")
    cut = cuts.cut((reshape,))  # its computed shape operand becomes a constant with the observed value
    assert [vi.name for vi in cut.graph.input] == ["/m/encoder/layer.1/attention/self/query/Add_output_0"]
    assert numpy_helper.to_array(next(t for t in cut.graph.initializer if "Concat" in t.name)).tolist() == [1, 8, -1, 16]


def test_constants_follow_their_consumers_and_are_not_searched():
    model = onnx.load(sample_path("hostile_unique"))
    cuts = Subgraphs(model)
    ops = [n.op_type for n in model.graph.node]
    assert [ops[i] for i in cuts.searchable] == ["Unique", "Mul"]
    mul = ops.index("Mul")
    assert [ops[i] for i in cuts.closure((mul,))] == ["Constant", "Mul"]


def test_normalizer_takes_out_names_and_numbers():
    model = onnx.load(sample_path("hostile_unique"))
    norm = Normalizer(model)
    assert norm("build", "layer /Unique (Unique) failed at 17:  shape [3]") == "build: layer <name> (Unique) failed at #: shape [#]"


# ---- parse and build ----------------------------------------------------------------------------------------------

def _reduce_cli(tmp_path: Path, model: Path, *extra: str) -> tuple[int, dict, onnx.ModelProto | None]:
    out = tmp_path / "min.onnx"
    code = main(["reduce", str(model), "-o", str(out), *extra])
    report = tmp_path / "min.reduce.json"
    return code, (json.loads(report.read_text()) if report.exists() else {}), (onnx.load(out) if out.exists() else None)


@pytest.mark.trt
@pytest.mark.parametrize("mode", ["parse", "build"])
def test_unique_reduces_to_the_unique_node(tmp_path, mode):
    code, report, reduced = _reduce_cli(tmp_path, sample_path("hostile_unique"), "--mode", mode)
    assert code == 0
    assert [n.op_type for n in reduced.graph.node] == ["Unique"] and report["nodes_after"] == 1 <= 3
    assert report["failure"]["kind"] == report["reproduced"]["kind"] == "parse"
    assert report["failure"]["message"] == report["reproduced"]["message"] == "node '/Unique' (Unique): UNSUPPORTED_NODE: false"
    assert report["nodes"] == [{"name": "/Unique", "op": "Unique", "source": {
        "line": "top-level module", "origin": "TorchScript scope", "module": ""}}]
    onnx.checker.check_model(reduced, full_check=True)


def _fp32_attention(tmp_path: Path, sample: str) -> Path:
    path = tmp_path / f"{sample}_attention.onnx"
    assert main(["optimize", str(sample_path(sample)), "-o", str(path), "--passes", ATTENTION_PASSES]) == 0
    shutil.copy(spec_path(sample), path.with_suffix(".spec.json"))
    return path


@pytest.mark.trt
@pytest.mark.parametrize("sample", ["bert_ts", "gpt2_ts"])
def test_fp32_attention_build_failure_reduces_to_one_attention_node(tmp_path, sample):
    import tensorrt_rtx as trt  # the CPU builder; TensorRT proper has the same Myelin check

    model_path = _fp32_attention(tmp_path, sample)
    code, report, reduced = _reduce_cli(tmp_path, model_path)
    assert code == 0 and report["mode"] == "build"
    assert [n.op_type for n in reduced.graph.node] == ["Attention"] and report["nodes_after"] <= 3
    assert "Attention operation was not supported by a dedicated kernel" in report["failure"]["message"]
    assert report["failure"]["kind"] == report["reproduced"]["kind"] == "build"
    assert report["nodes"][0]["source"]["module"] == ("m.encoder.layer.0.attention.self" if sample == "bert_ts" else "m.h.0.attn")
    # the written model fails the same way when built on its own
    model = onnx.load(model_path)
    again = BuildProbe(trt, Normalizer(model))(reduced)
    assert again is not None and report["failure"]["signature"] in again.keys
    dims = [[d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in reduced.graph.input]
    assert all(all(d > 0 for d in shape) for shape in dims)  # boundary inputs have concrete inferred shapes
    if sample != "bert_ts":
        return
    # deterministic: a second run keeps the same nodes and writes the same model
    (tmp_path / "again").mkdir()
    code2, report2, reduced2 = _reduce_cli(tmp_path / "again", model_path)
    assert code2 == 0 and report2["nodes"] == report["nodes"] and reduced2 == reduced


@pytest.mark.trt
def test_search_without_the_named_nodes_also_finds_the_attention(tmp_path):
    import tensorrt_rtx as trt

    from converter.reduce import probes

    model = onnx.load(_fp32_attention(tmp_path, "bert_ts"))
    feeds = random_feeds(resolve_spec(model, sample_path("bert_ts"), None))

    class Unnamed(BuildProbe):  # a failure message that names nothing: bisect, then delta-debug
        def __call__(self, m: onnx.ModelProto) -> Failure | None:
            found = super().__call__(m)
            return found and Failure(found.kind, found.message, found.keys)

    result = reduce_model(model, Unnamed(trt, probes.Normalizer(model)), {"input_ids": [1, 8], "attention_mask": [1, 8]},
                          values=tensor_values(model, feeds))
    assert [n.op_type for n in result.model.graph.node] == ["Attention"]
    assert 1 < result.probes < 40


def test_a_model_that_does_not_fail_is_not_reduced(tmp_path, capsys):
    code, report, reduced = _reduce_cli(tmp_path, sample_path("bert_ts"), "--mode", "accuracy",
                                        "--reference", str(sample_path("bert_ts")))
    assert code == 1 and report == {} and reduced is None
    assert "does not fail in mode 'accuracy'" in capsys.readouterr().err


def test_user_errors_exit_2_and_write_nothing(tmp_path, capsys):
    model = sample_path("hostile_unique")
    assert main(["reduce", str(model), "-o", str(tmp_path / "m.onnx"), "--reference", str(model)]) == 2
    assert main(["reduce", str(model), "-o", str(model)]) == 2
    assert "--reference is for --mode accuracy" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# ---- accuracy -----------------------------------------------------------------------------------------------------

PERTURBED = "onnx::MatMul_361"  # the weight of /m/encoder/layer.1/attention/self/query/MatMul in bert_ts


def _perturbed(tmp_path: Path) -> Path:
    model = onnx.load(sample_path("bert_ts"))
    weight = next(t for t in model.graph.initializer if t.name == PERTURBED)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 3.0, weight.name))
    path = tmp_path / "bert_bad.onnx"
    onnx.save(model, path)
    return path


def test_accuracy_reduces_to_the_perturbed_weights_consumer(tmp_path):
    bad = _perturbed(tmp_path)
    code, report, reduced = _reduce_cli(tmp_path, bad, "--mode", "accuracy", "--reference", str(sample_path("bert_ts")))
    assert code == 0
    assert [n.name for n in reduced.graph.node] == ["/m/encoder/layer.1/attention/self/query/MatMul"]
    assert PERTURBED in {t.name for t in reduced.graph.initializer}
    assert report["failure"]["kind"] == "accuracy" and "query/MatMul_output_0" in report["reproduced"]["message"]
    assert report["nodes"][0]["source"]["module"] == "m.encoder.layer.1.attention.self.query"


def test_accuracy_search_without_a_hint_finds_the_consumer_and_little_else(tmp_path):
    reference = onnx.load(sample_path("bert_ts"))
    candidate = onnx.load(_perturbed(tmp_path))
    feeds = random_feeds(resolve_spec(reference, sample_path("bert_ts"), None))
    expected = tensor_values(reference, feeds)
    probe = AccuracyProbe(expected, Tolerance(1e-3, 1e-4))
    result = reduce_model(candidate, probe, {k: list(v.shape) for k, v in feeds.items()},
                          values=tensor_values(candidate, feeds))
    names = [n.name for n in result.model.graph.node if n.op_type != "Constant"]
    assert "/m/encoder/layer.1/attention/self/query/MatMul" in names and len(names) <= 3
    assert result.to_json()["nodes_after"] == len(result.model.graph.node)


def test_accuracy_probe_cannot_compare_a_cut_the_reference_lacks_tensors_for():
    model = onnx.load(sample_path("hostile_unique"))
    probe = AccuracyProbe({}, Tolerance(1e-3, 1e-4))
    assert probe(model) is None


@pytest.mark.trt
def test_accuracy_against_an_engine_is_skipped_with_tensorrts_reason_where_engines_cannot_run(tmp_path, capsys):
    from converter.runtime.validate import engine_skip_reason
    from converter.trt.backends import select_backend

    from converter.reduce.probes import engine_bytes

    backend = select_backend("auto")
    blob = engine_bytes(backend.module, onnx.load(sample_path("cnn_ts")), [])
    reason = engine_skip_reason(backend, blob) if blob else "no engine"
    if reason is None:
        pytest.skip("engines run here: the skip path is not reachable")
    code, report, reduced = _reduce_cli(tmp_path, sample_path("cnn_ts"), "--mode", "accuracy")
    assert code == 3 and reduced is None and report == {}
    assert capsys.readouterr().out.startswith("skipped: ")


# ---- check ----------------------------------------------------------------------------------------------------------

@pytest.mark.trt
def test_check_reduces_a_build_failure_that_names_no_node(tmp_path, monkeypatch):
    from converter.trt import capability

    model_path = _fp32_attention(tmp_path, "bert_ts")
    monkeypatch.setattr(capability, "attribute_build_error", lambda *a: set())  # as if the message named nothing
    out = tmp_path / "check.json"
    assert main(["check", str(model_path), "--json", str(out)]) == 1
    data = json.loads(out.read_text())
    reduced = data["build"]["reduced"]
    assert [n["op"] for n in reduced["nodes"]] == ["Attention"]
    assert reduced["nodes_before"] == len(onnx.load(model_path).graph.node) == len(data["nodes"])
    assert data["build"]["nodes"] == [reduced["nodes"][0]["name"]]
    blamed = [n for n in data["nodes"] if n["status"] != "supported"]
    assert [n["op"] for n in blamed] == ["Attention"]
    assert blamed[0]["reason"].startswith("the engine build fails on the minimal subgraph that holds this node")
    assert main(["check", str(model_path), "--json", str(out), "--no-reduce"]) == 1
    assert "reduced" not in json.loads(out.read_text())["build"]

