"""The metrics routes through a real HTTP server on a real SQLite store seeded through the
store: latest, history (raw and downsampled, every value key kept), summary, the cluster
overview the console's dashboard reads, and the parameter rules."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.transport.manager.fleet_helpers import fleet, register, seed_metrics
from tests.transport.manager.http_helpers import envelope, error_of, is_rfc3339
from transport.manager._http._json import rfc3339
from transport.manager._model import Role

METRIC_KEYS = {"id", "created_at", "node_id", "type", "timestamp", "values"}
GIB = 1024**3


def _aligned_now() -> int:
    """Now, rounded down to a whole 2 hours (so buckets of every size start on it)."""
    return int(time.time()) // 7200 * 7200


def _span(start: int, end: int) -> str:
    return f"start_time={rfc3339(start)}&end_time={rfc3339(end)}"


async def test_latest(tmp_path: Path, sock_dir: Path) -> None:
    """Each type the latest Metrics row or null; values hold numbers under the keys the
    console reads."""
    async with fleet(tmp_path, sock_dir) as w:
        now = int(time.time())
        await w.db(register, w.store, "n1")
        await w.db(
            seed_metrics,
            w.store,
            "n1",
            "cpu",
            [
                (now - 120, {"usage_percent": 10.0, "cores": 4}),
                (now - 60, {"usage_percent": 20.5, "cores": 4}),
            ],
        )
        memory = {"usage_percent": 50.0, "used_bytes": 2 * GIB, "total_bytes": 4 * GIB}
        await w.db(seed_metrics, w.store, "n1", "memory", [(now - 60, memory)])
        data = envelope(
            await w.client.get("/api/v1/metrics/nodes/n1/latest", headers=w.auth(Role.VIEWER))
        )
        assert set(data) == {"cpu", "memory", "disk", "network"}
        assert data["disk"] is None and data["network"] is None
        cpu = data["cpu"]
        assert set(cpu) == METRIC_KEYS
        assert (cpu["node_id"], cpu["type"], cpu["timestamp"]) == ("n1", "cpu", rfc3339(now - 60))
        assert cpu["values"] == {"usage_percent": 20.5, "cores": 4.0}
        assert isinstance(cpu["id"], int) and is_rfc3339(cpu["created_at"])
        assert data["memory"]["values"] == memory
        error_of(
            await w.client.get("/api/v1/metrics/nodes/zz/latest", headers=w.auth(Role.VIEWER)),
            2001,
        )


async def test_history_raw_and_downsampled(tmp_path: Path, sock_dir: Path) -> None:
    """Up to an hour: the raw rows; beyond: buckets (5 min up to a day) averaging every
    value, so network keeps rx_bytes and tx_bytes (the original keeps usage_percent only)."""
    async with fleet(tmp_path, sock_dir) as w:
        end = _aligned_now()
        start = end - 3 * 3600
        await w.db(register, w.store, "n1")
        samples = [
            (
                ts,
                {
                    "rx_bytes": float(ts - start),
                    "tx_bytes": 2.0 * (ts - start),
                    "interval_seconds": 60,
                },
            )
            for ts in range(start, end, 60)
        ]
        await w.db(seed_metrics, w.store, "n1", "network", samples)
        viewer = w.auth(Role.VIEWER)
        url = "/api/v1/metrics/nodes/n1/network/history"

        raw = envelope(await w.client.get(f"{url}?{_span(end - 1800, end)}", headers=viewer))
        assert [row["timestamp"] for row in raw] == [
            rfc3339(ts) for ts in range(end - 1800, end, 60)
        ]
        assert all(set(row) == METRIC_KEYS for row in raw)
        assert raw[0]["values"] == {
            "rx_bytes": 9000.0,
            "tx_bytes": 18000.0,
            "interval_seconds": 60.0,
        }

        buckets = envelope(await w.client.get(f"{url}?{_span(start, end)}", headers=viewer))
        assert len(buckets) == 36  # 3 h of 5-minute buckets
        first = buckets[0]
        assert first["timestamp"] == rfc3339(start)
        # The bucket averages its five samples, offsets 0, 60, ... 240 s.
        assert first["values"]["rx_bytes"] == 120.0
        assert first["values"]["tx_bytes"] == 240.0
        assert all({"rx_bytes", "tx_bytes"} <= set(b["values"]) for b in buckets)
        assert all(isinstance(v, float) for b in buckets for v in b["values"].values())


async def test_history_parameters(tmp_path: Path, sock_dir: Path) -> None:
    """The type must be one of the four, both times RFC 3339, end after start, a span of
    at most 30 days: else 1001 naming the parameter; an unknown node 2001."""
    async with fleet(tmp_path, sock_dir) as w:
        await w.db(register, w.store, "n1")
        viewer = w.auth(Role.VIEWER)
        end = _aligned_now()
        base = "/api/v1/metrics/nodes/n1"
        stop = f"end_time={rfc3339(end)}"
        cases: dict[str, str] = {
            f"{base}/gpu/history?{_span(end - 60, end)}": "type:",
            f"{base}/cpu/history?{stop}": "start_time:",
            f"{base}/cpu/history?start_time={rfc3339(end)}": "end_time:",
            f"{base}/cpu/history?start_time=yesterday&{stop}": "start_time:",
            f"{base}/cpu/history?start_time=2026-01-01T00:00:00&{stop}": "start_time:",
            f"{base}/cpu/history?{_span(end, end - 60)}": "end_time:",
            f"{base}/cpu/history?{_span(end - 31 * 86400, end)}": "end_time:",
            f"{base}/summary?{_span(end - 31 * 86400, end)}": "end_time:",
            f"{base}/summary?start_time=x": "start_time:",
        }
        for url, name in cases.items():
            message = error_of(await w.client.get(url, headers=viewer), 1001)
            assert message.startswith(name), (url, message)
        ok_url = f"{base}/cpu/history?{_span(end - 30 * 86400, end)}"
        assert envelope(await w.client.get(ok_url, headers=viewer)) == []
        missing = f"/api/v1/metrics/nodes/zz/cpu/history?{_span(end - 60, end)}"
        error_of(await w.client.get(missing, headers=viewer), 2001)
        error_of(await w.client.get("/api/v1/metrics/nodes/zz/summary", headers=viewer), 2001)
        error_of(await w.client.get(f"{base}/latest"), 1002)


async def test_summary(tmp_path: Path, sock_dir: Path) -> None:
    """Per type {min, max, avg, latest} of usage_percent over the last 24 h by default (or
    the range asked); null for a type without data."""
    async with fleet(tmp_path, sock_dir) as w:
        now = int(time.time())
        await w.db(register, w.store, "n1")
        await w.db(
            seed_metrics,
            w.store,
            "n1",
            "cpu",
            [(now - 3000, {"usage_percent": 10.0}), (now - 2000, {"usage_percent": 30.0}),
             (now - 1000, {"usage_percent": 20.0}), (now - 2 * 86400, {"usage_percent": 99.0})],
        )  # fmt: skip
        viewer = w.auth(Role.VIEWER)
        data = envelope(await w.client.get("/api/v1/metrics/nodes/n1/summary", headers=viewer))
        assert set(data) == {"cpu", "memory", "disk", "network"}
        assert data["cpu"] == {"min": 10.0, "max": 30.0, "avg": 20.0, "latest": 20.0}
        assert data["memory"] is None and data["network"] is None
        older = f"/api/v1/metrics/nodes/n1/summary?{_span(now - 3 * 86400, now - 86400)}"
        data = envelope(await w.client.get(older, headers=viewer))
        assert data["cpu"] == {"min": 99.0, "max": 99.0, "avg": 99.0, "latest": 99.0}


async def test_cluster_overview(tmp_path: Path, sock_dir: Path) -> None:
    """What the dashboard reads: averages and totals over online nodes, counts, and each
    node's latest usage (0 where it reported none), as JSON numbers."""
    async with fleet(tmp_path, sock_dir) as w:
        now = int(time.time())
        for name in ("b", "a", "c"):
            await w.db(register, w.store, name, hostname=f"h-{name}")
        await w.db(w.store.mark_offline, cutoff=now + 1, now=now)
        for name in ("a", "b"):
            await w.db(register, w.store, name, hostname=f"h-{name}")
        for name, cpu, mem_total in (("a", 10.0, 8 * GIB), ("b", 30.0, 24 * GIB), ("c", 90.0, GIB)):
            await w.db(seed_metrics, w.store, name, "cpu", [(now - 60, {"usage_percent": cpu})])
            memory = {"usage_percent": cpu / 2, "total_bytes": mem_total}
            await w.db(seed_metrics, w.store, name, "memory", [(now - 60, memory)])
        disk = {"usage_percent": 40.0, "total_bytes": 100 * GIB}
        await w.db(seed_metrics, w.store, "a", "disk", [(now - 60, disk)])
        network = {"rx_bytes": 1000.0, "tx_bytes": 500.0}
        await w.db(seed_metrics, w.store, "b", "network", [(now - 60, network)])

        data = envelope(
            await w.client.get("/api/v1/metrics/cluster/overview", headers=w.auth(Role.VIEWER))
        )
        assert data["aggregate"] == {
            "avg_cpu": 20.0,
            "avg_memory": 10.0,
            "avg_disk": 20.0,
            "total_memory_gb": 32.0,
            "total_disk_gb": 100.0,
            "node_counts": {"total": 3, "online": 2, "offline": 1},
        }
        nodes: list[dict[str, Any]] = data["nodes"]
        assert [n["node_id"] for n in nodes] == ["a", "b", "c"]
        assert nodes[0] == {
            "node_id": "a",
            "hostname": "h-a",
            "ip": "127.0.0.1",
            "status": "online",
            "cpu_usage": 10.0,
            "memory_usage": 5.0,
            "disk_usage": 40.0,
            "network_rx": 0.0,
            "network_tx": 0.0,
        }
        assert (nodes[1]["network_rx"], nodes[1]["network_tx"]) == (1000.0, 500.0)
        assert (nodes[2]["status"], nodes[2]["cpu_usage"]) == ("offline", 90.0)
