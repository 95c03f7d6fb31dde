"""Fixtures of the Manager's tests: a database URL on SQLite and on PostgreSQL, a store.

``store_url`` is parametrised over ``sqlite`` (a file in the test's directory) and
``postgresql`` (a fresh database on a throwaway server started once per session, see
``pg.py``). Without PostgreSQL's binaries the PostgreSQL cases fail and say how to fix it,
unless ``HOSTVISOR_SKIP_POSTGRES=1`` makes them skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.transport.manager.pg import PostgresServer, find_bindir
from transport.manager._store import Store

__all__ = ["postgres_server", "store", "store_url"]

DIALECTS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session (started on first use)."""
    if os.environ.get("HOSTVISOR_SKIP_POSTGRES") == "1":
        pytest.skip("HOSTVISOR_SKIP_POSTGRES=1")
    bindir = find_bindir()
    if bindir is None:
        pytest.fail(
            "PostgreSQL's initdb and pg_ctl were not found (under /usr/lib/postgresql/*/bin"
            " or on PATH): install Debian's `postgresql` package, or set"
            " HOSTVISOR_SKIP_POSTGRES=1 to skip the PostgreSQL cases"
        )
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=DIALECTS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a new, empty database (SQLite file or PostgreSQL database)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'manager.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated store on ``store_url``, closed after the test."""
    opened = Store.open(store_url)
    try:
        yield opened
    finally:
        opened.close()
