"""The console's event stream in the whole Manager (serve_manager): what daemons send over
gRPC reaches an open ``/api/v1/events``, and the dashboard reads manager.yaml's alerts."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import trio

from tests.transport.manager.console_helpers import open_sse
from tests.transport.manager.http_helpers import envelope
from tests.transport.manager.test_run import config_of, manager, register
from transport import DaemonService, daemon_pb2, open_channel
from transport.manager._http._auth import Authenticator, AuthSettings
from transport.manager._model import Role
from transport.manager._run import auth_settings, open_store

SAFETY_S = 120


def viewer_jwt(config: object, settings: AuthSettings) -> tuple[str, str]:
    """A viewer and an API token in the Manager's database; (JWT, token)."""
    with open_store(config) as store:  # type: ignore[arg-type]
        now = time.time()
        user = store.create_user("watcher", "not-a-hash", role=Role.VIEWER, now=now)
        secret, digest, prefix = Authenticator.new_token_secret()
        store.create_token(user.id, "tests", digest, prefix, expires_at=None, now=now)
        found, stored = store.credentials("watcher")
        return Authenticator(store, settings).issue_jwt(found, stored, now=now), secret


async def sync(address: str, node_id: str, *agents: tuple[str, str, int]) -> None:
    """SyncAgentStates as a daemon sends it."""
    request = daemon_pb2.SyncAgentStatesRequest(
        node_id=node_id,
        states=[daemon_pb2.AgentState(agent_id=a, status=s, pid=p) for a, s, p in agents],
    )
    async with open_channel(address) as channel:
        response = await channel.call(DaemonService.SyncAgentStates, request, timeout_s=30)
    assert response.success


async def test_grpc_writes_reach_the_event_stream(tmp_path: Path) -> None:
    """Registration publishes ``node`` online; a sync that changes agents publishes them
    (read back from the store), the same sync again publishes nothing."""
    config = config_of(tmp_path, alerts={"cpu_percent": 70})
    async with manager(config) as (listening, _):
        jwt, token = await trio.to_thread.run_sync(viewer_jwt, config, auth_settings(config))
        async with httpx.AsyncClient(base_url=listening.http, timeout=SAFETY_S) as client:
            headers = {"Authorization": f"Bearer {token}"}
            board = envelope(await client.get("/api/v1/dashboard", headers=headers))
            assert board["thresholds"]["cpu_percent"] == 70
        async with open_sse(listening.http, f"/api/v1/events?access_token={jwt}") as response:
            assert response.status == 200
            reader = response.reader
            assert (await reader.block()).startswith("retry:")
            with trio.fail_after(SAFETY_S):
                assert (await register(listening.grpc, "n1")).success
                assert await reader.until("node") == {"node_id": "n1", "status": "online"}
                await sync(listening.grpc, "n1", ("a", "running", 10), ("b", "stopped", 0))
                data = await reader.until("agents")
                assert data["node_id"] == "n1"
                assert [(a["agent_id"], a["status"], a["pid"]) for a in data["agents"]] == [
                    ("a", "running", 10),
                    ("b", "stopped", 0),
                ]
                await sync(listening.grpc, "n1", ("a", "running", 10), ("b", "stopped", 0))
                await sync(listening.grpc, "n1", ("a", "failed", 0), ("b", "stopped", 0))
                data = await reader.until("agents")  # the next one is the change
                assert [a["status"] for a in data["agents"]] == ["failed", "stopped"]
