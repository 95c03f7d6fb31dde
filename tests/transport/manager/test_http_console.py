"""The console's dashboard and node search through a real HTTP server on a real SQLite
store: the numbers agree with the store at 1,000 nodes, in a bounded number of queries."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.transport.manager.console_helpers import console
from tests.transport.manager.fleet_helpers import register
from tests.transport.manager.http_helpers import envelope, error_of
from transport import AgentStateRecord, AgentStatus, MetricPoint
from transport.manager._alerts import Kind, Severity, Thresholds, critical_level
from transport.manager._model import Role
from transport.manager._store import Store

STATUSES = [AgentStatus.RUNNING, AgentStatus.FAILED, AgentStatus.STOPPED, AgentStatus.RESTARTING]


@contextmanager
def counting(store: Store) -> Iterator[list[str]]:
    """The SQL statements the store runs in the block."""
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", count)


def seed(store: Store, count: int, rng: random.Random) -> dict[str, Any]:
    """``count`` nodes (a tenth of them silent for an hour) with cpu, memory and disk
    readings and, on every fifth node, two agents; what was seeded."""
    now = time.time()
    usage: dict[str, dict[str, float]] = {}
    offline: set[str] = set()
    agents: dict[tuple[str, str], str] = {}
    reports = []
    for i in range(count):
        node_id = f"node-{i:04}"
        silent = i % 10 == 9
        register(store, node_id, now=now - 3600 if silent else now, hostname=f"h{i}")
        if silent:
            offline.add(node_id)
        values = {kind: round(rng.uniform(0, 100), 2) for kind in ("cpu", "memory", "disk")}
        usage[node_id] = values
        stamp = int(now) - 10
        reports.append(
            (
                node_id,
                [MetricPoint(k, stamp, {"usage_percent": v}) for k, v in values.items()],
            )
        )
    store.report_metrics_batch(reports, now=now)
    for i in range(0, count, 5):
        node_id = f"node-{i:04}"
        states = []
        for name in ("a", "b"):
            status = rng.choice(STATUSES)
            agents[(node_id, name)] = status.value
            states.append(AgentStateRecord(agent_id=name, status=status, pid=0))
        store.sync_agent_states(node_id, states, now=now)
    return {"usage": usage, "offline": offline, "agents": agents}


def expected_top(seeded: dict[str, Any], kind: str) -> list[tuple[str, float]]:
    online = [(n, v[kind]) for n, v in seeded["usage"].items() if n not in seeded["offline"]]
    online.sort(key=lambda item: (-item[1], item[0]))
    return online[:10]


async def test_dashboard_matches_the_store_at_1000_nodes(tmp_path: Path, sock_dir: Path) -> None:
    """Node and agent counts, the top CPU and memory users and every alert agree with what
    was stored; the request runs the same small number of statements at 1,000 nodes as at
    10 (aggregated in SQL, no per-node loop)."""
    thresholds = Thresholds(cpu_percent=90, memory_percent=80, disk_percent=95)
    async with console(tmp_path, sock_dir, thresholds=thresholds) as w:
        viewer = w.auth(Role.VIEWER)
        rng = random.Random(14)
        await w.db(seed, w.store, 10, rng)
        envelope(await w.client.get("/api/v1/dashboard", headers=viewer))  # the token's first use
        with counting(w.store) as few:
            envelope(await w.client.get("/api/v1/dashboard", headers=viewer))
        # Grow to 1,000 nodes (the first ten are re-registered with new readings).
        seeded = await w.db(seed, w.store, 1000, rng)
        with counting(w.store) as many:
            data = envelope(await w.client.get("/api/v1/dashboard", headers=viewer))
        assert len(many) == len(few) <= 11, many

        assert data["nodes"] == {"total": 1000, "online": 900, "offline": 100}
        counts = await w.db(w.store.agent_counts)
        assert {k: v for k, v in data["agents"].items() if v} == counts
        for status in ("running", "failed", "restarting", "stopped", "starting", "stopping"):
            expected = sum(1 for s in seeded["agents"].values() if s == status)
            assert data["agents"][status] == expected, status

        for kind in ("cpu", "memory"):
            top = [(e["node_id"], e["value"]) for e in data[f"top_{kind}"]]
            assert top == expected_top(seeded, kind)
            assert all(e["hostname"] == f"h{int(e['node_id'][5:])}" for e in data[f"top_{kind}"])

        alerts = data["alerts"]
        failed = {n for (n, _), s in seeded["agents"].items() if s == "failed"}
        wanted = {("offline", n, None) for n in seeded["offline"]}
        wanted |= {
            ("agent_failed", n, a) for (n, a), s in seeded["agents"].items() if s == "failed"
        }
        for node_id, values in seeded["usage"].items():
            if node_id in seeded["offline"]:
                continue
            for kind, value in values.items():
                if value >= thresholds.of(Kind(kind)):
                    wanted.add((kind, node_id, None))
        assert data["alerts_total"] == len(wanted)
        assert failed  # the seed has failed agents
        shown = {(a["kind"], a["node_id"], a["agent_id"]) for a in alerts}
        assert shown <= wanted
        assert {k for k, _, _ in shown} == {k for k, _, _ in wanted}
        for alert in alerts:
            if alert["kind"] in ("cpu", "memory", "disk"):
                stored = seeded["usage"][alert["node_id"]][alert["kind"]]
                assert alert["value"] == stored
                level = critical_level(alert["threshold"])
                assert alert["severity"] == (
                    Severity.CRITICAL if stored >= level else Severity.WARNING
                )
            else:
                assert alert["severity"] == "critical"
        ranks = [0 if a["severity"] == "critical" else 1 for a in alerts]
        assert ranks == sorted(ranks)
        assert data["thresholds"] == {
            "cpu_percent": 90,
            "memory_percent": 80,
            "disk_percent": 95,
        }
        error_of(await w.client.get("/api/v1/dashboard"), 1002)


async def test_nodes_search(tmp_path: Path, sock_dir: Path) -> None:
    """``q`` finds nodes by hostname, node id or IP (case-insensitive substring), by label
    ``key=value`` or label key; wildcards are literal; paging counts the matches."""
    async with console(tmp_path, sock_dir) as w:
        viewer = w.auth(Role.VIEWER)

        def seed_nodes() -> None:
            register(w.store, "web-1", hostname="Frontend-A", labels={"env": "Prod"})
            register(w.store, "web-2", hostname="frontend-b", labels={"env": "dev"})
            register(w.store, "db_1", hostname="database", ip="10.0.0.7", labels={"tier": "db"})
            for i in range(25):
                register(w.store, f"bulk-{i:02}", hostname=f"bulk{i}", ip="192.168.1.1")

        await w.db(seed_nodes)

        async def search(q: str, extra: str = "") -> tuple[list[str], int]:
            response = await w.client.get(
                "/api/v1/nodes",
                params={"q": q, **dict([extra.split("=")] if extra else [])},
                headers=viewer,
            )
            data = envelope(response)
            return [n["node_id"] for n in data["list"]], data["page_info"]["total"]

        assert await search("FRONTEND") == (["web-1", "web-2"], 2)
        assert await search("web-2") == (["web-2"], 1)
        assert await search("10.0.0") == (["db_1"], 1)
        assert await search("env=prod") == (["web-1"], 1)
        assert await search("env") == (["web-1", "web-2"], 2)
        assert await search("tier=db") == (["db_1"], 1)
        assert await search("b_1") == (["db_1"], 1)
        assert await search("b%1") == ([], 0)
        assert await search("_") == (["db_1"], 1)
        found, total = await search("bulk")
        assert total == 25 and len(found) == 20
        assert await search("bulk", "page=2") == ([f"bulk-{i}" for i in range(20, 25)], 25)
        assert await search("  ") == (await search(""))
        message = error_of(
            await w.client.get("/api/v1/nodes", params={"q": "x" * 201}, headers=viewer), 1001
        )
        assert message.startswith("q:")


def test_dashboard_and_search_on_both_databases(store: Store) -> None:
    """The JSON extraction, thresholds, top lists, candidates and label search behave the
    same on SQLite and PostgreSQL."""
    now = time.time()
    for node_id, labels, cpu in (("a", {"env": "Prod"}, 97.5), ("b", {}, 50.0), ("c", {}, 91)):
        register(store, node_id, now=now, labels=labels)
        point = MetricPoint("cpu", int(now), {"usage_percent": cpu, "other": 1.0})
        store.report_metrics(node_id, [point], now=now)
    register(store, "gone", now=now - 3600)
    store.report_metrics("gone", [MetricPoint("cpu", int(now), {"usage_percent": 99})], now=now)
    failed = AgentStateRecord(agent_id="x", status=AgentStatus.FAILED, pid=0)
    store.sync_agent_states("b", [failed], now=now)
    data = store.dashboard(Thresholds(), online_since=now - 60, limit=10)
    assert data.nodes == {"total": 4, "online": 3, "offline": 1}
    assert [(t.node_id, t.value) for t in data.top_cpu] == [("a", 97.5), ("c", 91.0), ("b", 50.0)]
    assert data.top_memory == []
    assert [(r.node_id, r.kind.value, r.value) for r in data.readings] == [
        ("a", "cpu", 97.5),
        ("c", "cpu", 91.0),
    ]
    assert [(o.node_id, o.last_seen) for o in data.offline] == [("gone", now - 3600)]
    assert [(f.node_id, f.agent_id) for f in data.failed] == [("b", "x")]
    assert data.candidates == 4 and data.agents["failed"] == 1
    short = store.dashboard(Thresholds(), online_since=now - 60, top=1, limit=1)
    assert len(short.top_cpu) == len(short.readings) == 1 and short.candidates == 4

    def search(text: str) -> list[str]:
        return [n.node_id for n in store.list_nodes(page=1, page_size=10, search=text).items]

    assert search("env=PROD") == ["a"]
    assert search("env") == ["a"]
    assert search("HOST-") == ["a", "b", "c", "gone"]
    assert search('we"ird=1') == [] and search("it's") == []
