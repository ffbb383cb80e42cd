"""Directive typos and unknown runners are configuration errors, not silent extras."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from triggers_core import (
    ConfigurationError,
    MemoryStorage,
    MemoryStore,
    ThreadingTaskRunner,
    TriggerManager,
    runners,
)
from triggers_core.engine.config import KNOWN_DIRECTIVES, directive_typo, parse_configuration

BASE: dict[str, Any] = {"after": ["go"], "run": "triggers.DevNullTask"}


def problems_of(directives: dict[str, Any], **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigurationError) as caught:
        parse_configuration({"t_a": directives}, **kwargs)
    return list(caught.value.problems)


@pytest.mark.parametrize(
    ("key", "directive"),
    [
        ("unles", "unless"),
        ("afer", "after"),
        ("withparams", "withParams"),
        ("with_params", "withParams"),
        ("andevery", "andEvery"),
        ("and-every", "andEvery"),
        ("usign", "using"),
        ("Run", "run"),
        ("unlesss", "unless"),
        ("aftr", "after"),
    ],
)
def test_a_key_one_typo_from_a_directive_is_refused_with_a_suggestion(
    key: str, directive: str
) -> None:
    assert problems_of({**BASE, key: ["stop"]}) == [
        f"t_a.{key}: unknown directive {key!r}; did you mean {directive!r}? "
        "(rename the key if it is meant as an extra)"
    ]


@pytest.mark.parametrize("key", ["queue", "owner", "description", "priority", "notes", "runner"])
def test_other_keys_stay_extras(key: str) -> None:
    assert directive_typo(key) is None
    parsed = parse_configuration({"t_a": {**BASE, key: "x"}})
    assert parsed["t_a"].extras == {key: "x"}


def test_every_problem_is_listed_together() -> None:
    problems = problems_of({"run": "A", "afer": ["x"], "unles": ["y"]})
    assert problems == [
        "t_a.after: required (the triggers that must fire)",
        "t_a.afer: unknown directive 'afer'; did you mean 'after'? "
        "(rename the key if it is meant as an extra)",
        "t_a.unles: unknown directive 'unles'; did you mean 'unless'? "
        "(rename the key if it is meant as an extra)",
    ]


@given(st.sampled_from(sorted(KNOWN_DIRECTIVES)), st.data())
def test_every_single_edit_of_a_directive_is_caught(directive: str, data: st.DataObject) -> None:
    letters = "abcdefghijklmnopqrstuvwxyz"
    i = data.draw(st.integers(0, len(directive) - 1))
    edits = [
        directive[:i] + directive[i + 1 :],  # deletion
        directive[:i] + data.draw(st.sampled_from(letters)) + directive[i:],  # insertion
        directive[:i] + data.draw(st.sampled_from(letters)) + directive[i + 1 :],  # substitution
        directive.upper(),
    ]
    if i + 1 < len(directive):
        edits.append(directive[:i] + directive[i + 1] + directive[i] + directive[i + 2 :])
    for key in edits:
        if key in KNOWN_DIRECTIVES or not key:
            continue
        typo_of = directive_typo(key)
        assert typo_of is not None, key


def test_using_must_name_a_known_runner_when_the_runners_are_known() -> None:
    assert problems_of({**BASE, "using": "celeryy"}, runners=["celery", "threading"]) == [
        "t_a.using: no task runner named 'celeryy'; did you mean 'celery'?"
    ]
    parsed = parse_configuration({"t_a": {**BASE, "using": "celeryy"}})  # pure: cannot tell
    assert parsed["t_a"].using == "celeryy"


def test_the_manager_checks_using_against_the_registry_and_its_own_runners() -> None:
    storage = MemoryStorage(f"typos-{uuid.uuid4().hex}", MemoryStore())
    mine = ThreadingTaskRunner()
    manager = TriggerManager(storage, runners={"mine": mine})
    with pytest.raises(ConfigurationError) as caught:
        manager.update_configuration({"t_a": {**BASE, "using": "celeryy"}})
    assert caught.value.problems == (
        "t_a.using: no task runner named 'celeryy'; did you mean 'celery'?",
    )
    assert storage.tasks == {}  # nothing stored
    manager.update_configuration(
        {
            "t_a": {**BASE, "using": "celery"},  # registered (even if not installed)
            "t_b": {**BASE, "using": "mine"},  # given to this manager
        }
    )
    assert {t.using for t in storage.tasks.values()} == {"celery", "mine"}


def test_a_runner_registered_later_is_accepted_once_registered() -> None:
    storage = MemoryStorage(f"typos-{uuid.uuid4().hex}", MemoryStore())
    manager = TriggerManager(storage)
    name = f"later-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ConfigurationError, match="no task runner named"):
        manager.update_configuration({"t_a": {**BASE, "using": name}})
    runners.register(name, ThreadingTaskRunner)
    manager.update_configuration({"t_a": {**BASE, "using": name}})
    assert storage.tasks["t_a"].using == name
