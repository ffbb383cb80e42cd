"""The stateful part of the storage contract: a storage against an in-memory model.

:func:`storage_state_machine` builds a Hypothesis ``RuleBasedStateMachine``
that writes (at the right version, a stale one, or creating an instance that
exists), loads working sets, loads everything and reopens the storage, and
checks each answer against a model of what must be stored.
:class:`StatefulModelContract` runs it against the backend under test; the
machine is public so that a backend can also run it with its own settings.
Needs hypothesis.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from triggers_core.engine.scopes import Scope
from triggers_core.engine.state import SessionState, Status, TaskInstance
from triggers_core.errors import ConflictError, SerializationError
from triggers_core.runtime.storage import Storage, Version
from triggers_core.testing._storage_support import (
    TASKS,
    StorageCase,
    assert_working_set,
    header_json,
    instances_json,
    make_state,
    sample_instance,
    writing,
)

__all__ = ["StatefulModelContract", "storage_state_machine"]


class StatefulModelContract(StorageCase):
    """The storage and an in-memory model agree after any sequence of operations."""

    #: Hypothesis budget for the stateful test (kept small: it talks to real servers).
    stateful_examples: ClassVar[int] = 15
    stateful_steps: ClassVar[int] = 12

    def test_stateful_model(self) -> None:
        from hypothesis import HealthCheck, settings  # noqa: PLC0415 - only this test needs it
        from hypothesis.stateful import run_state_machine_as_test  # noqa: PLC0415

        machine = storage_state_machine(self.make_storage, exact=self.exact_working_set)
        # Typed differently across Hypothesis releases (untyped in older ones).
        run: Any = run_state_machine_as_test
        run(
            machine,
            settings=settings(
                max_examples=self.stateful_examples,
                stateful_step_count=self.stateful_steps,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )


def storage_state_machine(
    make_storage: Callable[[str], Storage], *, exact: bool = True
) -> Callable[[], Any]:
    """A Hypothesis ``RuleBasedStateMachine`` class checking a storage against a model.

    The model is the last successfully written header plus every instance ever
    named in ``changed``. Rules write (with the right or a stale version, and
    with altered copies of unchanged instances that must *not* be written),
    load working sets, load everything and reopen the storage.
    """
    from hypothesis import strategies as st  # noqa: PLC0415 - hypothesis is a test dependency
    from hypothesis.stateful import RuleBasedStateMachine, rule  # noqa: PLC0415

    names = st.sampled_from([f"{task}#{n}" for task in TASKS for n in range(4)])
    statuses = st.sampled_from(list(Status))
    markers = st.one_of(st.integers(-5, 5), st.text(max_size=5))

    class StorageModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.uid = f"contract-stateful-{uuid.uuid4().hex}"
            self.storage = make_storage(self.uid)
            self.version: Version | None = None
            self.seen: list[Version] = []
            self.header = header_json(SessionState())
            self.stored: dict[str, TaskInstance] = {}

        @rule(
            changes=st.dictionaries(names, st.tuples(statuses, markers), max_size=4),
            ghosts=st.lists(names, max_size=2),
            latest=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.just({"x": 1})),
            stale=st.booleans(),
            clash=st.booleans(),
        )
        def write(
            self,
            changes: dict[str, tuple[Status, Any]],
            ghosts: list[str],
            latest: dict[str, dict[str, int]],
            stale: bool,
            clash: bool,
        ) -> None:
            instances = dict(self.stored)
            for name in ghosts:  # in the state, but not named in ``changed``
                if name not in changes:
                    instances[name] = sample_instance(name, Status.SKIPPED, marker="ghost")
            for name, (status, marker) in changes.items():
                instances[name] = sample_instance(name, status, marker)
            state = make_state(instances.values(), latest_kwargs=latest)
            # New names are written as created; with ``clash`` a stored one is too.
            created = {n for n in changes if n not in self.stored}
            clashing = sorted(n for n in changes if n in self.stored)[:1] if clash else []
            write = writing(changes.keys(), created=created | set(clashing))
            stale_choices = [v for v in [None, *self.seen] if v != self.version]
            if stale and stale_choices:
                expected = stale_choices[len(self.seen) % len(stale_choices)]
                try:
                    self.storage.compare_and_swap(expected, state, write)
                except ConflictError:
                    return
                raise AssertionError(f"stale version {expected!r} was accepted")
            if clashing:
                with pytest.raises(SerializationError, match=re.escape(repr(clashing[0]))):
                    self.storage.compare_and_swap(self.version, state, write)
                return
            new = self.storage.compare_and_swap(self.version, state, write)
            assert new is not None
            assert new not in self.seen
            self.version = new
            self.seen.append(new)
            self.header = header_json(state)
            for name in changes:
                self.stored[name] = state.instances[name]

        @rule(
            include=st.lists(names, max_size=3),
            unstarted_of=st.lists(st.sampled_from([*TASKS, "t_none"]), max_size=2),
            unresolved=st.booleans(),
        )
        def load(self, include: list[str], unstarted_of: list[str], unresolved: bool) -> None:
            scope = Scope(
                names=frozenset(include),
                unstarted_of=frozenset(unstarted_of),
                unresolved=unresolved,
            )
            snapshot = self.storage.load(scope)
            assert snapshot.version == self.version
            wanted = {n for n, i in self.stored.items() if scope.wants(i)}
            assert_working_set(snapshot, self.header, self.stored, wanted, exact=exact)

        @rule()
        def load_full(self) -> None:
            snapshot = self.storage.load_full()
            assert snapshot.version == self.version
            assert header_json(snapshot.state) == self.header
            assert instances_json(snapshot.state.instances) == instances_json(self.stored)

        @rule()
        def reopen(self) -> None:
            self.storage.close()
            self.storage = make_storage(self.uid)

        def teardown(self) -> None:
            self.storage.close()

    return StorageModel
