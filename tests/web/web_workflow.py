"""The applicant workflow the console tests look at: tasks, a configuration, sessions.

``t_score`` fails unless the page it scores has ``"ok": true`` in its kwargs,
so a test can make a failure, then replay it with replacement kwargs and see
the clone finish. Hostile names (``<script>``, quotes, markup) come with
:data:`HOSTILE`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from triggers_core import TaskContext, TriggerManager, TriggerTask

#: Stored names and values meant to break out of HTML (the page must show them inert).
HOSTILE = "<script>window.pwned=1</script>\"'><img src=x onerror=window.pwned=2><b>bold</b>"

CONFIG: dict[str, Any] = {
    "t_collect": {"after": ["pageSubmitted"], "run": "web_tests.Collect"},
    "t_score": {"after": ["t_collect"], "run": "web_tests.Score"},
    "t_report": {"after": ["t_score"], "run": "web_tests.Report"},
}


class Collect(TriggerTask):
    """Passes the page on."""

    name: ClassVar[str] = "web_tests.Collect"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {"page": dict(context.trigger_kwargs.get("pageSubmitted", {}))}


class Score(TriggerTask):
    """Fails unless the collected page says ``ok``."""

    name: ClassVar[str] = "web_tests.Score"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        page = context.trigger_kwargs.get("t_collect", {}).get("page", {})
        if not page.get("ok"):
            raise ValueError(f"cannot score page {page.get('number')!r}: not ok")
        return {"score": 42}


class Report(TriggerTask):
    """Returns what it got."""

    name: ClassVar[str] = "web_tests.Report"

    def _run(self, context: TaskContext) -> Mapping[str, Any]:
        return {"reported": True}


def make_failed_session(manager: TriggerManager, *, ok: bool = False, **page: Any) -> None:
    """Configure the workflow and fire a page: ``t_score#0`` fails unless ``ok``."""
    manager.update_configuration(CONFIG)
    manager.fire("pageSubmitted", {"number": 1, "ok": ok, **page})
