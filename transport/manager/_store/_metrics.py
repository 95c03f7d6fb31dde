"""Metrics: ingest, the latest values, raw history, retention.

Theory of operation: a report (or a group-committed batch of reports) is one transaction:
one ``SELECT`` finds which of its nodes are registered, one executemany
``INSERT .. ON CONFLICT (node_id, type, timestamp) DO NOTHING RETURNING`` stores every
new point (a duplicate of a stored point is ignored, and ``RETURNING`` tells which rows
were new, the same way on both databases), and one upsert moves ``metrics_latest`` forward
(``.. DO UPDATE .. WHERE metrics_latest.timestamp < excluded.timestamp``, so a late,
older point never replaces a newer one). Rows are written in key order, so two batches
that touch the same keys lock them in the same order and never deadlock. On PostgreSQL
the insert and the upsert are one statement fed by arrays (``unnest``), which costs the
Manager less than half the CPU of a multi-row ``VALUES`` (psycopg parses a statement of
thousands of placeholders on every call); on SQLite the insert reads the points from one
JSON array (``json_each``) and the upsert is the driver's executemany of plain tuples
(:func:`~._engine.prepare`), which spares SQLAlchemy's work per row.

The latest values and the cluster overview read ``metrics_latest`` (one row per node and
type) instead of searching the history. Downsampling is pure (``.._downsample``); this
module returns raw rows.

Retention: on SQLite, ``DELETE`` in batches of ``batch`` rows through the timestamp index,
each its own short transaction, so ingest waits at most for one batch. On PostgreSQL,
whole day partitions are dropped (``._partitions``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence, Set as AbstractSet
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from transport.manager._model import MetricRow, Node

from . import _partitions
from ._engine import (
    Prepared,
    StoreBase,
    chunks,
    insert,
    node_not_found,
    prepare,
    record,
    translated,
)
from ._nodes import node_from_row
from ._schema import metrics, metrics_latest, nodes

if TYPE_CHECKING:
    from transport import MetricPoint

__all__ = ["STANDARD_TYPES", "MetricsMixin"]

STANDARD_TYPES = ("cpu", "memory", "disk", "network")
"""The types the original daemon reports and the REST API names."""

_Key = tuple[str, str, int]


def _row(row: Mapping[Any, Any], id_column: str = "id") -> MetricRow:
    values = MappingProxyType(dict(row["values"]))
    return record(MetricRow, row, id=row[id_column], values=values)


def _by_type(rows: Sequence[MetricRow]) -> dict[str, MetricRow | None]:
    latest: dict[str, MetricRow | None] = dict.fromkeys(STANDARD_TYPES)
    for row in rows:
        latest[row.type] = row
    return latest


_LATEST_STANDARD = sa.select(metrics_latest).where(metrics_latest.c.type.in_(STANDARD_TYPES))


@functools.cache
def _move_latest(dialect: str) -> sa.Executable:
    """Upsert ``metrics_latest`` rows, never replacing a newer one."""
    stmt = insert(dialect, metrics_latest)
    return stmt.on_conflict_do_update(
        index_elements=[metrics_latest.c.node_id, metrics_latest.c.type],
        set_={
            name: stmt.excluded[name] for name in ("metric_id", "timestamp", "values", "created_at")
        },
        where=metrics_latest.c.timestamp < stmt.excluded.timestamp,
    )


_POSTGRES_INGEST = sa.text(
    """
    WITH new AS (
        INSERT INTO metrics (node_id, type, "timestamp", "values", created_at)
        SELECT n, t, s, CAST(v AS json), :now
        FROM unnest(
            CAST(:nodes AS varchar[]), CAST(:types AS varchar[]),
            CAST(:stamps AS bigint[]), CAST(:vals AS text[])
        ) AS p(n, t, s, v)
        ON CONFLICT (node_id, type, "timestamp") DO NOTHING
        RETURNING id, node_id, type, "timestamp", "values", created_at
    ), newest AS (
        SELECT DISTINCT ON (node_id, type) * FROM new
        ORDER BY node_id, type, "timestamp" DESC
    ), moved AS (
        INSERT INTO metrics_latest (node_id, type, metric_id, "timestamp", "values", created_at)
        SELECT node_id, type, id, "timestamp", "values", created_at FROM newest
        ORDER BY node_id, type
        ON CONFLICT (node_id, type) DO UPDATE SET
            metric_id = excluded.metric_id, "timestamp" = excluded."timestamp",
            "values" = excluded."values", created_at = excluded.created_at
        WHERE metrics_latest."timestamp" < excluded."timestamp"
    )
    SELECT node_id, type, "timestamp" FROM new
    """
)
"""PostgreSQL's ingest in one statement: the points as five arrays (one small statement,
parsed and planned once, whatever the batch's size), the new rows' keys returned, and
``metrics_latest`` moved in the same round trip by a data-modifying CTE."""


_SQLITE_INGEST = sa.text(
    """
    INSERT INTO metrics (node_id, type, "timestamp", "values", created_at)
    SELECT json_extract(p.value, '$[0]'), json_extract(p.value, '$[1]'),
           json_extract(p.value, '$[2]'), json_extract(p.value, '$[3]'), :now
    FROM json_each(:points) AS p
    WHERE true
    ON CONFLICT (node_id, type, "timestamp") DO NOTHING
    RETURNING id, node_id, type, "timestamp"
    """
)
"""SQLite's insert of new points: the points as one JSON array of ``[node_id, type,
timestamp, values as JSON text]`` (SQLite reads it in C; SQLAlchemy's executemany spends
tens of microseconds a row in Python), the new rows' keys and ids returned. The values'
text is stored as given (``json_extract`` of a string is the string), exactly as the
``JSON`` column type would have written it. (``WHERE true``: SQLite's grammar needs it
between ``SELECT .. FROM`` and ``ON CONFLICT``.)"""
_SQLITE_CHUNK = 2000
"""Points per statement on SQLite."""


@functools.cache
def _sqlite_latest() -> Prepared:
    """The ``metrics_latest`` upsert, prepared for SQLite's executemany."""
    columns = ("node_id", "type", "metric_id", "timestamp", "values", "created_at")
    return prepare(_move_latest("sqlite"), columns)


def _insert_postgres(
    conn: sa.Connection, owner: Mapping[_Key, tuple[int, MetricPoint]], now: float
) -> list[_Key]:
    keys = sorted(owner)
    params = {
        "nodes": [key[0] for key in keys],
        "types": [key[1] for key in keys],
        "stamps": [key[2] for key in keys],
        "vals": [json.dumps(dict(owner[key][1].values)) for key in keys],
        "now": now,
    }
    return [
        (row.node_id, row.type, row.timestamp) for row in conn.execute(_POSTGRES_INGEST, params)
    ]


class MetricsMixin(StoreBase):
    """The metric methods of :class:`~transport.manager._store.Store`."""

    def report_metrics(self, node_id: str, points: Sequence[MetricPoint], *, now: float) -> int:
        """Store a node's ReportMetrics.

        Args:
            node_id: The node.
            points: Its samples; one already stored (same node, type and timestamp), or
                named twice, is stored once.
            now: The time of the report (each row's ``created_at``).

        Returns:
            How many rows were new.

        Raises:
            NotFoundError: The node is not registered.
            StoreError: The database failed (nothing is stored).
        """
        (count,) = self.report_metrics_batch([(node_id, points)], now=now)
        if count is None:
            raise node_not_found(node_id)
        return count

    def report_metrics_batch(
        self, items: Sequence[tuple[str, Sequence[MetricPoint]]], *, now: float
    ) -> list[int | None]:
        """Many nodes' reports in one transaction (the gRPC ingest's group commit).

        Args:
            items: ``(node_id, points)`` per report.
            now: The time of the batch.

        Returns:
            Per item, how many of its rows were new, or None when its node is not
            registered (its points are not stored; the other items are).

        Raises:
            StoreError: The database failed (nothing of the batch is stored).
        """
        if not items:
            return []
        with self._write() as conn:
            return self._reports(conn, items, now)

    def _reports(
        self,
        conn: sa.Connection,
        items: Sequence[tuple[str, Sequence[MetricPoint]]],
        now: float,
        registered: AbstractSet[str] | None = None,
    ) -> list[int | None]:
        """Store reports in ``conn``'s transaction (see :meth:`report_metrics_batch`).
        ``registered``: the nodes known to exist, when the caller looked them up."""
        if registered is None:
            known: AbstractSet[str] = self._known_nodes(conn, (node_id for node_id, _ in items))
        else:
            known = registered
        owner: dict[_Key, tuple[int, MetricPoint]] = {}
        for index, (node_id, points) in enumerate(items):
            if node_id in known:
                for point in points:
                    owner.setdefault((node_id, point.type, point.timestamp), (index, point))
        counts: list[int | None] = [0 if n in known else None for n, _ in items]
        if owner:
            for key in self._insert_metrics(conn, owner, now):
                index = owner[key][0]
                counts[index] = (counts[index] or 0) + 1
        return counts

    def _insert_metrics(
        self, conn: sa.Connection, owner: Mapping[_Key, tuple[int, MetricPoint]], now: float
    ) -> list[_Key]:
        """Insert the points; return the keys of the new rows (and move the latest)."""
        if self._dialect == "postgresql":
            return _insert_postgres(conn, owner, now)
        keys = sorted(owner)
        texts = {key: json.dumps(dict(owner[key][1].values)) for key in keys}
        new: dict[_Key, int] = {}
        for part in chunks(keys, _SQLITE_CHUNK):
            points = json.dumps([[*key, texts[key]] for key in part])
            for id, node_id, kind, timestamp in prepare(_SQLITE_INGEST).rows(
                conn, {"points": points, "now": now}
            ):
                new[node_id, kind, timestamp] = id
        newest: dict[tuple[str, str], _Key] = {}
        for key in new:
            current = newest.get(key[:2])
            if current is None or current[2] < key[2]:
                newest[key[:2]] = key
        _sqlite_latest().executemany(
            conn,
            (
                {
                    "node_id": key[0],
                    "type": key[1],
                    "metric_id": new[key],
                    "timestamp": key[2],
                    "values": texts[key],
                    "created_at": now,
                }
                for key in sorted(newest.values())
            ),
        )
        return list(new)

    def latest_metrics(self, node_id: str) -> dict[str, MetricRow | None]:
        """A node's newest row of each standard type.

        Returns:
            ``{"cpu", "memory", "disk", "network"}`` each the newest row or None.

        Raises:
            NotFoundError: The node is not registered.
            StoreError: The database failed.
        """
        with self._read() as conn:
            self._require_node(conn, node_id)
            rows = conn.execute(
                sa.select(metrics_latest).where(
                    metrics_latest.c.node_id == node_id,
                    metrics_latest.c.type.in_(STANDARD_TYPES),
                )
            )
            return _by_type([_row(row._mapping, "metric_id") for row in rows])

    def metric_rows(self, node_id: str, type: str, *, start: int, end: int) -> list[MetricRow]:
        """A node's raw rows of one type with ``start <= timestamp <= end``, oldest first.

        Raises:
            NotFoundError: The node is not registered.
            StoreError: The database failed.
        """
        with self._read() as conn:
            self._require_node(conn, node_id)
            rows = conn.execute(
                sa.select(metrics)
                .where(
                    metrics.c.node_id == node_id,
                    metrics.c.type == type,
                    metrics.c.timestamp.between(start, end),
                )
                .order_by(metrics.c.timestamp)
            ).all()
        return [_row(row._mapping) for row in rows]

    def cluster_overview(self) -> list[tuple[Node, dict[str, MetricRow | None]]]:
        """Every node (by id) with its newest row of each standard type.

        Raises:
            StoreError: The database failed.
        """
        with self._read() as conn:
            found = conn.execute(sa.select(nodes).order_by(nodes.c.id)).all()
            rows = conn.execute(_LATEST_STANDARD).all()
        all_nodes = [node_from_row(row._mapping) for row in found]
        latest: dict[str, list[MetricRow]] = {}
        for row in rows:
            latest.setdefault(row.node_id, []).append(_row(row._mapping, "metric_id"))
        return [(node, _by_type(latest.get(node.node_id, []))) for node in all_nodes]

    def purge_metrics(self, *, before: int, batch: int = 5000) -> int:
        """Delete the metrics older than ``before`` without blocking ingest for long.

        SQLite: every row with ``timestamp < before``, ``batch`` rows per transaction.
        PostgreSQL: every day partition that ends at or before ``before`` is dropped
        (whole days only), and older rows of the default partition are deleted in batches.

        Args:
            before: Rows before this time (unix seconds) are expired.
            batch: Rows per delete transaction (at least 1).

        Returns:
            How many rows were removed (on PostgreSQL the dropped partitions count by the
            planner's estimate).

        Raises:
            ValueError: ``batch`` below 1.
            StoreError: The database failed (the batches done so far stay done).
        """
        if batch < 1:
            raise ValueError(f"batch must be at least 1; got {batch}")
        if self._dialect == "postgresql":
            with translated():
                return _partitions.drop_expired(self._engine, before=before, batch=batch)
        expired = sa.select(metrics.c.id).where(metrics.c.timestamp < before).limit(batch)
        removed = 0
        while True:
            with self._write() as conn:
                count = conn.execute(sa.delete(metrics).where(metrics.c.id.in_(expired))).rowcount
            removed += count
            if count < batch:
                return removed

    def ensure_partitions(self, now: float, days_ahead: int = 3) -> int:
        """Create the metric partitions up to ``days_ahead`` days after ``now``.

        PostgreSQL only (SQLite: nothing to do, 0). ``Store.open`` runs it; the retention
        job should run it daily.

        Args:
            now: The current time (unix seconds).
            days_ahead: Days after today to create partitions for.

        Returns:
            How many partitions were created.

        Raises:
            StoreError: The database failed.
        """
        if self._dialect != "postgresql":
            return 0
        with self._write() as conn:
            return _partitions.ensure_partitions(conn, now=now, days_ahead=days_ahead)
