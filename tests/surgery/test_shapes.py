from __future__ import annotations

import pytest

from surgery import UserInputError
from surgery.shapes import parse_shapes


@pytest.mark.parametrize("text, expected", [
    ("x:[1,3,8,8]", {"x": [1, 3, 8, 8]}),
    ("x:1x3x8x8", {"x": [1, 3, 8, 8]}),
    ("x:1x3x8x8,y:2x4", {"x": [1, 3, 8, 8], "y": [2, 4]}),
    ("x:[1,3] y:[4]", {"x": [1, 3], "y": [4]}),
    ("input:0:1x4", {"input:0": [1, 4]}),
    ("s:[]", {"s": []}),
])
def test_parses_polygraphy_and_trtexec_syntax(text, expected):
    assert parse_shapes(text) == expected


@pytest.mark.parametrize("text", ["x", "x:1xax3", "x:[1,3", "x:0x3", ":1x2", "x:-1x3"])
def test_rejects_bad_shapes(text):
    with pytest.raises(UserInputError):
        parse_shapes(text)
