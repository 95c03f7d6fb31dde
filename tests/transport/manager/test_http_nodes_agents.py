"""The agent routes end to end: REST -> the Manager's daemon pool -> a real daemon gRPC
service over a real supervisor and real agents; its answers stored in a real SQLite
store. Errors: unknown node 2001, unknown agent 1004, bad input 1001, an unreachable
daemon 5004; every operate and sync audited."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from supervisor import AgentState, AgentType, HealthCheckSpec
from tests.supervisor.helpers import shell_agent, wait_for_file, wait_until
from tests.transport.manager.fleet_helpers import fleet, register
from tests.transport.manager.http_helpers import envelope, error_of, is_rfc3339
from transport.manager._http._envelope import ErrorCode
from transport.manager._model import Role

TICKER = 'i=0; while :; do i=$((i+1)); echo "line $i"; sleep 0.05; done'
SLEEPER = "exec sleep 1000"
AGENT_KEYS = {
    "id",
    "created_at",
    "updated_at",
    "node_id",
    "agent_id",
    "type",
    "version",
    "status",
    "config",
    "pid",
    "last_heartbeat",
    "last_sync_time",
}
POINT_KEYS = {
    "timestamp",
    "cpu",
    "memory_rss",
    "memory_vms",
    "disk_read_bytes",
    "disk_write_bytes",
    "open_files",
}


def agents(tmp: Path) -> list[object]:
    return [
        shell_agent("a1", SLEEPER, tmp, type=AgentType.FILEBEAT),
        # Sampled every 50 ms (resource samples are taken at each health check).
        shell_agent(
            "t", TICKER, tmp, health_check=HealthCheckSpec(interval_s=0.05, heartbeat_timeout_s=0)
        ),
    ]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_sync_then_list_agents(tmp_path: Path, sock_dir: Path) -> None:
    """POST .../agents/sync stores what the daemon's ListAgents says (synced_count);
    GET .../agents answers the original's Agent shape, field by field."""
    async with fleet(tmp_path, sock_dir, agents=agents(tmp_path)) as w:  # type: ignore[arg-type]
        assert w.served is not None
        sup = w.served.supervisor
        await sup.wait_state("a1", AgentState.RUNNING)
        await sup.wait_state("t", AgentState.RUNNING)
        before = envelope(
            await w.client.get("/api/v1/nodes/n1/agents", headers=w.auth(Role.VIEWER))
        )
        assert before == {"agents": [], "count": 0}

        synced = envelope(
            await w.client.post("/api/v1/nodes/n1/agents/sync", headers=w.auth(Role.OPERATOR))
        )
        assert synced == {"message": "agents synced", "synced_count": 2}
        data = envelope(await w.client.get("/api/v1/nodes/n1/agents", headers=w.auth(Role.VIEWER)))
        assert data["count"] == 2
        a1, t = data["agents"]
        assert set(a1) == AGENT_KEYS
        assert (a1["agent_id"], a1["node_id"], a1["type"], a1["status"]) == (
            "a1",
            "n1",
            "filebeat",
            "running",
        )
        assert a1["pid"] == sup.status("a1").pid and isinstance(a1["id"], int)
        assert a1["last_heartbeat"] is None and is_rfc3339(a1["last_sync_time"])
        assert (t["agent_id"], t["pid"]) == ("t", sup.status("t").pid)

        error_of(
            await w.client.post("/api/v1/nodes/n1/agents/sync", headers=w.auth(Role.VIEWER)),
            ErrorCode.FORBIDDEN,
        )
        assert await w.audit_actions() == [
            ("operator", "agents.sync", "node:n1", "ok"),
            ("viewer", "agents.sync", "node:n1", "denied"),
        ]


async def test_operate_agent(tmp_path: Path, sock_dir: Path) -> None:
    """stop, start and restart reach the agent and answer when done; the stored agents
    show the new state at once; bad operation 1001, unknown agent 1004, viewers 1003;
    all audited with their outcome."""
    async with fleet(tmp_path, sock_dir, agents=agents(tmp_path)) as w:  # type: ignore[arg-type]
        assert w.served is not None
        sup = w.served.supervisor
        await sup.wait_state("a1", AgentState.RUNNING)
        first = sup.status("a1").pid
        op = w.auth(Role.OPERATOR)
        url = "/api/v1/nodes/n1/agents/a1/operate"

        data = envelope(await w.client.post(url, json={"operation": "stop"}, headers=op))
        assert data == {"message": "stop of agent a1 done"}
        assert sup.status("a1").status is AgentState.STOPPED
        listed = envelope(await w.client.get("/api/v1/nodes/n1/agents", headers=op))
        assert {a["agent_id"]: a["status"] for a in listed["agents"]}["a1"] == "stopped"

        envelope(await w.client.post(url, json={"operation": "start"}, headers=op))
        await sup.wait_state("a1", AgentState.RUNNING)
        second = sup.status("a1").pid
        envelope(await w.client.post(url, json={"operation": "restart"}, headers=op))
        assert sup.status("a1").pid not in (0, first, second)

        message = error_of(await w.client.post(url, json={"operation": "kill"}, headers=op), 1001)
        assert message.startswith("operation:")
        error_of(await w.client.post(url, json={}, headers=op), 1001)
        error_of(await w.client.post(url, content=b"{", headers=op), 1001)
        nope = "/api/v1/nodes/n1/agents/nope/operate"
        message = error_of(await w.client.post(nope, json={"operation": "stop"}, headers=op), 1004)
        assert "nope" in message
        viewer = w.auth(Role.VIEWER)
        denied = await w.client.post(url, json={"operation": "stop"}, headers=viewer)
        error_of(denied, ErrorCode.FORBIDDEN)
        assert sup.status("a1").status is AgentState.RUNNING

        assert await w.audit_actions() == [
            ("operator", "agent.operate", "node:n1/agent:a1", "ok"),
            ("operator", "agent.operate", "node:n1/agent:a1", "ok"),
            ("operator", "agent.operate", "node:n1/agent:a1", "ok"),
            ("operator", "agent.operate", "node:n1/agent:a1", "error:1001"),
            ("operator", "agent.operate", "node:n1/agent:a1", "error:1001"),
            ("operator", "agent.operate", "node:n1/agent:a1", "error:1001"),
            ("operator", "agent.operate", "node:n1/agent:nope", "error:1004"),
            ("viewer", "agent.operate", "node:n1/agent:a1", "denied"),
        ]
        page = await w.db(w.store.list_audit, page=1, page_size=100)
        assert all(entry.source_ip == "127.0.0.1" for entry in page.items)
        assert {dict(e.detail).get("operation") for e in page.items} >= {"stop", "restart"}


async def test_logs_and_agent_metrics(tmp_path: Path, sock_dir: Path) -> None:
    """logs -> data.logs (the last `lines` lines, 1 to 1000, default 100); metrics ->
    {agent_id, data_points, count} with every field of every point, timestamps in unix
    seconds; parameters out of range are 1001 naming them."""
    async with fleet(tmp_path, sock_dir, agents=agents(tmp_path)) as w:  # type: ignore[arg-type]
        assert w.served is not None
        sup = w.served.supervisor
        await sup.wait_state("t", AgentState.RUNNING)
        await wait_for_file(Path(sup.status("t").log_file), "line 120")
        viewer = w.auth(Role.VIEWER)
        logs_url = "/api/v1/nodes/n1/agents/t/logs"

        three = envelope(await w.client.get(f"{logs_url}?lines=3", headers=viewer))
        assert set(three) == {"logs", "count"} and three["count"] == 3
        numbers = [int(line.split()[-1]) for line in three["logs"]]
        assert numbers == list(range(numbers[0], numbers[0] + 3))
        default = envelope(await w.client.get(logs_url, headers=viewer))
        assert default["count"] == 100 and all(isinstance(x, str) for x in default["logs"])
        for lines in ("0", "1001", "x"):
            message = error_of(
                await w.client.get(f"{logs_url}?lines={lines}", headers=viewer), 1001
            )
            assert message.startswith("lines:")
        error_of(await w.client.get("/api/v1/nodes/n1/agents/zz/logs", headers=viewer), 1004)

        metrics_url = "/api/v1/nodes/n1/agents/t/metrics"
        await wait_until(lambda: len(sup.metrics("t", 3600.0)) > 0)
        data = envelope(await w.client.get(metrics_url, headers=viewer))
        assert data["agent_id"] == "t" and data["count"] == len(data["data_points"])
        point = data["data_points"][0]
        assert set(point) == POINT_KEYS
        assert isinstance(point["timestamp"], int) and abs(point["timestamp"] - time.time()) < 600
        assert all(isinstance(point[k], int | float) for k in POINT_KEYS)
        assert point["memory_rss"] > 0
        for duration in ("0", "604801", "1.5"):
            response = await w.client.get(f"{metrics_url}?duration={duration}", headers=viewer)
            assert error_of(response, 1001).startswith("duration:")
        short = await w.client.get(f"{metrics_url}?duration=604800", headers=viewer)
        assert envelope(short)["agent_id"] == "t"
        error_of(await w.client.get("/api/v1/nodes/n1/agents/zz/metrics", headers=viewer), 1004)


async def test_unknown_node_is_2001_everywhere(tmp_path: Path, sock_dir: Path) -> None:
    """Every agent route of an unknown node answers 2001 (404), not the original's 500."""
    async with fleet(tmp_path, sock_dir) as w:
        op = w.auth(Role.OPERATOR)
        base = "/api/v1/nodes/ghost/agents"
        for response in (
            await w.client.get(base, headers=op),
            await w.client.post(f"{base}/sync", headers=op),
            await w.client.post(f"{base}/a1/operate", json={"operation": "stop"}, headers=op),
            await w.client.get(f"{base}/a1/logs", headers=op),
            await w.client.get(f"{base}/a1/metrics", headers=op),
        ):
            assert "ghost" in error_of(response, ErrorCode.NODE_NOT_FOUND)


async def test_unreachable_daemon_is_5004(tmp_path: Path, sock_dir: Path) -> None:
    """A node whose daemon does not answer: 5004 with the reason (HTTP 500), audited as
    such; the stored agents are left as they were."""
    async with fleet(tmp_path, sock_dir) as w:
        await w.db(register, w.store, "far", grpc_port=closed_port())
        op = w.auth(Role.OPERATOR)
        base = "/api/v1/nodes/far/agents"
        for response in (
            await w.client.post(f"{base}/sync", headers=op),
            await w.client.post(f"{base}/a1/operate", json={"operation": "stop"}, headers=op),
            await w.client.get(f"{base}/a1/logs", headers=op),
            await w.client.get(f"{base}/a1/metrics", headers=op),
        ):
            message = error_of(response, ErrorCode.GRPC)
            assert "far" in message and "reached" in message
        assert envelope(await w.client.get(base, headers=op)) == {"agents": [], "count": 0}
        assert [entry[3] for entry in await w.audit_actions()] == ["error:5004", "error:5004"]
