"""The console's live routes through a real HTTP server, a real SQLite store and a real
daemon gRPC service over real agent processes: agent details (live, and stored when the
daemon is unreachable), following a log over SSE until the browser leaves (the daemon's
FollowAgentLogs handler ends), the event stream, and ``access_token`` authentication."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from supervisor import AgentState
from tests.supervisor.helpers import free_port, shell_agent, wait_for_file, wait_until
from tests.transport.manager.console_helpers import ConsoleWorld, SseReader, console, open_sse
from tests.transport.manager.fleet_helpers import register
from tests.transport.manager.http_helpers import SAFETY_S, envelope, error_of
from transport import AgentStateRecord, AgentStatus
from transport.daemon._streams import HostvisorHandlers
from transport.manager._model import Role, UserStatus

TICKER = 'i=0; while :; do i=$((i+1)); echo "line $i"; sleep 0.02; done'
SLEEPER = "exec sleep 1000"


def _agents(tmp: Path) -> list[Any]:
    return [shell_agent("a1", SLEEPER, tmp), shell_agent("t", TICKER, tmp)]


@asynccontextmanager
async def sse(w: ConsoleWorld, url: str) -> AsyncIterator[SseReader]:
    """An event stream opened with the viewer's JWT in ``access_token``."""
    token = await trio.to_thread.run_sync(w.jwt, Role.VIEWER)
    sep = "&" if "?" in url else "?"
    async with open_sse(str(w.client.base_url), f"{url}{sep}access_token={token}") as response:
        assert response.status == 200, await response.reader.rest()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        yield response.reader


async def test_agent_details_live_then_stored(tmp_path: Path, sock_dir: Path) -> None:
    """Live: the daemon's view (pid, uptime, restarts, health). Unreachable: the stored
    agents, ``live`` false with the reason."""
    async with console(tmp_path, sock_dir, agents=_agents(tmp_path)) as w:
        assert w.served is not None
        sup = w.served.supervisor
        await sup.wait_state("a1", AgentState.RUNNING)
        viewer = w.auth(Role.VIEWER)
        data = envelope(await w.client.get("/api/v1/nodes/n1/agents/details", headers=viewer))
        assert data["live"] is True and data["error"] is None and data["count"] == 2
        a1 = next(a for a in data["agents"] if a["agent_id"] == "a1")
        assert a1["pid"] == sup.status("a1").pid and a1["status"] == "running"
        assert a1["uptime_s"] is not None and a1["uptime_s"] >= 0
        assert isinstance(a1["start_time"], int) and a1["restart_count"] == 0
        assert a1["health"] in ("healthy", "unhealthy", "unknown") and a1["enabled"] is True

        def dead_node() -> None:
            register(w.store, "dead", grpc_port=free_port())
            state = AgentStateRecord(agent_id="x", status=AgentStatus.FAILED, pid=0)
            w.store.sync_agent_states("dead", [state], now=1.0)

        await w.db(dead_node)
        data = envelope(await w.client.get("/api/v1/nodes/dead/agents/details", headers=viewer))
        assert data["live"] is False and "cannot be reached" in data["error"]
        assert [(a["agent_id"], a["status"], a["health"]) for a in data["agents"]] == [
            ("x", "failed", "unknown")
        ]
        error_of(await w.client.get("/api/v1/nodes/none/agents/details", headers=viewer), 2001)
        error_of(await w.client.get("/api/v1/nodes/n1/agents/details"), 1002)


async def test_follow_logs_until_the_browser_leaves(
    tmp_path: Path, sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last lines, then the lines the agent writes next; closing the HTTP stream
    cancels the daemon's FollowAgentLogs call (its handler ends)."""
    started, ended = trio.Event(), trio.Event()
    follow = HostvisorHandlers.follow_agent_logs

    async def recorded(self: HostvisorHandlers, *args: Any) -> None:
        started.set()
        try:
            await follow(self, *args)
        finally:
            ended.set()

    monkeypatch.setattr(HostvisorHandlers, "follow_agent_logs", recorded)
    async with console(tmp_path, sock_dir, agents=_agents(tmp_path)) as w:
        assert w.served is not None
        await wait_for_file(Path(w.served.supervisor.status("t").log_file), "line 10")
        async with sse(w, "/api/v1/nodes/n1/agents/t/logs/follow?lines=5") as reader:
            numbers = [int((await reader.until("line"))["line"].split()[1]) for _ in range(30)]
            assert numbers == list(range(numbers[0], numbers[0] + 30))
            assert numbers[0] >= 6  # the history: lines already written
            assert started.is_set() and not ended.is_set()
        with trio.fail_after(SAFETY_S):
            await ended.wait()
        await wait_until(lambda: all(e.in_use == 0 for e in w.pool._entries.values()))

        async with sse(w, "/api/v1/nodes/n1/agents/nope/logs/follow") as reader:
            error = await reader.until("error")
            assert error["code"] == 1004 and "nope" in error["message"]
        viewer = w.auth(Role.VIEWER)
        url = "/api/v1/nodes/n1/agents/t/logs/follow"
        error_of(await w.client.get(f"{url}?lines=1001", headers=viewer), 1001)
        error_of(await w.client.get("/api/v1/nodes/zz/agents/t/logs/follow", headers=viewer), 2001)


async def test_event_stream(tmp_path: Path, sock_dir: Path) -> None:
    """Operating an agent through REST, a gRPC sync that changes agents, a node going
    offline and back, and a deletion each reach an open event stream."""
    async with console(tmp_path, sock_dir, agents=_agents(tmp_path)) as w:
        assert w.served is not None and w.events is not None
        await w.served.supervisor.wait_state("a1", AgentState.RUNNING)
        async with sse(w, "/api/v1/events") as reader:
            assert (await reader.block()).startswith("retry:")
            assert w.events.subscribers == 1
            operate = "/api/v1/nodes/n1/agents/a1/operate"
            response = await w.client.post(
                operate, json={"operation": "stop"}, headers=w.auth(Role.OPERATOR)
            )
            envelope(response)
            data = await reader.until("agents")
            assert data["node_id"] == "n1"
            statuses = {a["agent_id"]: a["status"] for a in data["agents"]}
            assert statuses["a1"] == "stopped" and set(data["agents"][0]) >= {"pid", "id"}

            state = AgentStateRecord(agent_id="a1", status=AgentStatus.RUNNING, pid=42)

            def synced() -> None:  # as the gRPC service does, on its own thread
                w.store.sync_agent_states("n1", [state], now=2.0)
                w.events.agents_reported("n1", [state])  # type: ignore[union-attr]

            await w.db(synced)
            data = await reader.until("agents", lambda d: d["agents"][0]["pid"] == 42)
            assert [a["agent_id"] for a in data["agents"]] == ["a1", "t"]

            await w.db(w.events.nodes_offline, ["n1"])
            assert await reader.until("node") == {"node_id": "n1", "status": "offline"}
            w.events.node_seen("n1")
            assert await reader.until("node") == {"node_id": "n1", "status": "online"}
            node = envelope(await w.client.get("/api/v1/nodes/n1", headers=w.auth(Role.VIEWER)))
            deleted = await w.client.delete(
                f"/api/v1/nodes/{node['node']['id']}", headers=w.auth(Role.ADMIN)
            )
            envelope(deleted)
            assert await reader.until("node") == {"node_id": "n1", "status": "deleted"}
        await wait_until(lambda: w.events is not None and w.events.subscribers == 0)


async def test_keepalive_comments(tmp_path: Path, sock_dir: Path) -> None:
    """An idle stream writes a comment every keep-alive interval."""
    async with console(tmp_path, sock_dir, keepalive_s=0.05) as w, sse(w, "/api/v1/events") as r:
        assert (await r.block()).startswith("retry:")
        assert await r.block() == ": keep-alive"
        assert await r.block() == ": keep-alive"


async def test_access_token_only_on_event_streams(tmp_path: Path, sock_dir: Path) -> None:
    """``access_token`` is checked like the header (bad 1007, disabled user 2008) and only
    accepted on the SSE routes; no credential at all is 1002."""
    async with console(tmp_path, sock_dir) as w:
        token = await trio.to_thread.run_sync(w.jwt, Role.VIEWER)
        error_of(await w.client.get("/api/v1/events"), 1002)
        error_of(await w.client.get("/api/v1/events?access_token=nonsense"), 1007)
        error_of(await w.client.get(f"/api/v1/nodes?access_token={token}"), 1002)
        error_of(await w.client.get(f"/api/v1/dashboard?access_token={token}"), 1002)

        def disable() -> None:
            user, _ = w.store.credentials(Role.VIEWER.value)
            w.store.set_user_status(user.id, UserStatus.DISABLED, now=1.0)

        await w.db(disable)
        error_of(await w.client.get(f"/api/v1/events?access_token={token}"), 2008)
