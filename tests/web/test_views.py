"""The console's pages and actions through its one view layer, without a framework or browser."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any

import attrs
import pytest
from console_support import Store, get, post, text
from services import unavailable
from web_workflow import HOSTILE

from triggers_core import Status, TriggerManager
from triggers_core.engine.scopes import Changes
from triggers_core.web._graph import dot_available
from triggers_core.web.console import Console

UID = "applicant-4711"


def test_the_list_pages_through_the_listing_api(store: Store) -> None:
    for n in range(7):
        store.finished_session(f"applicant-{n:02}")
    console = store.console(page_size=3)
    first = text(get(console, "/"))
    assert first.count('class="uid"') == 3
    cursor = html.unescape(re.search(r'id="next-page" href="[^"]*cursor=([^"&]+)', first)[1])
    second = text(get(console, "/", cursor=cursor.replace("%3A", ":")))
    assert second.count('class="uid"') == 3
    listed = re.findall(r'class="uid" href="[^"]*">([^<]+)<', first + second)
    assert len(set(listed)) == 6


def test_the_list_of_a_memcached_store_says_it_may_be_incomplete(
    store: Store, memcached: Any
) -> None:
    url = f"memcached://{memcached.address}?prefix=web{store.name[-8:]}%3A"
    for n in range(3):
        manager = TriggerManager(url, uid=f"cached-{n}")
        manager.update_configuration({"t_a": {"after": ["x"], "run": "triggers.DevNullTask"}})
    page = text(get(Console(url, clock=store.clock, runner="threading"), "/"))
    assert page.count('class="uid"') == 3
    assert 'id="incomplete"' in page
    assert 'id="incomplete"' not in text(get(store.console(), "/"))  # memory: complete


def test_filters_and_uid_prefix_search(store: Store) -> None:
    store.failed_session(UID)
    store.finished_session("applicant-4712")
    store.finished_session("survey-1")
    console = store.console()
    failed = text(get(console, "/", failed="1"))
    assert UID in failed
    assert "applicant-4712" not in failed
    found = text(get(console, "/", prefix="applicant-47"))
    assert UID in found
    assert "applicant-4712" in found
    assert "survey-1" not in found
    assert "survey-1" in text(get(console, "/"))
    assert "No session matches" in text(get(console, "/", prefix="nobody"))


def test_a_bad_filter_is_a_clear_error(store: Store) -> None:
    response = get(store.console(), "/", stale="soon")
    assert response.status == 400
    assert "not a duration: &#39;soon&#39;" in text(response)


def test_the_session_page_shows_counts_timeline_instances_and_graph(store: Store) -> None:
    store.failed_session(UID)
    page = text(get(store.console(), "/session", uid=UID))
    assert "1 failed" in page
    assert "1 resolved" in page
    assert 'src="/graph.svg?uid=applicant-4711"' in page
    # The timeline: creation (with what was recorded), transitions, the cascade, the failure.
    events = re.findall(r'<span class="inst">([^<]+)</span> <span class="kind">(\w+)</span>', page)
    assert ("t_collect#0", "created") in events
    assert ("t_collect#0", "finished") in events
    assert ("t_collect#0", "cascade") in events
    assert ("t_score#0", "failed") in events
    assert "cannot score page 1: not ok" in page
    # Actions for the failed instance.
    assert "/act/replay?uid=applicant-4711&amp;name=t_score%230" in page
    assert "/act/skip?uid=applicant-4711&amp;name=t_score%230" in page


def test_the_instance_table_pages_and_filters(store: Store) -> None:
    store.failed_session(UID)
    console = store.console(instances_per_page=1)
    page = text(get(console, "/session", uid=UID))
    assert "page 1 of 2" in page
    failed = text(get(console, "/session", uid=UID, status="failed"))
    assert 'data-instance="t_score#0"' in failed
    assert 'data-instance="t_collect#0"' not in failed
    by_task = text(get(console, "/session", uid=UID, task="t_collect"))
    assert 'data-instance="t_collect#0"' in by_task


def test_the_instance_page_shows_kwargs_result_and_the_error(store: Store) -> None:
    store.failed_session(UID)
    console = store.console()
    failed = text(get(console, "/instance", uid=UID, name="t_score#0"))
    assert "builtins.ValueError" in failed
    assert "cannot score page 1: not ok" in failed
    assert "Traceback" in failed
    finished = text(get(console, "/instance", uid=UID, name="t_collect#0"))
    assert "&#34;number&#34;: 1" in finished or "&quot;number&quot;: 1" in finished


def test_large_values_are_cut_and_their_size_said(store: Store) -> None:
    store.failed_session(UID, blob="x" * 50_000)
    page = text(get(store.console(), "/instance", uid=UID, name="t_collect#0"))
    assert "truncated: the first 20,000 characters of" in page
    assert "KB" in page
    assert "x" * 50_000 not in page


def test_errors_are_redacted(store: Store) -> None:
    manager = store.manager(UID)
    manager.update_configuration({"t_leak": {"after": ["go"], "run": "triggers.FailingTask"}})
    manager.fire("go")
    store.runner.join_all(30)
    snapshot = manager.storage.load_full()
    state = snapshot.state
    leaked = state.instances["t_leak#0"]
    meta = {
        **leaked.metadata,
        "exceptionInfo": "OperationalError: postgresql://app:hunter2@db/app refused",
    }
    changed = attrs.evolve(leaked, metadata=meta)
    new_state = attrs.evolve(state, instances={**state.instances, changed.name: changed})
    manager.storage.compare_and_swap(
        snapshot.version, new_state, Changes(instances=frozenset({changed.name}))
    )
    console = store.console()
    for page in (
        text(get(console, "/instance", uid=UID, name="t_leak#0")),
        text(get(console, "/session", uid=UID)),
        text(get(console, "/explain", uid=UID, name="t_leak")),
    ):
        assert "hunter2" not in page
        assert "postgresql://app@db/app" in page


def test_stored_markup_is_shown_inert_everywhere(store: Store) -> None:
    manager = store.manager(HOSTILE)
    task = "t_" + HOSTILE.replace("#", "")
    manager.update_configuration({task: {"after": [HOSTILE], "run": "triggers.FailingTask"}})
    manager.fire(HOSTILE, {HOSTILE: HOSTILE})
    store.runner.join_all(30)
    console = store.console()
    pages = [
        get(console, "/", prefix="<script>"),
        get(console, "/session", uid=HOSTILE),
        get(console, "/instance", uid=HOSTILE, name=f"{task}#0"),
        get(console, "/explain", uid=HOSTILE, name=task),
        get(console, "/explain", uid=HOSTILE, name=HOSTILE),
        get(console, "/act/replay", actor="web:x", uid=HOSTILE, name=f"{task}#0"),
        get(console, "/session", uid=HOSTILE + "-missing"),
    ]
    for response in pages:
        body = text(response)
        assert "<script>window" not in body
        assert "<img src=x" not in body
        assert "<b>bold</b>" not in body
        assert "onerror=window" not in body or "&lt;img src=x onerror=window" in body
        assert "Content-Security-Policy" in response.headers
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in text(pages[1])


def test_no_secret_of_the_storage_url_is_shown() -> None:
    console = Console("postgresql+psycopg://app:hunter2@127.0.0.1:1/nothing?sslpassword=pw2")
    for path in ("/", "/session"):
        response = get(console, path, uid="x")
        assert response.status == 503
        assert "hunter2" not in text(response)
        assert "pw2" not in text(response)
        assert "postgresql+psycopg://app@127.0.0.1:1/nothing" in text(response)


def test_explain_and_what_if(store: Store) -> None:
    store.failed_session(UID)
    console = store.console()
    waiting = text(get(console, "/explain", uid=UID, name="t_report"))
    assert "t_report" in waiting
    assert "t_score" in waiting
    what = text(get(console, "/explain", uid=UID, fire="pageSubmitted"))
    assert 'id="what-if"' in what
    unknown = get(console, "/explain", uid=UID, name="t_nothing")
    assert unknown.status == 404


def test_the_graph_is_an_svg_coloured_by_status(store: Store) -> None:
    if not dot_available():
        unavailable("Graphviz", "dot is missing (apt-get install graphviz)")
    store.failed_session(UID)
    response = get(store.console(), "/graph.svg", uid=UID)
    assert response.status == 200
    assert response.content_type == "image/svg+xml"
    svg = response.body.decode()
    assert "<svg" in svg
    assert "#f8d7da" in svg  # t_score failed
    assert "#d1e7dd" in svg  # t_collect finished
    assert "script-src" not in response.headers["Content-Security-Policy"]


def test_unknown_pages_sessions_and_instances_are_404(store: Store) -> None:
    store.failed_session(UID)
    console = store.console()
    assert get(console, "/nope").status == 404
    assert get(console, "/session", uid="nobody").status == 404
    assert get(console, "/session").status == 404
    assert get(console, "/instance", uid=UID, name="t_score#9").status == 404
    assert get(console, "/session", uid=UID, page="zero").status == 400


# -- actions ---------------------------------------------------------------------------


def test_actions_need_a_signed_in_actor(store: Store) -> None:
    store.failed_session(UID)
    console = store.console()
    form = {"kwargs": "{}"}
    refused = post(console, "/act/replay", form, actor=None, uid=UID, name="t_score#0")
    assert refused.status == 403
    assert get(console, "/act/replay", uid=UID, name="t_score#0").status == 403
    assert store.manager(UID).storage["t_score#0"].status is Status.FAILED


def test_actions_need_the_csrf_token(store: Store) -> None:
    store.failed_session(UID)
    console = store.console()
    refused = post(console, "/act/replay", {}, csrf_ok=False, uid=UID, name="t_score#0")
    assert refused.status == 403
    assert "CSRF" in text(refused)
    assert store.manager(UID).storage["t_score#0"].status is Status.FAILED


def test_a_read_only_console_and_one_without_a_runner_refuse_actions(store: Store) -> None:
    store.failed_session(UID)
    for console in (store.console(read_only=True), store.console(runner=None)):
        response = post(console, "/act/replay", {}, uid=UID, name="t_score#0")
        assert response.status == 403
        assert 'href="/act/replay' not in text(get(console, "/session", uid=UID))
    assert store.manager(UID).storage["t_score#0"].status is Status.FAILED


def test_reading_pages_refuse_posts(store: Store) -> None:
    store.failed_session(UID)
    assert post(store.console(), "/session", {}, uid=UID).status == 405


def test_replay_with_new_kwargs_runs_the_clone(store: Store) -> None:
    store.failed_session(UID)
    console = store.console()
    confirm = text(get(console, "/act/replay", actor="web:ann", uid=UID, name="t_score#0"))
    assert "&#34;page&#34;" in confirm or "&quot;page&quot;" in confirm  # the recorded kwargs
    new = '{"t_collect": {"page": {"number": 1, "ok": true}}}'
    done = post(console, "/act/replay", {"kwargs": new}, actor="web:ann", uid=UID, name="t_score#0")
    assert done.status == 200
    assert "replayed t_score#0 as t_score#1" in text(done)
    console.runners()["threading"].join_all(30)
    storage = store.manager(UID).storage
    assert storage["t_score#0"].status is Status.REPLAYED
    assert storage["t_score#0"].metadata["actor"] == "web:ann"
    assert storage["t_score#1"].status is Status.FINISHED
    assert storage["t_report#0"].status is Status.FINISHED


def test_bad_replacement_kwargs_show_the_form_again(store: Store) -> None:
    store.failed_session(UID)
    console = store.console()
    response = post(console, "/act/replay", {"kwargs": "{nope"}, uid=UID, name="t_score#0")
    assert response.status == 400
    assert "not valid JSON" in text(response)
    assert "{nope" in text(response)
    not_failed = post(console, "/act/replay", {}, uid=UID, name="t_collect#0")
    assert not_failed.status == 409
    assert "only failed instances" in text(not_failed)


def test_skip_with_cascade_runs_what_waits(store: Store) -> None:
    store.failed_session(UID)
    console = store.console()
    form = {"cascade": "1", "result": '{"score": 0}'}
    done = post(console, "/act/skip", form, uid=UID, name="t_score#0")
    assert "skipped t_score#0 and fired its task" in text(done)
    console.runners()["threading"].join_all(30)
    storage = store.manager(UID).storage
    assert storage["t_score#0"].status is Status.SKIPPED
    assert storage["t_report#0"].status is Status.FINISHED


def test_skip_without_cascade_runs_nothing(store: Store) -> None:
    store.failed_session(UID)
    console = store.console()
    post(console, "/act/skip", {}, uid=UID, name="t_score#0")
    assert "t_report#0" not in store.manager(UID).storage.instances
    refused = post(console, "/act/skip", {"result": "{}"}, uid=UID, name="t_score#0")
    assert refused.status in (400, 409)


def test_fire_and_fail_and_recover(store: Store) -> None:
    manager = store.manager(UID)
    manager.update_configuration({"t_wait": {"after": ["a", "b"], "run": "triggers.DevNullTask"}})
    console = store.console(runner="celery")  # nothing may run here: dispatch is Celery's
    # Fire through the console, with the Celery runner in eager mode off: it only sends.
    preview = text(get(console, "/act/fire", actor="web:x", uid=UID, trigger="a"))
    assert 'id="what-if"' in preview
    console = store.console()
    done = post(console, "/act/fire", {"trigger": "a", "kwargs": '{"n": 1}'}, uid=UID)
    assert "fired &#39;a&#39;: scheduled nothing" in text(done)
    done = post(console, "/act/fire", {"trigger": "b", "kwargs": "{}"}, uid=UID)
    assert "scheduled t_wait#0" in text(done)
    console.runners()["threading"].join_all(30)
    assert manager.storage["t_wait#0"].status is Status.FINISHED
    recovered = post(console, "/act/recover", {}, uid=UID)
    assert recovered.status == 200
    assert "recovered" in text(recovered)


def test_fail_a_scheduled_instance(store: Store) -> None:
    manager = store.manager(UID)
    manager.update_configuration({"t_slow": {"after": ["go"], "run": "triggers.DevNullTask"}})
    console = store.console(runner="celery")
    # Celery's runner would send a message; a scheduled instance is what an operator fails.
    snapshot = manager.storage.load_full()
    from triggers_core import engine

    fired = engine.fire_checked(snapshot.state, "go", {}, now=store.clock())
    manager.storage.compare_and_swap(snapshot.version, fired.state, fired.changes)
    assert manager.storage["t_slow#0"].status is Status.SCHEDULED
    missing = post(console, "/act/fail", {"reason": ""}, uid=UID, name="t_slow#0")
    assert missing.status == 400
    done = post(console, "/act/fail", {"reason": "the worker died"}, uid=UID, name="t_slow#0")
    assert "failed t_slow#0" in text(done)
    failed = manager.storage["t_slow#0"]
    assert failed.status is Status.FAILED
    assert failed.metadata["actor"] == "web:tester"


def test_an_unregistered_task_is_refused_before_anything_is_stored(store: Store) -> None:
    manager = store.manager(UID)
    manager.update_configuration({"t_x": {"after": ["go"], "run": "nobody.registered.this"}})
    response = post(store.console(), "/act/fire", {"trigger": "go"}, uid=UID)
    assert response.status == 400
    assert "no trigger task is registered" in text(response)
    assert "t_x#0" not in manager.storage.instances


def test_the_stale_filter_uses_the_console_clock(store: Store) -> None:
    store.failed_session(UID)
    console = store.console()
    assert UID not in text(get(console, "/", stale="1h"))
    assert console.stale_after == timedelta(hours=1)


def test_without_graphviz_the_graph_is_shown_as_dot_text(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from triggers_core.web import _pages

    monkeypatch.setattr(_pages, "dot_available", lambda: False)
    store.failed_session(UID)
    page = text(get(store.console(), "/session", uid=UID))
    assert "dot</code> is not installed" in page
    assert "digraph triggers" in page


def test_the_session_page_never_reads_the_whole_history(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = store.manager(UID)
    manager.update_configuration(
        {"t_page": {"after": ["start"], "andEvery": "page", "run": "triggers.DevNullTask"}}
    )
    manager.fire("start")
    for n in range(30):
        manager.fire("page", {"n": n})
    store.runner.join_all(30)
    from triggers_core import MemoryStorage

    def refuse(self: object) -> None:
        raise AssertionError("the session page read the whole session")

    monkeypatch.setattr(MemoryStorage, "load_full", refuse)
    console = store.console(instances_per_page=10)
    first = text(get(console, "/session", uid=UID))
    assert "30 instances of 1 task" in first
    assert "30 resolved" in first
    assert "page 1 of 3" in first
    assert 'data-instance="t_page#29"' in first  # newest first
    third = text(get(console, "/session", uid=UID, page="3", task="t_page"))
    assert 'data-instance="t_page#0"' in third
    monkeypatch.undo()
    finished = text(get(console, "/session", uid=UID, status="finished"))
    assert "read the whole session" in finished
    assert 'data-instance="t_page#0"' in finished


def test_the_lost_filter_lists_sessions_whose_worker_died(store: Store) -> None:
    from triggers_core import MemoryStorage, TriggerManager
    from triggers_core.testing.lost_runs import start_run
    from triggers_core.testing.storage_contract import RecordingRunner

    store.failed_session(UID)
    for uid, expires_in in (("applicant-lost", -5.0), ("applicant-live", 600.0)):
        storage = MemoryStorage(uid, store_name=store.name)
        manager = TriggerManager(
            storage, runners={"rec": RecordingRunner()}, default_runner="rec", clock=store.clock
        )
        manager.update_configuration({"t_a": {"after": ["x"], "run": "contract_task"}})
        manager.fire("x")
        start_run(storage, "t_a#0", expires_in=expires_in, now=store.clock())
    page = text(get(store.console(), "/", lost="1"))
    assert "applicant-lost" in page
    assert "applicant-live" not in page
    assert UID not in page
    assert 'name="lost" value="1" checked' in page


def test_the_expired_filter_lists_sessions_with_a_closed_window(store: Store) -> None:
    from triggers_core import MemoryStorage, TriggerManager
    from triggers_core.testing.storage_contract import RecordingRunner

    store.failed_session(UID)
    storage = MemoryStorage("applicant-late", store_name=store.name)
    manager = TriggerManager(
        storage, runners={"rec": RecordingRunner()}, default_runner="rec", clock=store.clock
    )
    manager.update_configuration(
        {"t_w": {"after": ["x", "z"], "within": "1h", "run": "contract_task"}}
    )
    manager.fire("x")
    manager.advance(store.clock() + timedelta(hours=2))
    assert storage["t_w#0"].status is Status.EXPIRED
    page = text(get(store.console(), "/", expired="1"))
    assert "applicant-late" in page
    assert UID not in page
    assert 'name="expired" value="1" checked' in page
