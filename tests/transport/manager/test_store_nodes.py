"""The store's nodes on SQLite and PostgreSQL: registration, heartbeats, offline, listing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import pytest

from transport import MetricPoint, NodeRegistration
from transport.manager._errors import NotFoundError, StoreError
from transport.manager._model import NodeStatus
from transport.manager._store import UNKNOWN, Store

T = TypeVar("T")


def registration(node_id: str, os: str = "", arch: str = "", version: str = "") -> NodeRegistration:
    return NodeRegistration(
        node_id, hostname=f"host-{node_id}", ip="10.0.0.1", os=os, arch=arch, daemon_version=version
    )


def together(count: int, work: Callable[[int], T]) -> list[T]:
    """Run ``work(i)`` in ``count`` threads released at once; return results by index."""
    barrier = threading.Barrier(count)
    results: list[T | None] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]


def test_register_creates_then_updates_keeping_created_at(store: Store) -> None:
    first = store.register_node(
        registration("n1", os="linux", arch="amd64", version="1.0"),
        now=100.0,
        grpc_port=9191,
    )
    assert (first.node_id, first.hostname, first.os, first.arch) == (
        "n1",
        "host-n1",
        "linux",
        "amd64",
    )
    assert first.status is NodeStatus.ONLINE and first.grpc_port == 9191
    assert first.created_at == first.register_at == first.last_seen_at == 100.0
    store.mark_offline(cutoff=150.0, now=150.0)
    again = store.register_node(
        NodeRegistration("n1", hostname="renamed", labels={"zone": "a"}), now=200.0, grpc_port=None
    )
    assert again.id == first.id and again.created_at == 100.0
    assert again.hostname == "renamed" and dict(again.labels) == {"zone": "a"}
    assert again.status is NodeStatus.ONLINE and again.grpc_port is None
    assert again.register_at == again.last_seen_at == again.updated_at == 200.0
    assert store.get_node("n1") == again == store.get_node_by_id(first.id)


def test_overlapping_registrations_all_succeed(store: Store) -> None:
    nodes = together(
        16, lambda i: store.register_node(registration("same"), now=float(i), grpc_port=i)
    )
    assert len({node.id for node in nodes}) == 1
    assert store.node_counts() == {"total": 1, "online": 1, "offline": 0}


def test_heartbeat_of_known_and_unknown_nodes(store: Store) -> None:
    store.register_node(registration("known"), now=10.0, grpc_port=None)
    assert store.heartbeat("known", now=20.0)
    assert not store.heartbeat("stranger", now=20.0)
    with pytest.raises(NotFoundError, match="stranger"):
        store.get_node("stranger")
    assert store.get_node("known").last_seen_at == 20.0
    node, created = store.heartbeat_or_create("stranger", now=30.0)
    assert created and node.node_id == "stranger" and node.status is NodeStatus.ONLINE
    assert (node.hostname, node.ip, node.os, node.arch) == (UNKNOWN,) * 4
    assert node.register_at is None and node.last_seen_at == 30.0
    node, created = store.heartbeat_or_create("stranger", now=40.0)
    assert not created and node.last_seen_at == 40.0


def test_heartbeats_batch(store: Store) -> None:
    store.register_node(registration("a"), now=1.0, grpc_port=None)
    assert store.heartbeats([]) == []
    created = store.heartbeats([("a", 5.0), ("b", 6.0), ("a", 4.0), ("b", 9.0), ("c", 7.0)])
    assert created == [False, True, False, True, True]
    assert store.get_node("a").last_seen_at == 5.0  # the later of the batch
    assert store.get_node("b").last_seen_at == 9.0
    assert store.heartbeats([("b", 10.0), ("c", 10.0)]) == [False, False]
    assert store.node_counts() == {"total": 3, "online": 3, "offline": 0}


def test_mark_offline_once(store: Store) -> None:
    for index in range(4):
        store.register_node(registration(f"n{index}"), now=100.0 + index, grpc_port=None)
    assert store.mark_offline(cutoff=102.0, now=300.0) == ["n0", "n1"]
    assert store.mark_offline(cutoff=102.0, now=301.0) == []
    assert store.get_node("n0").status is NodeStatus.OFFLINE
    assert store.get_node("n0").updated_at == 300.0
    assert store.node_counts() == {"total": 4, "online": 2, "offline": 2}
    store.heartbeat("n0", now=400.0)
    assert store.get_node("n0").status is NodeStatus.ONLINE


def test_two_managers_mark_each_node_offline_exactly_once(store_url: str, store: Store) -> None:
    count = 2000
    store.heartbeats([(f"node-{i:05d}", float(i)) for i in range(count)])
    stores = [store, Store.open(store_url)]
    try:
        for round_ in range(3):

            def mark(i: int, now: float = 10_000.0 + round_) -> list[str]:
                return stores[i].mark_offline(cutoff=10_000.0, now=now)

            results = together(2, mark)
            assert set(results[0]).isdisjoint(results[1])
            assert sorted(results[0] + results[1]) == [f"node-{i:05d}" for i in range(count)]
            assert stores[round_ % 2].mark_offline(cutoff=10_000.0, now=10_000.0) == []
            store.heartbeats([(f"node-{i:05d}", 1.0) for i in range(count)])
    finally:
        stores[1].close()


def test_list_nodes_pages_by_id_and_filters_status(store: Store) -> None:
    for index in range(5):
        store.register_node(registration(f"n{index}"), now=float(index), grpc_port=None)
    store.mark_offline(cutoff=2.0, now=10.0)  # n0, n1
    page = store.list_nodes(page=1, page_size=2)
    assert [n.node_id for n in page.items] == ["n0", "n1"] and page.total == 5 and page.pages == 3
    page = store.list_nodes(page=3, page_size=2)
    assert [n.node_id for n in page.items] == ["n4"]
    assert store.list_nodes(page=4, page_size=2).items == ()
    online = store.list_nodes(page=1, page_size=10, status=NodeStatus.ONLINE)
    assert [n.node_id for n in online.items] == ["n2", "n3", "n4"] and online.total == 3
    offline = store.list_nodes(page=1, page_size=10, status=NodeStatus.OFFLINE)
    assert offline.total == 2
    with pytest.raises(ValueError, match="page"):
        store.list_nodes(page=0, page_size=10)


def test_node_counts_empty(store: Store) -> None:
    assert store.node_counts() == {"total": 0, "online": 0, "offline": 0}
    assert store.node_counts(online_since=5.0) == {"total": 0, "online": 0, "offline": 0}


def test_a_stale_online_node_counts_offline_before_the_offline_job_runs(store: Store) -> None:
    """Counts and status filters agree with the status the API shows (last seen too long
    ago means offline) without waiting for mark_offline."""
    for index in range(4):
        store.register_node(registration(f"n{index}"), now=float(index), grpc_port=None)
    store.mark_offline(cutoff=1.0, now=10.0)  # n0 stored offline; n1 stale but stored online
    assert store.node_counts() == {"total": 4, "online": 3, "offline": 1}
    assert store.node_counts(online_since=2.0) == {"total": 4, "online": 2, "offline": 2}
    online = store.list_nodes(page=1, page_size=10, status=NodeStatus.ONLINE, online_since=2.0)
    assert [n.node_id for n in online.items] == ["n2", "n3"] and online.total == 2
    offline = store.list_nodes(page=1, page_size=10, status=NodeStatus.OFFLINE, online_since=2.0)
    assert [n.node_id for n in offline.items] == ["n0", "n1"] and offline.total == 2


def test_delete_node_removes_agents_and_metrics(store: Store) -> None:
    from transport import AgentStateRecord

    keep = store.register_node(registration("keep"), now=1.0, grpc_port=None)
    gone = store.register_node(registration("gone"), now=1.0, grpc_port=None)
    for node in (keep, gone):
        store.sync_agent_states(node.node_id, [AgentStateRecord("a")], now=2.0)
        store.report_metrics(node.node_id, [MetricPoint("cpu", 5, {"usage_percent": 1.0})], now=3.0)
    assert store.delete_node(gone.id) == gone
    with pytest.raises(NotFoundError):
        store.get_node("gone")
    with pytest.raises(NotFoundError):
        store.delete_node(gone.id)
    with pytest.raises(NotFoundError):
        store.get_node_by_id(gone.id)
    # A node registered again under the same id starts empty.
    store.register_node(registration("gone"), now=9.0, grpc_port=None)
    assert store.list_agents("gone") == []
    assert store.metric_rows("gone", "cpu", start=0, end=10) == []
    assert store.latest_metrics("gone")["cpu"] is None
    assert len(store.list_agents("keep")) == 1
    assert len(store.metric_rows("keep", "cpu", start=0, end=10)) == 1


def test_store_error_wraps_the_driver_error(store_url: str, tmp_path: object) -> None:
    with pytest.raises(StoreError, match="unsupported database"):
        Store.open("mysql://nobody@localhost/x")
    with pytest.raises(StoreError, match="file"):
        Store.open("sqlite://")
    broken = Store.open(store_url, migrate=False)  # not migrated: no tables
    try:
        with pytest.raises(StoreError) as caught:
            broken.get_node("x")
        assert caught.value.__cause__ is not None
    finally:
        broken.close()


def test_mark_offline_skips_a_node_being_written(store: Store) -> None:
    import sqlalchemy as sa

    for node_id in ("busy", "idle"):
        store.register_node(registration(node_id), now=1.0, grpc_port=None)
    if store.dialect == "sqlite":  # one writer at a time: nothing to skip
        assert store.mark_offline(cutoff=5.0, now=6.0) == ["busy", "idle"]
        return
    with store.engine.begin() as conn:  # a heartbeat of "busy", not committed yet
        conn.execute(sa.text("UPDATE nodes SET updated_at = 2 WHERE node_id = 'busy'"))
        assert store.mark_offline(cutoff=5.0, now=6.0) == ["idle"]  # does not wait
    assert store.mark_offline(cutoff=5.0, now=7.0) == ["busy"]
