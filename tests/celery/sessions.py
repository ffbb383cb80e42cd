"""Opening test sessions from the test process, and reading back their side effects."""

from __future__ import annotations

import uuid
from typing import Any

from processes import PG_DSN, RUN_ID
from worker_app import EFFECTS_TABLE, CeleryTestManager

from triggers_celery import CeleryTaskRunner, open_manager


def session_uid(label: str) -> str:
    """A session UID unique to this test run (cleanup matches on ``RUN_ID``)."""
    return f"{label}-{RUN_ID}-{uuid.uuid4().hex[:8]}"


def open_test_manager(app: Any, label: str, storage: str = "default") -> CeleryTestManager:
    """A :class:`CeleryTestManager` on a new session that sends through ``app``."""
    manager = open_manager(
        session_uid(label),
        storage,
        app=app,
        manager=CeleryTestManager.registry_key,
        runners={"celery": CeleryTaskRunner(app)},
    )
    assert isinstance(manager, CeleryTestManager)
    return manager


def recorded_effects(session: str) -> list[tuple[str, int]]:
    """``(instance, worker pid)`` rows that ``celerytest.Record`` wrote for ``session``."""
    import psycopg

    with psycopg.connect(PG_DSN) as conn:
        rows = conn.execute(
            f"SELECT instance, pid FROM {EFFECTS_TABLE} WHERE session = %s ORDER BY 1",
            (session,),
        ).fetchall()
    return [(name, pid) for name, pid in rows]
