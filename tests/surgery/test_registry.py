from __future__ import annotations

import pytest

from surgery import FixedPoint, UserInputError, list_passes, parse_pipeline


def test_pipeline_grammar_with_fixpoint_and_disable():
    steps = parse_pipeline("infer-shapes, fixpoint(fold-constants,remove-dead-nodes),remove-dead-nodes",
                           disabled=frozenset({"infer-shapes"}))
    assert [s.name for s in steps] == ["fixpoint(fold-constants,remove-dead-nodes)", "remove-dead-nodes"]
    assert isinstance(steps[0], FixedPoint)


@pytest.mark.parametrize("spec, message", [
    ("no-such-pass", "unknown pass 'no-such-pass'"),
    ("fixpoint(fold-constants", "unclosed"),
    ("fold-constants)", "unbalanced"),
])
def test_bad_pipelines_are_user_errors(spec, message):
    with pytest.raises(UserInputError, match=message):
        parse_pipeline(spec)


def test_every_pass_has_a_unique_kebab_name_and_summary():
    names = [p.name for p in list_passes()]
    assert len(names) == len(set(names))
    assert all(p.summary for p in list_passes())
