"""No silent per-process default, and a missing driver names the extra to install.

Each case runs in a fresh interpreter: "once per process" and "not installed"
are properties of a process. A missing package is simulated by a ``None`` in
``sys.modules`` (what Python does for a module it must not import); installing
and uninstalling real packages in a shared virtualenv is not an option.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from triggers_core.runtime.registry import STORAGE_URL_ENV, install_hint


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != STORAGE_URL_ENV}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        check=False,
    )


def test_the_memory_default_warns_once_per_process_naming_the_variable() -> None:
    done = run_python(
        """
        import logging
        logging.basicConfig(format="%(levelname)s %(name)s %(message)s")
        from triggers_core import TriggerManager, open_storage
        a = TriggerManager(uid="first")
        b = TriggerManager(uid="second")
        c = open_storage(None, "third")
        print(type(a.storage).__name__, type(c).__name__)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "MemoryStorage MemoryStorage"
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, done.stderr
    assert warnings[0].startswith(
        "WARNING triggers_core.registry no storage URL was given and TRIGGERS_STORAGE_URL is "
        "not set: sessions are kept in a memory:// store private to this process"
    )


def test_no_warning_when_a_url_or_the_variable_is_given(tmp_path: os.PathLike[str]) -> None:
    done = run_python(
        """
        import logging
        logging.basicConfig(format="%(levelname)s %(name)s %(message)s")
        from triggers_core import TriggerManager
        TriggerManager("memory://", uid="explicit")
        TriggerManager(uid="from-env")
        """,
        TRIGGERS_STORAGE_URL="memory://shared",
    )
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr


@pytest.mark.parametrize(
    ("missing", "url", "hint"),
    [
        (
            "psycopg",
            "postgresql+psycopg://app@127.0.0.1:1/app",
            "pip install -e '.[postgres]' in a checkout of celery-triggers",
        ),
        ("pymysql", "mysql+pymysql://app@127.0.0.1:1/app", "pip install -e '.[mysql]' in a"),
        ("sqlalchemy", "sqlite:///never-created.db", "pip install -e '.[sqlalchemy]' in a"),
    ],
)
def test_a_missing_driver_names_the_extra(missing: str, url: str, hint: str) -> None:
    pytest.importorskip("sqlalchemy")
    done = run_python(
        f"""
        import sys
        sys.modules[{missing!r}] = None  # as if the package were not installed
        from triggers_core import RegistryError, open_storage
        try:
            open_storage({url!r}, "u")
        except RegistryError as exc:
            print(exc)
        """
    )
    assert done.returncode == 0, done.stderr
    assert hint in done.stdout
    assert repr(missing) in done.stdout
    assert "known schemes" not in done.stdout  # the scheme is known: its extra is missing


def test_a_driver_outside_the_extra_is_named_as_a_module() -> None:
    assert (
        install_hint("postgresql", "psycopg2")
        == "install the module 'psycopg2' (pip install psycopg2)"
    )
    assert install_hint("celery", "celery") == (
        "pip install -e '.[celery]' in a checkout of celery-triggers "
        "(pip install 'celery-triggers[celery]' once it is on PyPI)"
    )
    assert install_hint("unknown", None) == (
        "install the matching extra: pip install -e '.[...]' in a checkout of celery-triggers "
        "(pip install 'celery-triggers[...]' once it is on PyPI)"
    )
