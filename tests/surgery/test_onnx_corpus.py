"""Both presets on onnx's own backend test models (about 1,550 that onnxruntime runs): every one is
optimized without error and gives onnxruntime-equal outputs (rtol 1e-4, atol 1e-5; exact for
integers, booleans and strings; fp16 at fp16 resolution). Models onnxruntime cannot run are skipped
with its reason; a model with random ops is compared on output presence only."""
from __future__ import annotations

import pytest

from tests import corpus

CASES = corpus.cases()


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("corpus")


def test_corpus_is_complete():
    by_category = {c: sum(1 for case in CASES if case.category == c) for c in corpus.CATEGORIES}
    assert by_category["node"] > 1500 and by_category["light"] == 9, by_category
    assert all(by_category.values()), by_category


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_both_presets_keep_outputs(case: corpus.Case, out_dir):
    ref = corpus.reference(case)
    if ref is None:
        pytest.skip("onnxruntime cannot run the original")
    failures = {p: why for p in ("default", "trt") if (why := corpus.optimize_and_compare(case, p, out_dir, ref))}
    assert not failures, failures
