from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import passes  # noqa: F401  (registers passes)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


HAS_TRT_PARSER = _has("tensorrt") or _has("tensorrt_rtx")


def pytest_collection_modifyitems(config, items):
    skip_trt = pytest.mark.skip(reason="needs tensorrt or tensorrt_rtx (pip install '.[rtx]')")
    for item in items:
        if "trt" in item.keywords and not HAS_TRT_PARSER:
            item.add_marker(skip_trt)
