"""A fire atomic with a Django ``atomic`` block: the SQL storage on Django's own connection.

``manager.fire(..., session=django.db.connection)`` (or ``connections[alias]``),
inside ``transaction.atomic()``, when the storage's tables are in the database
of that Django connection: the storage's statements run on the very DBAPI
connection Django's transaction is open on, through a SQLAlchemy engine that
borrows it (:func:`borrow`). That engine never commits, rolls back or closes
the connection: Django owns the transaction. Each attempt is a SAVEPOINT, as
for an ORM session; the dispatch is registered with Django's
``transaction.on_commit`` of that connection, so it runs once the outermost
block commits, and never if the block (or a savepoint holding the write)
rolls back.

Supported for Django's PostgreSQL (psycopg 3) and SQLite backends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import StaticPool

from triggers_backends.sqlalchemy._errors import public_url

__all__ = ["borrow", "django_url", "is_django_connection"]

#: Django's database engines this supports, and the SQLAlchemy dialect for each.
_DIALECTS = {
    "django.db.backends.postgresql": "postgresql+psycopg",
    "django.db.backends.sqlite3": "sqlite+pysqlite",
}

#: Where a Django connection keeps its borrowing engine, with the DBAPI connection it
#: borrows (Django opens another after a close: then a new engine borrows that one).
_KEPT = "_triggers_borrowing_engine"


def is_django_connection(session: object) -> bool:
    """True for a Django database connection (``django.db.connection``, ``connections[...]``)."""
    return all(
        hasattr(session, name) for name in ("settings_dict", "in_atomic_block", "alias")
    ) and callable(getattr(session, "ensure_connection", None))


def django_url(settings: dict[str, Any]) -> URL:
    """The database of Django ``settings`` as a URL without credentials (to compare, to show)."""
    dialect = _DIALECTS[settings["ENGINE"]]
    port = settings.get("PORT")
    return URL.create(
        dialect,
        host=settings.get("HOST") or None,
        port=int(port) if port not in (None, "") else None,
        database=str(settings.get("NAME") or "") or None,
    )


def borrow(
    django_connection: Any, storage_url: URL, identity: Callable[[URL], object]
) -> tuple[Connection, Callable[[Callable[[], None]], None]]:
    """A SQLAlchemy connection on Django's open transaction, and its after-commit hook."""
    settings = django_connection.settings_dict
    dialect = _DIALECTS.get(settings.get("ENGINE"))
    if dialect is None:
        raise ValueError(
            f"session= with a Django connection supports the backends {sorted(_DIALECTS)}, "
            f"not {settings.get('ENGINE')!r}"
        )
    if not django_connection.in_atomic_block:
        raise ValueError(
            "session= with a Django connection needs an open transaction.atomic() block: "
            "outside one every statement commits on its own, so there is no transaction for "
            "the fire to join (use on_commit=True, or open the block)"
        )
    if identity(django_url(settings)) != identity(storage_url):
        raise ValueError(
            f"session= is Django's database {django_connection.alias!r}, but the session's "
            f"storage is on {public_url(storage_url)}: a fire commits with the caller's "
            "transaction only on the database that holds the storage's tables"
        )
    django_connection.ensure_connection()
    raw = django_connection.connection
    found: tuple[Any, Engine] | None = django_connection.__dict__.get(_KEPT)
    if found is None or found[0] is not raw:
        engine = sa.create_engine(
            f"{dialect}://",
            creator=lambda: raw,
            poolclass=StaticPool,
            pool_reset_on_return=None,
        )
        # Django owns the transaction and the connection: this engine only runs statements.
        for method in ("do_commit", "do_rollback", "do_close"):
            setattr(engine.dialect, method, _nothing)
        found = django_connection.__dict__[_KEPT] = (raw, engine)
    connection = found[1].connect()
    transaction: Any = __import__("django.db.transaction", fromlist=["on_commit"])
    alias = django_connection.alias

    def after_commit(action: Callable[[], None]) -> None:
        transaction.on_commit(action, using=alias, robust=True)

    return connection, after_commit


def _nothing(*_args: object) -> None:
    return None
