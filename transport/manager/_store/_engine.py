"""Engines, transactions, error translation and the few dialect-specific pieces.

Theory of operation:

* One :class:`sqlalchemy.Engine` per store, thread-safe; every store method takes a
  pooled connection for one transaction: :meth:`StoreBase._write` for changes,
  :meth:`StoreBase._read` for queries. Both translate SQLAlchemy's and the driver's errors
  (:func:`translated`): a unique or foreign-key violation becomes
  :class:`~transport.manager.ConflictError`, anything else
  :class:`~transport.manager.StoreError`, each ``from`` the original.
* SQLite: a file database in WAL mode (readers never wait for the writer),
  ``synchronous=NORMAL`` (a commit is durable once checkpointed; a crash loses no
  committed transaction's consistency), ``foreign_keys=ON`` and a long busy timeout.
  pysqlite's own transaction handling is switched off (``isolation_level = None``) and the
  ``begin`` event emits ``BEGIN IMMEDIATE`` for writes, so concurrent writers queue on the
  database lock at the start of their transaction instead of failing with "database is
  locked" when a reader turns writer; reads emit a plain (deferred) ``BEGIN``, which gives
  them a consistent snapshot and never blocks the writer. This is the pysqlite recipe of
  SQLAlchemy's documentation ("Serializable isolation / Savepoints / Transactional DDL").
* PostgreSQL: psycopg 3, READ COMMITTED. Work that must happen once across several
  Managers uses either ``UPDATE ... RETURNING`` (each row changes once) or an advisory
  lock (:data:`MIGRATION_LOCK` around migrations, :data:`MAINTENANCE_LOCK` for jobs).
* Upserts: ``INSERT ... ON CONFLICT`` has one spelling on both databases but two
  SQLAlchemy constructs; :func:`insert` picks the dialect's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite

from transport.manager._errors import ConflictError, NotFoundError, StoreError
from transport.manager._model import Page

from ._schema import nodes

__all__ = [
    "MAINTENANCE_LOCK",
    "MIGRATION_LOCK",
    "StoreBase",
    "chunks",
    "create_engine",
    "insert",
    "migrate",
    "node_not_found",
    "page_bounds",
    "record",
    "translated",
]

T = TypeVar("T")
R = TypeVar("R")

MIGRATION_LOCK = 0x68760001
"""The PostgreSQL advisory lock held while migrations run (one Manager migrates)."""
MAINTENANCE_LOCK = 0x68760002
"""The PostgreSQL advisory lock of :meth:`StoreBase.maintenance_lock`."""
PARTITION_LOCK = 0x68760003
"""The PostgreSQL advisory lock held while metric partitions are created or dropped."""

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for the database lock before failing."""
IN_CHUNK = 500
"""At most this many values in one ``IN (...)`` list."""

_READ_ONLY = "hostvisor_read_only"
_KNOWN_NODES = sa.select(nodes.c.node_id).where(
    nodes.c.node_id.in_(sa.bindparam("ids", expanding=True))
)
_KNOWN_NODES_SQLITE = sa.text(
    "SELECT node_id FROM nodes WHERE node_id IN (SELECT value FROM json_each(:ids))"
)
"""SQLite's :data:`_KNOWN_NODES`: the ids as one JSON array. An expanding ``IN`` list
is rendered into the statement at each execution, which costs the ingest's writer more
than the query."""
_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int | None = None,
    recycle_s: float | None = None,
) -> sa.Engine:
    """An engine for ``url`` with this store's connection settings.

    Args:
        url: ``sqlite:///path/to/db.sqlite3`` (a file; in-memory databases are refused, each
            connection would see its own), or ``postgresql+psycopg://...``
            (``postgresql://`` means psycopg 3 too).
        pool_size: Connections kept open (the original's ``max_idle_conns``).
        max_overflow: How many more may be opened under load (the original's
            ``max_open_conns`` less ``pool_size``); None: as many as ``pool_size``.
        recycle_s: Connections older than this are replaced when next taken from the
            pool (the original's ``conn_max_lifetime``); None: never.

    Returns:
        The engine (no connection made yet).

    Raises:
        StoreError: An unsupported database or a malformed URL.
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StoreError(f"invalid database URL: {exc}") from exc
    backend = parsed.get_backend_name()
    pooling: dict[str, Any] = {
        "pool_size": pool_size,
        "max_overflow": pool_size if max_overflow is None else max_overflow,
        "pool_recycle": -1 if recycle_s is None else max(1, round(recycle_s)),
    }
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise StoreError("SQLite needs a database file (sqlite:///path/to/file)")
        engine = sa.create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
            **pooling,
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if backend == "postgresql":
        if parsed.get_driver_name() not in ("psycopg", "postgresql"):
            raise StoreError(f"PostgreSQL is used through psycopg 3, not {parsed.drivername}")
        return sa.create_engine(
            parsed.set(drivername="postgresql+psycopg"),
            pool_pre_ping=True,
            **pooling,
        )
    raise StoreError(f"unsupported database {backend!r} (use sqlite or postgresql)")


@contextlib.contextmanager
def _writer_lock(path: str | None) -> Iterator[None]:
    """Hold the SQLite database's writers' lock (``flock`` on ``path``) for a block; a
    no-op when ``path`` is None (PostgreSQL).

    SQLite lets one writer in at a time, and one that finds the database locked sleeps
    and tries again (its busy handler: 1, 2, 5, 10 ms and longer): two processes that
    write all the time (the gRPC workers of ``grpc.workers``) would each keep finding the
    other's transaction and wait far longer than it lasts. Writers of every process and
    thread take this lock first, in the kernel, which wakes the next one as soon as the
    last lets go, so that ``BEGIN IMMEDIATE`` finds the database free. Each holder opens
    the file anew (``flock`` locks belong to an open file, so threads exclude each other
    as processes do); closing it releases the lock, also when the process dies.
    """
    if path is None:
        yield
        return
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot open the writers' lock file {path!r}: {exc.strerror}") from exc
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _sqlite_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    dbapi_connection.isolation_level = None
    _switch_to_wal(dbapi_connection)
    for pragma in (
        "synchronous=NORMAL",
        f"busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}",
        "foreign_keys=ON",
    ):
        dbapi_connection.execute(f"PRAGMA {pragma}").close()


def _switch_to_wal(dbapi_connection: sqlite3.Connection) -> None:
    """``PRAGMA journal_mode=WAL`` for a file not yet in WAL mode, holding a lock file
    (``{database}.wal.lock``, as :func:`_writer_lock` holds its own) while it switches.

    Switching a new database file to WAL needs the file to itself, and SQLite answers
    "database is locked" at once, without its busy handler, to a connection that tries
    while another switches it (Managers that open a new file together): under the lock
    they switch one after the other. A file in WAL mode stays so: most connections find
    it so and take no lock. (Not the writers' lock: a writer holding it may be the one
    opening this connection.)
    """
    row = dbapi_connection.execute("PRAGMA journal_mode").fetchone()
    if row is not None and str(row[0]).lower() == "wal":
        return
    row = dbapi_connection.execute("PRAGMA database_list").fetchone()
    path = row[2] if row is not None and row[2] else None
    with _writer_lock(f"{path}.wal.lock" if path else None):
        dbapi_connection.execute("PRAGMA journal_mode=WAL").close()


def _sqlite_begin(conn: sa.Connection) -> None:
    read_only = conn.get_execution_options().get(_READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _describe(exc: sa.exc.SQLAlchemyError) -> str:
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {exc.orig}".strip()
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Turn SQLAlchemy's and the driver's errors into the Manager's.

    Raises:
        ConflictError: A constraint was violated (from ``IntegrityError``).
        StoreError: Any other database error.
    """
    try:
        yield
    except sa.exc.IntegrityError as exc:
        raise ConflictError(f"conflict: {_describe(exc)}") from exc
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"database error: {_describe(exc)}") from exc
    except sqlite3.IntegrityError as exc:  # from statements run on the driver
        raise ConflictError(f"conflict: {exc}") from exc
    except sqlite3.Error as exc:  # PRAGMAs on connect, statements run on the driver
        raise StoreError(f"database error: {type(exc).__name__}: {exc}") from exc


def migrate(engine: sa.Engine) -> None:
    """Upgrade the database to the newest migration (a no-op when it is there).

    On PostgreSQL the upgrade runs in one transaction holding :data:`MIGRATION_LOCK`, so
    Managers that start together migrate one after the other (the later ones find nothing
    to do); on SQLite the write transaction's ``BEGIN IMMEDIATE`` serialises them.

    Args:
        engine: The store's engine.

    Raises:
        StoreError: A migration failed (nothing of it is applied).
    """
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with translated(), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def insert(dialect: str, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """An ``INSERT`` into ``table`` that can take ``ON CONFLICT`` clauses on ``dialect``.

    Building a statement costs far more than running a cached one: the store builds each
    hot statement once per dialect (``functools.cache``) and passes values as parameters.

    Args:
        dialect: ``"sqlite"`` or ``"postgresql"``.
        table: The table.

    Returns:
        The dialect's insert construct (``.excluded``, ``.on_conflict_do_update``,
        ``.on_conflict_do_nothing``).
    """
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


@dataclasses.dataclass(frozen=True, slots=True)
class Prepared:
    """A statement compiled once for SQLite, run on the driver itself (see
    :func:`prepare` and :func:`driver_connection`): once per row (:meth:`executemany`) or
    once returning rows (:meth:`rows`)."""

    sql: str
    names: tuple[str, ...]
    fixed: Mapping[str, Any]

    def executemany(self, conn: sa.Connection, rows: Iterable[Mapping[str, Any]]) -> None:
        """Run the statement once per row, each row a mapping of the statement's
        parameters (JSON columns as JSON text: no type conversion is applied)."""
        names, fixed = self.names, self.fixed
        params = [tuple(fixed[n] if n in fixed else row[n] for n in names) for row in rows]
        if params:
            driver_connection(conn).executemany(self.sql, params)

    def rows(self, conn: sa.Connection, row: Mapping[str, Any]) -> list[Any]:
        """Run the statement once with ``row``'s parameters; the rows it returns, as
        tuples."""
        params = tuple(self.fixed[n] if n in self.fixed else row[n] for n in self.names)
        return driver_connection(conn).execute(self.sql, params).fetchall()


def driver_connection(conn: sa.Connection) -> sqlite3.Connection:
    """The ``sqlite3`` connection under ``conn``, in ``conn``'s transaction.

    The ingest's writer runs a handful of statements per batch; through SQLAlchemy's
    execution machinery each costs about 130 us of CPU more than SQLite's own work
    (measured: a node lookup 146 us against 18 us on the driver), which was most of a
    small batch's cost. :class:`Prepared` statements run on the driver directly; errors
    are the driver's (:func:`translated` turns them into the store's).
    """
    driver = conn.connection.driver_connection
    if not isinstance(driver, sqlite3.Connection):  # pragma: no cover - a defect
        raise TypeError(f"not a SQLite connection: {driver!r}")
    return driver


@functools.cache
def prepare(statement: sa.Executable, columns: tuple[str, ...] | None = None) -> Prepared:
    """``statement`` compiled for SQLite once, run on the driver with plain tuples.

    SQLAlchemy builds each row's parameters in Python (tens of microseconds a row) and
    converts each value; a batch of the gRPC ingest has hundreds of rows. The compiled SQL,
    its parameters' order and the values the statement fixes itself (literals such as a
    status) are kept, and each row becomes a tuple handed to ``sqlite3``'s executemany
    (or its execute, for a statement that returns rows). Only for statements whose values
    need no conversion: ``sa.text`` and constructs of plain columns (JSON as text).

    Args:
        statement: An INSERT (with ``columns``, the columns each row gives), an UPDATE, or
            a ``sa.text`` query.
        columns: The INSERT's columns.

    Returns:
        The prepared statement.
    """
    if not isinstance(statement, sa.ClauseElement):
        raise TypeError(f"prepare: not a statement: {statement!r}")
    compiled = statement.compile(
        dialect=sqlite.dialect(), column_keys=list(columns) if columns else None
    )
    if not isinstance(compiled, sa.sql.compiler.SQLCompiler):  # pragma: no cover
        raise TypeError(f"prepare: {statement!r} compiles to no SQL")
    names = tuple(compiled.positiontup or ())
    binds = compiled.binds
    given = set(columns or ()) | {
        name for name, bind in binds.items() if bind.value is None and bind.callable is None
    }
    fixed = {
        name: bind.effective_value
        for name, bind in binds.items()
        if name in names and name not in given
    }
    return Prepared(str(compiled), names, MappingProxyType(fixed))


def chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterable[Sequence[T]]:
    """``items`` in slices of at most ``size`` (for ``IN`` lists)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class StoreBase:
    """What every part of the store shares: the engine and the transaction helpers."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        database = engine.url.database
        self._lock_path = f"{database}.lock" if self._dialect == "sqlite" and database else None

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._dialect

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for tests and benchmarks; the store's API is its methods)."""
        return self._engine

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A connection in a write transaction, committed when the block ends normally
        (on SQLite, holding the writers' lock file: see :func:`_writer_lock`)."""
        with translated(), _writer_lock(self._lock_path), self._engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        """A connection for queries (a read-only snapshot on SQLite), rolled back after."""
        with translated(), self._engine.connect() as conn:
            conn.execution_options(**{_READ_ONLY: True})
            yield conn

    def _first(self, query: sa.Select[Any], missing: StoreError) -> Mapping[Any, Any]:
        """The first row of ``query``; raises ``missing`` when there is none."""
        with self._read() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise missing
        return row._mapping

    def _page(
        self,
        query: sa.Select[Any],
        convert: Callable[[Mapping[Any, Any]], T],
        *,
        page: int,
        page_size: int,
    ) -> Page[T]:
        """One page of ``query`` (ordered), with the count of all its rows.

        Raises:
            ValueError: ``page`` or ``page_size`` below 1.
        """
        offset, limit = page_bounds(page, page_size)
        counted = sa.select(sa.func.count()).select_from(query.order_by(None).subquery())
        with self._read() as conn:
            total = conn.scalar(counted) or 0
            rows = conn.execute(query.offset(offset).limit(limit)).all()
        items = tuple(convert(row._mapping) for row in rows)
        return Page(items=items, page=page, page_size=page_size, total=total)

    def _require_node(self, conn: sa.Connection, node_id: str) -> None:
        """NotFoundError unless ``node_id`` is registered."""
        if not self._known_nodes(conn, [node_id]):
            raise node_not_found(node_id)

    def _known_nodes(self, conn: sa.Connection, node_ids: Iterable[str]) -> set[str]:
        """Which of ``node_ids`` are registered."""
        wanted = sorted(set(node_ids))
        known: set[str] = set()
        if self._dialect == "sqlite":  # one parameter: no IN list to render each time
            if wanted:
                rows = prepare(_KNOWN_NODES_SQLITE).rows(conn, {"ids": json.dumps(wanted)})
                known.update(node_id for (node_id,) in rows)
            return known
        for part in chunks(wanted):
            known.update(conn.scalars(_KNOWN_NODES, {"ids": part}))
        return known

    @contextlib.contextmanager
    def maintenance_lock(self, name: str = "maintenance") -> Iterator[bool]:
        """Whether this Manager should run once-only maintenance now (retention, ...).

        On PostgreSQL: a session advisory lock, tried without waiting and released when the
        block ends (or when this process dies). On SQLite (one Manager per file): True.

        Args:
            name: Which maintenance; different names are different locks.

        Yields:
            True when this Manager holds the lock for the block.

        Raises:
            StoreError: The database could not be asked.
        """
        if self._dialect != "postgresql":
            yield True
            return
        key = MAINTENANCE_LOCK if name == "maintenance" else _lock_key(name)
        with translated(), self._engine.connect() as conn:
            got = bool(conn.scalar(sa.select(sa.func.pg_try_advisory_lock(key))))
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                    conn.commit()


def _lock_key(name: str) -> int:
    """A stable 63-bit advisory lock key for ``name``."""
    value = 0x68760000
    for char in name.encode():
        value = (value * 131 + char) % (1 << 62)
    return value


def node_not_found(node_id: str) -> NotFoundError:
    """The error for an unknown node id (the message the gRPC and REST layers show)."""
    return NotFoundError(f"node {node_id} is not registered")


_TIMES = frozenset(
    {
        "at",
        "created_at",
        "expires_at",
        "last_heartbeat",
        "last_login_at",
        "last_seen_at",
        "last_sync_time",
        "last_used_at",
        "register_at",
        "revoked_at",
        "updated_at",
    }
)
"""Columns of unix seconds (SQLite's ``RETURNING`` may give a whole REAL as an int)."""


_FIELDS: dict[type[Any], tuple[str, ...]] = {}


def record(cls: type[R], row: Mapping[Any, Any], **given: Any) -> R:
    """A record (a dataclass of ``_model``) from a row: each field from its column.

    Args:
        cls: The record class.
        row: The row's mapping.
        **given: Fields computed by the caller (enums, read-only mappings, ...).

    Returns:
        The record; times are floats, fields without a column take their defaults.
    """
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(field.name for field in dataclasses.fields(cls))  # type: ignore[arg-type]
    values = dict(given)
    for name in names:
        if name not in values and name in row:
            value = row[name]
            values[name] = float(value) if name in _TIMES and value is not None else value
    return cls(**values)


def page_bounds(page: int, page_size: int) -> tuple[int, int]:
    """``(offset, limit)`` of a page counted from 1.

    Raises:
        ValueError: ``page`` or ``page_size`` below 1.
    """
    if page < 1 or page_size < 1:
        raise ValueError(f"page and page_size start at 1; got {page}, {page_size}")
    return (page - 1) * page_size, page_size
