"""TEMPORARY: removed once every package imports the layered modules."""

from triggers_core.engine.names import name_problem, named_problem, text_problem
from triggers_core.engine.values import (
    MAX_DEPTH,
    MAX_INT,
    MIN_INT,
    JSONMapping,
    copy_json,
    copy_json_sorted,
    deep_merge,
    to_json_mapping,
    to_json_value,
)
from triggers_core.errors import did_you_mean

__all__ = [
    "MAX_DEPTH",
    "MAX_INT",
    "MIN_INT",
    "JSONMapping",
    "copy_json",
    "copy_json_sorted",
    "deep_merge",
    "did_you_mean",
    "name_problem",
    "named_problem",
    "text_problem",
    "to_json_mapping",
    "to_json_value",
]
