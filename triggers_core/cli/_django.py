"""``--settings``: Django's settings for the commands that open a Django-backed storage.

A ``django-cache://ALIAS`` storage needs Django's settings (``CACHES``). Every
command that opens a storage takes ``--settings MODULE`` (else
``DJANGO_SETTINGS_MODULE``); before the storage is opened, :func:`setup_django`
imports that module and calls ``django.setup()``. What is missing is a usage
error (exit 2) that names ``--settings`` and ``DJANGO_SETTINGS_MODULE``, never a
traceback nor a hint to install the settings module from the package index.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from triggers_core.errors import install_extra_hint

__all__ = ["DJANGO_SCHEMES", "SETTINGS_ENV", "settings_option", "setup_django"]

F = TypeVar("F", bound=Callable[..., Any])

#: The environment variable Django reads its settings module from.
SETTINGS_ENV = "DJANGO_SETTINGS_MODULE"
#: Storage URL schemes whose storage is Django's.
DJANGO_SCHEMES = frozenset({"django-cache"})


def _remember(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value:
        os.environ[SETTINGS_ENV] = value
    return value


def settings_option(function: F) -> F:
    """``--settings MODULE``: Django's settings module (else ``DJANGO_SETTINGS_MODULE``).

    Eager, so it is in place before the storage URL argument is checked.
    """
    return click.option(
        "--settings",
        metavar="MODULE",
        is_eager=True,
        expose_value=False,
        callback=_remember,
        help=f"Django settings module, for django-cache:// storages (else ${SETTINGS_ENV}).",
    )(function)


def _importable_dir() -> None:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def setup_django(scheme: str, url_hint: str = "URL") -> None:
    """Configure Django for a storage of ``scheme``: a usage error when it cannot be.

    Does nothing for a scheme that is not Django's and no settings module is
    named; with one named, the module must import (the current directory is
    importable, as for ``--app``).
    """
    module = os.environ.get(SETTINGS_ENV, "")
    if scheme not in DJANGO_SCHEMES and not module:
        return
    if importlib.util.find_spec("django") is None:
        if scheme not in DJANGO_SCHEMES:
            return
        raise click.BadParameter(
            f"{scheme}:// storages need Django, which is not installed: "
            + install_extra_hint("django"),
            param_hint=url_hint,
        )
    from django.conf import settings  # noqa: PLC0415 - Django only where it is used

    if settings.configured:
        return
    if not module:
        raise click.BadParameter(
            f"{scheme}:// needs Django's settings: pass --settings MODULE or set {SETTINGS_ENV}",
            param_hint=url_hint,
        )
    _importable_dir()
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise click.BadParameter(
            f"cannot import the Django settings module {module!r} (from --settings or "
            f"{SETTINGS_ENV}): {exc}",
            param_hint="--settings",
        ) from None
    except Exception as exc:  # a broken settings file is the user's to fix
        raise click.BadParameter(
            f"the Django settings module {module!r} failed to import: {type(exc).__name__}: {exc}",
            param_hint="--settings",
        ) from None
    import django  # noqa: PLC0415

    try:
        django.setup()
    except Exception as exc:  # ImproperlyConfigured, a missing app, ...
        raise click.BadParameter(
            f"Django could not set up with settings {module!r}: {type(exc).__name__}: {exc}",
            param_hint="--settings",
        ) from None
