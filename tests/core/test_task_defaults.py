"""The process's defaults for the lease attributes: taken by tasks that do not set them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery

from triggers_celery import bind_tasks
from triggers_celery.errors import BindingError
from triggers_core import TriggerTask, set_task_defaults
from triggers_core.runtime.tasks import task_defaults, task_policy


@pytest.fixture(autouse=True)
def restore_defaults() -> Iterator[None]:
    saved = task_defaults()
    yield
    set_task_defaults(**saved)


class Plain(TriggerTask):
    name = "tests.defaults.Plain"


class Own(TriggerTask):
    name = "tests.defaults.Own"
    on_lost = "retry"
    lease_seconds = 5


class ProjectBase(TriggerTask):
    max_lost_retries = 7


class FromBase(ProjectBase):
    name = "tests.defaults.FromBase"


def test_a_task_without_its_own_values_takes_the_defaults_others_keep_theirs() -> None:
    assert task_policy(Plain.name).lease_seconds == 30
    set_task_defaults(on_lost="fail", max_lost_retries=1, lease_seconds=90)
    plain = task_policy(Plain.name)
    assert (plain.lease_seconds, plain.lost.retry, plain.lost.max_lost_retries) == (90, False, 1)
    own = task_policy(Own.name)
    assert (own.lease_seconds, own.lost.retry, own.lost.max_lost_retries) == (5, True, 1)
    assert task_policy(FromBase.name).lost.max_lost_retries == 7
    # a task this process does not know (a sweeper in a web process) takes the defaults too
    assert task_policy("tests.defaults.NotHere").lease_seconds == 90


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"on_lost": "maybe"}, "on_lost"),
        ({"max_lost_retries": -1}, "max_lost_retries"),
        ({"lease_seconds": 0}, "lease_seconds"),
    ],
)
def test_a_bad_default_is_refused_by_name_and_changes_nothing(
    given: dict[str, object], named: str
) -> None:
    before = task_defaults()
    with pytest.raises(ValueError, match=named):
        set_task_defaults(**given)  # type: ignore[arg-type]
    assert task_defaults() == before


def test_the_celery_setting_sets_the_defaults_where_tasks_are_bound() -> None:
    app = Celery("defaults", broker="memory://")
    app.conf.triggers_task_defaults = {"lease_seconds": 12, "on_lost": "fail"}
    bind_tasks(app, Plain)
    assert task_policy(Plain.name).lease_seconds == 12
    assert task_policy(Plain.name).lost.retry is False


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"lease_secs": 12}, "unknown 'lease_secs'"),
        ({"max_lost_retries": "3"}, "max_lost_retries must be an integer"),
        ("fail", "must be a mapping"),
    ],
)
def test_a_bad_celery_setting_is_a_binding_error(setting: object, message: str) -> None:
    app = Celery("defaults-bad", broker="memory://")
    app.conf.triggers_task_defaults = setting
    with pytest.raises(BindingError, match=message):
        bind_tasks(app, Plain)
