"""A group's ``atLeast`` too large to print is one problem among all (issue 23, item 8)."""

from __future__ import annotations

import pytest

from triggers_core.engine.config import parse_configuration
from triggers_core.errors import ConfigurationError


@pytest.mark.parametrize(
    "at_least", [10**5000, -(10**5000), 10**19], ids=["huge", "huge-negative", "19-digits"]
)
def test_a_huge_at_least_is_reported_with_every_other_problem(at_least: int) -> None:
    config = {
        "t_a": {"after": [{"atLeast": at_least, "of": ["x", "y"]}], "run": "r"},
        "t_b": {"after": "x", "run": "r"},
        "t_c": {"after": ["x"], "run": "r", "unles": ["y"]},
    }
    with pytest.raises(ConfigurationError) as raised:
        parse_configuration(config)
    problems = raised.value.problems
    assert len(problems) == 3, problems
    (group,) = [p for p in problems if p.startswith("t_a.after[0].atLeast")]
    assert f"integer of {at_least.bit_length()} bits" in group
    assert len(group) < 200
