"""PostgreSQL's metric partitions: one per UTC day, created ahead, dropped when expired.

Theory of operation: ``metrics`` is partitioned by range of ``timestamp`` (unix seconds).
Partition ``metrics_pYYYYMMDD`` holds ``[day, day + 86400)``; ``metrics_default`` holds any
row outside every day partition, so no insert ever fails (a daemon with a wrong clock, or
a Manager that was down when it should have created a day ahead). Both jobs run in a
transaction holding :data:`~._engine.PARTITION_LOCK`, so two Managers doing them at once
take turns and the second finds the work done.

* :func:`ensure_partitions` creates each missing day from yesterday to ``days_ahead``
  days on. If the default partition already holds rows of that day, a plain
  ``CREATE TABLE .. PARTITION OF`` would fail; so the day is created as a table of its
  own, those rows are moved into it, and it is attached (``ATTACH PARTITION`` scans only
  the small default partition, and does not block inserts into the others).
* :func:`drop_expired` drops each day partition that ends at or before ``before`` (whole
  days only: a day that ``before`` cuts stays until it has wholly expired), with a short
  ``lock_timeout`` so that a long query holding the parent never queues ingest behind the
  drop for long; then deletes the default partition's expired rows in batches.
"""

from __future__ import annotations

import datetime as dt
import re

import sqlalchemy as sa

from ._engine import PARTITION_LOCK

__all__ = ["DAY_S", "drop_expired", "ensure_partitions", "partition_name"]

DAY_S = 86_400
_NAME = re.compile(r"^metrics_p(\d{8})$")
_LOCK_TIMEOUT = "5s"


def partition_name(day_start: int) -> str:
    """The name of the partition of the UTC day starting at ``day_start``."""
    return "metrics_p" + dt.datetime.fromtimestamp(day_start, dt.UTC).strftime("%Y%m%d")


def _day_start(name: str) -> int | None:
    match = _NAME.match(name)
    if match is None:
        return None
    day = dt.datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=dt.UTC)
    return int(day.timestamp())


def _lock(conn: sa.Connection) -> None:
    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(PARTITION_LOCK)))


def _partitions(conn: sa.Connection) -> dict[str, float]:
    """The day partitions that exist, with PostgreSQL's estimate of their rows."""
    rows = conn.execute(
        sa.text(
            "SELECT c.relname, c.reltuples FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'metrics'::regclass"
        )
    )
    return {name: float(tuples) for name, tuples in rows if _NAME.match(name)}


def ensure_partitions(conn: sa.Connection, *, now: float, days_ahead: int) -> int:
    """Create the day partitions from yesterday to ``days_ahead`` days after ``now``.

    Args:
        conn: A connection in a transaction (committed by the caller).
        now: The current time (unix seconds).
        days_ahead: How many days after today to create.

    Returns:
        How many partitions were created.
    """
    _lock(conn)
    existing = _partitions(conn)
    today = int(now) // DAY_S * DAY_S
    created = 0
    for offset in range(-1, days_ahead + 1):
        start = today + offset * DAY_S
        name = partition_name(start)
        if name in existing:
            continue
        bounds = {"lo": start, "hi": start + DAY_S}
        conn.execute(sa.text(f"CREATE TABLE {name} (LIKE metrics INCLUDING DEFAULTS)"))
        conn.execute(
            sa.text(
                "WITH moved AS (DELETE FROM metrics_default"
                ' WHERE "timestamp" >= :lo AND "timestamp" < :hi RETURNING *)'
                f" INSERT INTO {name} SELECT * FROM moved"
            ),
            bounds,
        )
        conn.execute(
            sa.text(
                f"ALTER TABLE metrics ATTACH PARTITION {name} FOR VALUES FROM ({start}) TO"
                f" ({start + DAY_S})"
            )
        )
        created += 1
    return created


def drop_expired(engine: sa.Engine, *, before: int, batch: int) -> int:
    """Drop the day partitions wholly before ``before``; delete older default rows.

    Each partition is dropped in its own short transaction, and the default partition is
    emptied of old rows ``batch`` at a time.

    Args:
        engine: The store's engine.
        before: Rows with a timestamp before this are expired.
        batch: Rows deleted per transaction from the default partition.

    Returns:
        The rows removed: PostgreSQL's estimate for dropped partitions (``reltuples``),
        the exact count for deleted rows.
    """
    removed = 0
    with engine.connect() as conn:
        expired = [
            (name, tuples)
            for name, tuples in _partitions(conn).items()
            if (_day_start(name) or 0) + DAY_S <= before
        ]
        conn.rollback()
    for name, tuples in sorted(expired):
        with engine.begin() as conn:
            _lock(conn)
            conn.execute(sa.text(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'"))
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        removed += max(int(tuples), 0)
    delete = sa.text(
        "DELETE FROM metrics_default WHERE ctid IN (SELECT ctid FROM metrics_default"
        ' WHERE "timestamp" < :before LIMIT :batch)'
    )
    while True:
        with engine.begin() as conn:
            count = conn.execute(delete, {"before": before, "batch": batch}).rowcount
        removed += count
        if count < batch:
            return removed
