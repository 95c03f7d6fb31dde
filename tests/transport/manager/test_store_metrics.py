"""The store's metrics on SQLite and PostgreSQL: ingest, latest, history, retention."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.transport.manager.test_store_nodes import registration
from transport import MetricPoint
from transport.manager._errors import NotFoundError
from transport.manager._store import Store

DAY = 86_400
T0 = 1_764_720_000  # 2025-12-03 00:00:00 UTC, a day boundary


def cpu(timestamp: int, usage: float, **more: float) -> MetricPoint:
    return MetricPoint("cpu", timestamp, {"usage_percent": usage, **more})


@pytest.fixture
def node(store: Store) -> str:
    store.register_node(registration("n1"), now=1.0, grpc_port=None)
    return "n1"


def test_report_stores_points_and_ignores_duplicates(store: Store, node: str) -> None:
    points = [cpu(T0, 1.0, cores=4.0), MetricPoint("memory", T0, {"usage_percent": 50.0})]
    assert store.report_metrics(node, points, now=5.0) == 2
    assert store.report_metrics(node, [cpu(T0, 9.0), cpu(T0 + 60, 2.0)], now=6.0) == 1
    assert store.report_metrics(node, [], now=7.0) == 0
    rows = store.metric_rows(node, "cpu", start=T0, end=T0 + 60)
    assert [(r.timestamp, dict(r.values)) for r in rows] == [
        (T0, {"usage_percent": 1.0, "cores": 4.0}),
        (T0 + 60, {"usage_percent": 2.0}),
    ]
    assert rows[0].created_at == 5.0 and rows[0].node_id == node and rows[0].type == "cpu"
    assert rows[0].id != rows[1].id
    with pytest.raises(NotFoundError, match="node ghost is not registered"):
        store.report_metrics("ghost", [cpu(T0, 1.0)], now=5.0)


def test_batch_reports_per_item(store: Store, node: str) -> None:
    store.register_node(registration("n2"), now=1.0, grpc_port=None)
    counts = store.report_metrics_batch(
        [
            (node, [cpu(T0, 1.0), cpu(T0 + 60, 2.0)]),
            ("ghost", [cpu(T0, 1.0)]),
            ("n2", [cpu(T0, 3.0)]),
            (node, [cpu(T0 + 60, 5.0), cpu(T0 + 120, 6.0)]),  # one duplicate of item 0
        ],
        now=9.0,
    )
    assert counts == [2, None, 1, 1]
    assert store.report_metrics_batch([], now=9.0) == []
    assert [
        r.values["usage_percent"] for r in store.metric_rows(node, "cpu", start=0, end=T0 + DAY)
    ] == [
        1.0,
        2.0,
        6.0,
    ]


def test_latest_per_type_never_goes_back(store: Store, node: str) -> None:
    assert store.latest_metrics(node) == {
        "cpu": None,
        "memory": None,
        "disk": None,
        "network": None,
    }
    store.report_metrics(
        node,
        [
            cpu(T0 + 60, 2.0),
            cpu(T0, 1.0),
            MetricPoint("network", T0, {"rx_bytes": 10.0, "tx_bytes": 5.0}),
            MetricPoint("gpu", T0, {"usage_percent": 1.0}),
        ],
        now=1.0,
    )
    store.report_metrics(node, [cpu(T0 + 30, 9.0)], now=2.0)  # late, older
    latest = store.latest_metrics(node)
    assert set(latest) == {"cpu", "memory", "disk", "network"}
    assert latest["cpu"] is not None and latest["cpu"].timestamp == T0 + 60
    assert dict(latest["cpu"].values) == {"usage_percent": 2.0}
    rows = store.metric_rows(node, "cpu", start=T0 + 60, end=T0 + 60)
    assert latest["cpu"] == rows[0]  # the same row, id included
    assert latest["network"] is not None and latest["network"].values["rx_bytes"] == 10.0
    assert latest["memory"] is None
    store.report_metrics(node, [cpu(T0 + 120, 3.0)], now=3.0)
    newest = store.latest_metrics(node)["cpu"]
    assert newest is not None and newest.timestamp == T0 + 120
    with pytest.raises(NotFoundError):
        store.latest_metrics("ghost")


def test_metric_rows_window_and_type(store: Store, node: str) -> None:
    store.report_metrics(node, [cpu(T0 + i * 60, float(i)) for i in range(10)], now=1.0)
    store.report_metrics(node, [MetricPoint("disk", T0, {"usage_percent": 3.0})], now=1.0)
    rows = store.metric_rows(node, "cpu", start=T0 + 120, end=T0 + 240)
    assert [r.timestamp for r in rows] == [T0 + 120, T0 + 180, T0 + 240]
    assert store.metric_rows(node, "memory", start=0, end=T0 * 2) == []
    with pytest.raises(NotFoundError):
        store.metric_rows("ghost", "cpu", start=0, end=1)


def test_cluster_overview(store: Store, node: str) -> None:
    assert [n.node_id for n, _ in store.cluster_overview()] == ["n1"]
    store.register_node(registration("n2"), now=1.0, grpc_port=None)
    store.report_metrics(
        node, [cpu(T0, 1.0), MetricPoint("disk", T0, {"usage_percent": 7.0})], now=1.0
    )
    overview = store.cluster_overview()
    assert [n.node_id for n, _ in overview] == ["n1", "n2"]
    first, second = overview[0][1], overview[1][1]
    assert first["cpu"] is not None and first["cpu"].values["usage_percent"] == 1.0
    assert first["disk"] is not None and first["memory"] is None
    assert second == {"cpu": None, "memory": None, "disk": None, "network": None}


def test_purge_metrics(store: Store, node: str) -> None:
    store.ensure_partitions(T0, days_ahead=2)  # PostgreSQL: days T0-1 .. T0+2
    points = [cpu(T0 - DAY + 3600 * h, float(h)) for h in range(0, 72, 6)]  # 3 days
    points.append(cpu(T0 - 40 * DAY, 1.0))  # far back: the default partition on PostgreSQL
    store.report_metrics(node, points, now=1.0)
    with pytest.raises(ValueError, match="batch"):
        store.purge_metrics(before=T0, batch=0)
    assert store.purge_metrics(before=T0 - 39 * DAY, batch=1) >= 1
    remaining = store.metric_rows(node, "cpu", start=0, end=T0 * 2)
    assert len(remaining) == 12 and remaining[0].timestamp == T0 - DAY
    store.purge_metrics(before=T0, batch=2)  # the whole first day
    remaining = store.metric_rows(node, "cpu", start=0, end=T0 * 2)
    assert [r.timestamp for r in remaining] == [p.timestamp for p in points[4:12]]
    assert store.purge_metrics(before=T0, batch=2) == 0
    # The latest values outlive the history they came from.
    assert store.latest_metrics(node)["cpu"] is not None


def test_purge_within_a_day(store: Store, node: str) -> None:
    store.ensure_partitions(T0, days_ahead=1)
    store.report_metrics(node, [cpu(T0 + i, float(i)) for i in range(25)], now=1.0)
    removed = store.purge_metrics(before=T0 + 12, batch=5)
    first = store.metric_rows(node, "cpu", start=0, end=T0 * 2)[0].timestamp
    if store.dialect == "sqlite":  # row by row
        assert (removed, first) == (12, T0 + 12)
    else:  # whole days only: this one has not expired yet
        assert (removed, first) == (0, T0)


def partitions(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'metrics'::regclass ORDER BY 1"
            )
        )
        return [name for (name,) in rows]


def test_postgres_partitions(store: Store, node: str) -> None:
    if store.dialect != "postgresql":
        assert store.ensure_partitions(T0) == 0
        return
    # Rows that arrive before their day's partition exists go to the default partition...
    store.report_metrics(node, [cpu(T0 + 10 * DAY + 5, 1.0), cpu(T0 + 11 * DAY, 2.0)], now=1.0)
    assert store.ensure_partitions(T0 + 10 * DAY, days_ahead=0) == 2  # days 9 and 10
    assert store.ensure_partitions(T0 + 10 * DAY, days_ahead=0) == 0
    assert "metrics_p20251213" in partitions(store)
    # ... and move into it when it is created.
    with store.engine.connect() as conn:
        moved = conn.scalar(sa.text("SELECT count(*) FROM metrics_p20251213"))
        left = conn.scalar(sa.text("SELECT count(*) FROM metrics_default"))
    assert (moved, left) == (1, 1)
    assert len(store.metric_rows(node, "cpu", start=0, end=T0 * 2)) == 2
    # Whole days are dropped when they have wholly expired.
    store.purge_metrics(before=T0 + 10 * DAY + 10)
    assert "metrics_p20251213" in partitions(store)
    store.purge_metrics(before=T0 + 11 * DAY)
    assert "metrics_p20251213" not in partitions(store)
    assert [r.timestamp for r in store.metric_rows(node, "cpu", start=0, end=T0 * 2)] == [
        T0 + 11 * DAY
    ]


def test_two_managers_create_partitions_once(store_url: str, store: Store) -> None:
    from tests.transport.manager.test_store_nodes import together

    other = Store.open(store_url)
    try:
        created = together(2, lambda i: (store, other)[i].ensure_partitions(T0 + 100 * DAY, 5))
    finally:
        other.close()
    if store.dialect == "postgresql":
        assert sorted(created) == [0, 7]
    else:
        assert created == [0, 0]


def test_two_managers_ingest_overlapping_batches(store_url: str, store: Store) -> None:
    """Batches in different orders from two Managers: no deadlock, each row counted once."""
    import random

    from tests.transport.manager.test_store_nodes import together

    node_ids = [f"n{i:02d}" for i in range(20)]
    store.heartbeats([(n, 1.0) for n in node_ids])
    other = Store.open(store_url)
    try:

        def ingest(index: int) -> int:
            mine = (store, other)[index % 2]
            order = random.Random(index).sample(node_ids, len(node_ids))
            mine.heartbeats([(n, float(index)) for n in order])
            items = [(n, [cpu(T0 + k * 60, float(index)) for k in range(5)]) for n in order]
            return sum(count or 0 for count in mine.report_metrics_batch(items, now=1.0))

        counts = together(16, ingest)
    finally:
        other.close()
    assert sum(counts) == len(node_ids) * 5
    for node_id in node_ids:
        assert len(store.metric_rows(node_id, "cpu", start=0, end=T0 * 2)) == 5
        latest = store.latest_metrics(node_id)["cpu"]
        assert latest is not None and latest.timestamp == T0 + 4 * 60


def test_a_batch_writes_heartbeats_and_reports_in_one_transaction(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node a heartbeat of the batch creates is known to the batch's reports; a batch
    that fails stores nothing of either kind."""
    store.register_node(registration("known"), now=1.0, grpc_port=None)
    _, created, inserted, _ = store.write_batch(
        (),
        [("new", 5.0), ("known", 6.0)],
        [("new", [cpu(T0, 1.0)]), ("known", [cpu(T0, 2.0)]), ("ghost", [cpu(T0, 3.0)])],
        (),
        now=7.0,
    )
    assert created == [True, False]
    assert inserted == [1, 1, None]
    assert store.get_node("new").last_seen_at == 5.0
    assert store.write_batch((), [], [], (), now=8.0)[1:3] == ([], [])

    def broken(*args: object) -> list[object]:
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(store, "_insert_metrics", broken)
    with pytest.raises(RuntimeError, match="disk"):
        store.write_batch((), [("later", 9.0)], [("known", [cpu(T0 + 60, 1.0)])], (), now=9.0)
    with pytest.raises(NotFoundError):
        store.get_node("later")
