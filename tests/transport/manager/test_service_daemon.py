"""Our daemon's Manager client (the real Reporter) against the Manager's real service.

Over mutual TLS with node-bound identities and a real SQLite store: the node registers
(announcing its gRPC port), heartbeats, reports metrics and syncs its agents, and the rows
appear in the store. When the Manager loses the node, the next heartbeat recreates it and
asks the daemon to register again, which it does. Waiting is on conditions (the reporter's
counters, the store's rows), never on durations.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import trio

from supervisor import AgentState
from tests.transport.daemon.reporter_helpers import (
    FakeAgents,
    FakeMetrics,
    agent_info,
    cpu,
    make_pki,
    network,
    reporter,
    running,
    spec,
)
from transport.daemon._manager_config import ManagerTls
from transport.manager import NotFoundError
from transport.manager._model import NodeStatus
from transport.manager._store import Store

from .service_helpers import connected, sqlite_store

SAFETY_S = 60


async def until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds, checking it every few milliseconds."""
    while not condition():
        await trio.sleep(0.02)


def node_named(store: Store, hostname: str) -> bool:
    try:
        return store.get_node("node-1").hostname == hostname
    except NotFoundError:
        return False


async def test_our_daemon_reports_to_our_manager(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    tls = ManagerTls(
        cert_file=str(pki.client_cert),
        key_file=str(pki.client_key),
        ca_file=str(pki.ca),
        server_name="manager.test",
    )
    agents = FakeAgents(agent_info("alpha"), agent_info("beta", AgentState.STOPPED))
    metrics = FakeMetrics()
    with sqlite_store(tmp_path) as store, trio.fail_after(SAFETY_S):
        async with connected(
            store, tls=pki.server_tls(require_client=True), bind_node_identity=True
        ) as (manager, _):
            r = reporter(
                spec(manager.address, tls=tls),
                tmp_path / "work",
                agents=agents,
                metrics=metrics,
                grpc_port=9191,
            )
            async with running(r):
                await until(lambda: r.statistics().heartbeats >= 1)
                now = time.time()
                metrics.publish(cpu(now))
                metrics.publish(network(now, 1000, 2000))
                await until(lambda: r.statistics().reports >= 1 and r.statistics().syncs >= 1)
                node = store.get_node("node-1")
                assert (node.hostname, node.ip, node.grpc_port) == ("node-a", "10.1.2.3", 9191)
                assert (node.status, node.daemon_version) == (NodeStatus.ONLINE, "9.9.9")
                assert dict(node.labels) == {"rack": "r1"}
                latest = store.latest_metrics("node-1")
                assert latest["cpu"] is not None and latest["cpu"].values["usage_percent"] == 12.5
                assert latest["network"] is not None
                agents_stored = {a.agent_id: (a.status, a.pid) for a in store.list_agents("node-1")}
                assert agents_stored == {"alpha": ("running", 4242), "beta": ("stopped", 0)}

                # The Manager loses the node: the next heartbeat brings it back, registered.
                await trio.to_thread.run_sync(store.delete_node, node.id)
                await until(lambda: r.statistics().registrations >= 2)
                await until(lambda: node_named(store, "node-a"))
                await until(lambda: len(store.list_agents("node-1")) == 2)
            stats = r.statistics()
    assert stats.invalid == 0 and stats.refused == 0
    assert stats.errors["D2002"] == 0  # D2003: a report may race the re-registration
    served = manager.ingest.statistics()
    assert served.nodes_created == 1 and served.registrations >= 2
    assert set(served.refused) <= {"NOT_FOUND"}  # a report racing the re-registration
