"""Session listing on the SQL backends: the shipped listing contract plus what is SQL's own
(URLs, the listing index on tables made before it existed, errors). Mixed into
``SQLAlchemyCases``, which provides ``engine``, ``prefix`` and ``url()``."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import sqlalchemy as sa

from triggers_backends.sqlalchemy import (
    SQLAlchemyStorage,
    create_schema,
    drop_schema,
    list_sessions,
    metadata_for,
)
from triggers_core import SchemaMissingError, StorageError
from triggers_core import listing as core_listing
from triggers_core.runtime.sessions import SessionFilter, SessionPage
from triggers_core.testing.listing_contract import SessionListingContract

LISTING_INDEX = "instances_by_status_session"


class SQLListingCases(SessionListingContract):
    engine: sa.Engine
    prefix: str
    dialect: ClassVar[str]
    dead_url: ClassVar[str]

    def url(self, **query: str) -> str:
        raise NotImplementedError

    def list_sessions(
        self, filter: SessionFilter, *, page_size: int, cursor: str | None
    ) -> SessionPage:
        return list_sessions(
            self.engine, filter, table_prefix=self.prefix, page_size=page_size, cursor=cursor
        )

    def index_names(self) -> set[Any]:
        return {i["name"] for i in sa.inspect(self.engine).get_indexes(f"{self.prefix}instances")}

    def test_listing_through_the_url(self, kinds: dict[str, str]) -> None:
        url = self.url()
        failed = SessionFilter(failed=True)
        assert SQLAlchemyStorage.list_sessions(url, failed, page_size=5, cursor=None) == (
            SessionPage((kinds["failed"],))
        )
        assert sorted(core_listing.iter_sessions(url, page_size=2)) == sorted(kinds.values())

    def test_the_failed_filter_uses_the_listing_index(self) -> None:
        assert f"{self.prefix}{LISTING_INDEX}" in self.index_names()

    def test_create_schema_adds_the_listing_index_to_older_tables(
        self, kinds: dict[str, str]
    ) -> None:
        name = f"{self.prefix}{LISTING_INDEX}"
        index = next(
            i
            for i in metadata_for(self.prefix).tables[f"{self.prefix}instances"].indexes
            if i.name == name
        )
        index.drop(self.engine)
        assert name not in self.index_names()
        # Listing still works without it (more slowly)...
        assert self.everything(SessionFilter(failed=True)) == [kinds["failed"]]
        create_schema(self.engine, self.prefix)  # ...and create_schema adds it back
        assert name in self.index_names()
        assert self.everything(SessionFilter(failed=True)) == [kinds["failed"]]

    def test_listing_missing_tables_says_so(self) -> None:
        prefix = f"{self.prefix}none_"
        with pytest.raises(SchemaMissingError, match="do not exist") as caught:
            list_sessions(self.engine, table_prefix=prefix)
        assert caught.value.backend == self.dialect
        drop_schema(self.engine, prefix)

    def test_listing_on_a_dead_server_is_a_storage_error_without_the_password(self) -> None:
        with pytest.raises(StorageError) as caught:
            core_listing.list_sessions(self.dead_url)
        password = sa.engine.make_url(self.dead_url).password
        if password:  # (the SQLite one is a path in a missing directory)
            assert str(password) not in str(caught.value)
        assert self.dialect in str(caught.value)
