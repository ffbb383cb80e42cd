"""A Django project that includes the console, checked with Django's test client.

Run as ``python django_site.py STORAGE_URL UID``: it configures Django (its
own settings: the test suite's process has others), includes
``triggers_core.web.urls`` under ``triggers/``, and prints a JSON report of
what each user saw, for ``test_django.py`` to assert on.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import django
from django.conf import settings
from django.urls import include, path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import web_workflow  # noqa: F401 - registers the workflow's tasks (the runner is `threading`)

#: Filled once Django is set up (the include imports Django's auth views).
urlpatterns: list[object] = []


def main(url: str, uid: str) -> dict[str, object]:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="console-tests",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        TRIGGERS_WEB={"STORAGE_URL": url, "RUNNER": "threading"},
        LOGIN_URL="/accounts/login/",
        USE_TZ=True,
    )
    django.setup()
    urlpatterns.append(path("triggers/", include("triggers_core.web.urls")))
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    from triggers_core import open_storage
    from triggers_core.web._django import console_for_settings

    call_command("migrate", verbosity=0)
    report: dict[str, object] = {}
    quoted = "uid=" + uid
    anonymous = Client()
    answer = anonymous.get("/triggers/")
    report["anonymous"] = [answer.status_code, answer.get("Location", "")]

    User.objects.create_user("viewer", password="x", is_staff=True)
    viewer = Client()
    viewer.force_login(User.objects.get(username="viewer"))
    listing = viewer.get("/triggers/")
    report["viewer_list"] = [listing.status_code, quoted in listing.content.decode()]
    report["viewer_links"] = f'href="/triggers/session?{quoted}"' in listing.content.decode()
    session = viewer.get(f"/triggers/session?uid={uid}")
    report["viewer_session"] = [session.status_code, "t_score#0" in session.content.decode()]
    report["viewer_act"] = viewer.get(
        f"/triggers/act/replay?uid={uid}&name=t_score%230"
    ).status_code

    User.objects.create_superuser("root", password="x")
    operator = Client(enforce_csrf_checks=True)
    operator.force_login(User.objects.get(username="root"))
    confirm = operator.get(f"/triggers/act/replay?uid={uid}&name=t_score%230")
    page = confirm.content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    report["confirm"] = [confirm.status_code, token is not None]
    kwargs = '{"t_collect": {"page": {"number": 1, "ok": true}}}'
    target = f"/triggers/act/replay?uid={uid}&name=t_score%230"
    forged = operator.post(target, {"kwargs": kwargs})
    report["forged"] = forged.status_code
    assert token is not None
    done = operator.post(target, {"kwargs": kwargs, "csrfmiddlewaretoken": token[1]})
    report["done"] = [done.status_code, "replayed t_score#0 as t_score#1" in done.content.decode()]
    console_for_settings().runners()["threading"].join_all(30)
    storage = open_storage(url, uid)
    report["statuses"] = {
        i.name: i.status.value for i in storage.load_full().state.instances.values()
    }
    report["actor"] = storage["t_score#0"].metadata.get("actor")
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
