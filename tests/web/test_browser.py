"""The console in a real browser: Debian's headless Chromium driven by Playwright.

Playwright never downloads a browser here: it starts ``/usr/bin/chromium``
(``apt-get install chromium``, which ``.ci/run`` does). Without it these
tests skip on a laptop and fail in CI (``CI=true``), like the service tests.

Screenshots of each page are taken on the way; with ``TRIGGERS_SCREENSHOTS=1``
they are written to ``docs/images/`` (the ones ``docs/web.md`` shows).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_support import LiveServer, Store
from services import unavailable
from web_workflow import HOSTILE

from triggers_core import Status

CHROMIUM = "/usr/bin/chromium"
#: Flags that keep Chromium off the network and quiet (the machine has no other network).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
UID = "applicant-4711"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        unavailable("Chromium", f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright", "the playwright package is not installed")
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()
    assert dialogs == [], "a page opened a dialog: stored markup ran"


def screenshot(page: Any, name: str, tmp_path: Path) -> None:
    """Save a screenshot (and copy it to docs/images with TRIGGERS_SCREENSHOTS=1)."""
    target = tmp_path / name
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 1000
    if os.environ.get("TRIGGERS_SCREENSHOTS"):
        IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, IMAGES / name)


def sign_in(page: Any, live: LiveServer, token: str, name: str = "ann") -> None:
    page.goto(f"{live.url}/login")
    page.fill("input[name=token]", token)
    page.fill("input[name=name]", name)
    page.click("button[type=submit]")
    page.wait_for_selector("text=signed in as")


def test_list_filter_open_a_session_and_read_its_timeline(
    store: Store, live: LiveServer, page: Any, tmp_path: Path
) -> None:
    store.failed_session(UID)
    store.finished_session("applicant-4712")
    store.finished_session("applicant-5000")
    store.finished_session("survey-17")
    page.goto(live.url + "/")
    uids = page.locator("#sessions a.uid").all_inner_texts()
    assert sorted(uids) == sorted([UID, "applicant-4712", "applicant-5000", "survey-17"])
    screenshot(page, "web-sessions.png", tmp_path)
    page.fill("input[name=prefix]", "applicant-47")
    page.click("#filters button[type=submit]")
    page.wait_for_url("**prefix=applicant-47**")
    assert sorted(page.locator("#sessions a.uid").all_inner_texts()) == [UID, "applicant-4712"]
    page.check("input[name=failed]")  # the script submits the form on change
    page.wait_for_url("**failed=1**")
    assert page.locator("#sessions a.uid").all_inner_texts() == [UID]
    page.click(f"text={UID}")
    page.wait_for_selector("#timeline")
    events = page.locator("#timeline li").all_inner_texts()
    assert any("t_collect#0 cascade fired 't_collect'" in e for e in events)
    failed = [e for e in events if "t_score#0 failed" in e]
    assert failed
    assert "cannot score page 1: not ok" in failed[0]
    assert page.locator("#instances tr[data-instance='t_score#0'] .pill").first.inner_text() == (
        "failed"
    )
    assert page.locator("#graph").evaluate("img => img.naturalWidth") > 0
    screenshot(page, "web-session.png", tmp_path)
    page.click("#instances a:text('t_score#0')")
    page.wait_for_selector("#error-info")
    assert "ValueError: cannot score page 1: not ok" in page.inner_text("#error-info")
    screenshot(page, "web-instance.png", tmp_path)
    page.goto(f"{live.url}/explain?uid={UID}&name=t_report")
    assert "t_score" in page.inner_text("#explanation")
    screenshot(page, "web-explain.png", tmp_path)


def test_replay_a_failed_instance_with_new_kwargs_and_see_it_finish(
    store: Store, live: LiveServer, token: str, page: Any, tmp_path: Path
) -> None:
    store.failed_session(UID)
    page.goto(f"{live.url}/login?token={token}")  # the link `triggers web` prints
    page.goto(f"{live.url}/session?uid={UID}")
    page.click("#instances tr[data-instance='t_score#0'] a:text('replay')")
    page.wait_for_selector("#action-form textarea[name=kwargs]")
    assert '"ok": false' in page.input_value("textarea[name=kwargs]")
    page.fill("textarea[name=kwargs]", '{"t_collect": {"page": {"number": 1, "ok": true}}}')
    screenshot(page, "web-replay.png", tmp_path)
    page.click("#confirm")
    page.wait_for_selector("#done-message")
    assert page.inner_text("#done-message") == "replayed t_score#0 as t_score#1"
    live_console = store.console()  # same store: wait for the web process's runner
    live_console.runners()  # (the server's runner is its own; poll the stored state)
    storage = store.manager(UID).storage
    for _ in range(200):
        if "t_report#0" in storage.instances and storage["t_report#0"].is_resolved:
            break
        page.wait_for_timeout(50)
    page.click("#back-to-session")
    page.wait_for_selector("#instances")
    row = page.locator("#instances tr[data-instance='t_score#1'] .pill").first
    assert row.inner_text() == "finished"
    events = page.locator("#timeline li").all_inner_texts()
    assert any("t_score#1 created retry of t_score#0" in e for e in events)
    assert any("t_score#0 replayed" in e and "by web" in e for e in events)
    assert storage["t_report#0"].status is Status.FINISHED
    screenshot(page, "web-after-replay.png", tmp_path)


def test_skip_with_cascade(store: Store, live: LiveServer, token: str, page: Any) -> None:
    store.failed_session(UID)
    sign_in(page, live, token, "bob")
    page.goto(f"{live.url}/instance?uid={UID}&name=t_score%230")
    page.click("a.button:text('Skip…')")
    page.check("input[name=cascade]")
    page.fill("textarea[name=result]", '{"score": 0}')
    page.click("#confirm")
    page.wait_for_selector("#done-message")
    assert "skipped t_score#0 and fired its task's name" in page.inner_text("#done-message")
    storage = store.manager(UID).storage
    for _ in range(200):
        if "t_report#0" in storage.instances and storage["t_report#0"].is_resolved:
            break
        page.wait_for_timeout(50)
    assert storage["t_score#0"].status is Status.SKIPPED
    assert storage["t_score#0"].metadata["actor"] == "web:bob"
    assert storage["t_report#0"].status is Status.FINISHED


def test_an_action_without_the_token_is_refused(store: Store, live: LiveServer, page: Any) -> None:
    store.failed_session(UID)
    page.goto(f"{live.url}/session?uid={UID}")
    assert page.locator("text=sign in to act").count() == 1
    response = page.goto(f"{live.url}/act/replay?uid={UID}&name=t_score%230")
    assert response.status == 403
    assert "Sign in to act" in page.inner_text("h1")
    forged = page.request.post(
        f"{live.url}/act/replay?uid={UID}&name=t_score%230", form={"kwargs": "{}"}
    )
    assert forged.status == 403
    page.goto(f"{live.url}/login")
    page.fill("input[name=token]", "not-the-token-at-all")
    page.click("button[type=submit]")
    assert page.inner_text("#error-message") == "wrong token"
    assert store.manager(UID).storage["t_score#0"].status is Status.FAILED


def test_a_signed_in_post_without_the_forms_csrf_token_is_refused(
    store: Store, live: LiveServer, token: str, page: Any
) -> None:
    store.failed_session(UID)
    sign_in(page, live, token)
    forged = page.request.post(
        f"{live.url}/act/skip?uid={UID}&name=t_score%230", form={"csrf_token": "guess"}
    )
    assert forged.status == 403
    assert "CSRF" in forged.text()
    assert store.manager(UID).storage["t_score#0"].status is Status.FAILED


def test_stored_markup_is_rendered_inert(
    store: Store, live: LiveServer, token: str, page: Any, tmp_path: Path
) -> None:
    manager = store.manager(HOSTILE)
    task = "t_" + HOSTILE.replace("#", "")
    manager.update_configuration({task: {"after": [HOSTILE], "run": "triggers.FailingTask"}})
    manager.fire(HOSTILE, {HOSTILE: HOSTILE})
    store.runner.join_all(30)
    sign_in(page, live, token, HOSTILE)
    page.goto(live.url + "/")
    assert page.locator("#sessions a.uid").all_inner_texts() == [HOSTILE]
    page.click("#sessions a.uid")
    page.wait_for_selector("#session-uid")
    assert HOSTILE in page.inner_text("#session-uid")
    assert page.locator("b:text-is('bold')").count() == 0
    assert page.locator("img[src=x]").count() == 0
    link = page.locator("#instances tbody tr td:first-child a")
    assert link.inner_text() == f"{task}#0"
    link.click()
    page.wait_for_selector("#kwargs")
    assert "<script>window.pwned=1</script>" in page.inner_text("#kwargs")
    page.click("a.button:text('Replay…')")
    page.wait_for_selector("#action-form")
    assert page.evaluate("window.pwned") is None
    assert page.locator("img[src=x]").count() == 0
    screenshot(page, "web-hostile.png", tmp_path)
