"""Security of the whole system as users run it: the daemon's listener, mutual TLS between
the Manager and the daemons, node identities bound to certificates, and roles.

The module's fleet runs over mutual TLS (``tls=True``, two nodes, certificates from
``hostvisor certs``): the Manager requires a client certificate signed by the fleet's CA
and accepts a node id only from the certificate naming it; every daemon requires a client
certificate of the second CA, which signs only the Manager's.
"""

from __future__ import annotations

import socket
import time
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.harness import (
    MANAGER_NAME,
    SAFETY_S,
    DaemonProc,
    Fleet,
    FleetPki,
    merged,
    shell_agent,
)
from tests.supervisor.helpers import alive, free_port
from transport import (
    ClientTls,
    DaemonService,
    ManagerService,
    RemoteError,
    StatusCode,
    UnaryMethod,
    daemon_pb2,
    manager_pb2,
    open_channel,
    open_grpc_loop,
)


@pytest.fixture(scope="module")
def fleet_options() -> dict[str, Any]:
    return {"tls": True, "nodes": 2}


def pki_of(fleet: Fleet) -> FleetPki:
    assert fleet.pki is not None
    return fleet.pki


def client_tls(pki: FleetPki, server_name: str | None, name: str | None = None) -> ClientTls:
    """Trust the fleet's CA, check ``server_name`` (None: the address's IP); present the
    certificate ``name`` (none if None)."""
    return ClientTls(
        server_ca=pki.ca.read_bytes(),
        cert_chain=pki.cert(name).read_bytes() if name else None,
        private_key=pki.key(name).read_bytes() if name else None,
        server_name=server_name,
    )


async def refusal(
    address: str, tls: ClientTls | None, method: UnaryMethod[Any, Any], request: Any
) -> StatusCode:
    """The status a call is refused with (the test fails if it is answered)."""
    async with open_channel(address, tls=tls) as channel:
        with pytest.raises(RemoteError) as caught:
            await channel.call(method, request, timeout_s=SAFETY_S)
    return caught.value.status


async def answer(address: str, tls: ClientTls, method: UnaryMethod[Any, Any], request: Any) -> Any:
    """The reply to a call (the positive control of a refusal)."""
    async with open_channel(address, tls=tls) as channel:
        return await channel.call(method, request, timeout_s=SAFETY_S)


def heartbeat(node_id: str) -> manager_pb2.HeartbeatRequest:
    return manager_pb2.HeartbeatRequest(node_id=node_id, timestamp=int(time.time()))


def register(node_id: str) -> manager_pb2.RegisterNodeRequest:
    return manager_pb2.RegisterNodeRequest(
        node_id=node_id, hostname="impostor", ip="10.9.9.9", os="linux", arch="amd64"
    )


def reported(fleet: Fleet, node_id: str) -> bool:
    """Whether the API has the node's latest metrics of every kind."""
    return all(fleet.api().latest_metrics(node_id).values())


def agents_shown(fleet: Fleet, node_id: str) -> bool:
    """Whether the API shows the node's agents with the pids its state.json has."""
    pids = fleet.daemon(node_id).pids()
    shown = {a["agent_id"]: a["pid"] for a in fleet.api().agents(node_id)}
    return bool(pids) and shown == pids


# --------------------------------------------------------------------------- the listener


def test_a_daemon_beyond_loopback_needs_tls_or_consent(fleet_root: Path) -> None:
    """``hostvisor run`` with ``grpc_host: 0.0.0.0`` and no TLS exits 3 naming
    daemon.grpc_host, having started nothing; with ``grpc_allow_insecure: true`` it
    starts, listens on every address and warns."""
    port, work = free_port(), fleet_root / "w"
    document = {
        "daemon": {"id": "edge", "work_dir": str(work), "grpc_host": "0.0.0.0", "grpc_port": port},
        "agents": [shell_agent("sleeper", "exec sleep 100000")],
    }
    daemon = DaemonProc("edge", fleet_root / "edge", document, port, work)
    daemon.start(wait=False)
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=SAFETY_S) == 3, daemon.run_text()
    refused = daemon.run_text()
    assert "daemon.grpc_host" in refused and "'0.0.0.0' is not a loopback address" in refused
    assert "grpc_allow_insecure" in refused  # says how to accept it
    assert not (work / "state.json").exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=SAFETY_S).close()

    daemon.write(merged(document, {"daemon": {"grpc_allow_insecure": True}}))
    daemon.start()
    try:
        started = daemon.run_text()
        assert "warning: daemon.grpc_host '0.0.0.0' is not a loopback address" in started
        listening = {
            (c.laddr.ip, c.laddr.port)
            for c in psutil.Process(daemon.pid).net_connections("tcp")
            if c.status == psutil.CONN_LISTEN
        }
        assert listening & {("0.0.0.0", port), ("::", port)}, listening  # every address
    finally:
        assert daemon.stop() == 0


# --------------------------------------------------------------------------- mutual TLS


def test_the_fleet_works_over_mutual_tls(fleet: Fleet) -> None:
    """Nodes register, report metrics and agent states over mTLS; the Manager reaches
    the daemons over mTLS for an operation and for logs."""
    api = fleet.api()
    assert {n["node_id"]: n["status"] for n in api.nodes()} == dict.fromkeys(
        fleet.node_ids, "online"
    )
    for node_id in fleet.node_ids:
        fleet.wait(partial(reported, fleet, node_id), f"{node_id}'s metrics")
        fleet.wait(partial(agents_shown, fleet, node_id), f"{node_id}'s agents")
    for daemon in fleet.daemons:
        log = daemon.log_text()
        assert f"as node {daemon.node_id} (TLS)" in log and "(plaintext)" not in log
        assert f"gRPC: serving on 127.0.0.1:{daemon.port} (mutual TLS)" in log
    sleeper = fleet.daemon("node-2").agent_pid("sleeper")
    assert sleeper is not None
    api.operate("node-2", "sleeper", "restart")
    fleet.wait(lambda: not alive(sleeper), "the old sleeper to end")
    fleet.wait(
        lambda: fleet.daemon("node-2").agent_pid("sleeper") not in (None, sleeper),
        "a new sleeper",
    )
    fleet.wait(lambda: any("tick" in line for line in api.logs("node-1", "ticker", 5)), "logs")


async def test_a_client_without_a_certificate_is_refused(fleet: Fleet) -> None:
    """The Manager and a daemon refuse a TLS client without a certificate, and a
    plaintext one; both answer a client with the right certificate."""
    pki = pki_of(fleet)
    manager, daemon = fleet.manager.grpc_address, f"127.0.0.1:{fleet.daemons[0].port}"
    list_agents = daemon_pb2.ListAgentsRequest()
    async with open_grpc_loop():
        for tls in (client_tls(pki, MANAGER_NAME), None):
            status = await refusal(manager, tls, ManagerService.RegisterNode, register("node-9"))
            assert status is StatusCode.UNAVAILABLE
        for tls in (client_tls(pki, "node-1"), None):
            status = await refusal(daemon, tls, DaemonService.ListAgents, list_agents)
            assert status is StatusCode.UNAVAILABLE
        node = client_tls(pki, MANAGER_NAME, "node-1")
        assert (await answer(manager, node, ManagerService.Heartbeat, heartbeat("node-1"))).success
        trusted = client_tls(pki, "node-1", "manager-client")
        reply = await answer(daemon, trusted, DaemonService.ListAgents, list_agents)
        assert {a.id for a in reply.agents} >= {"ticker", "sleeper"}
    assert "node-9" not in {n["node_id"] for n in fleet.api().nodes()}


async def test_a_node_certificate_speaks_for_its_node_only(fleet: Fleet) -> None:
    """With node-1's certificate, registering node-9 or node-2 and heartbeating for
    node-2 are PERMISSION_DENIED and change nothing; node-1's own heartbeat is answered."""
    api = fleet.api()
    before = api.node("node-2")
    tls = client_tls(pki_of(fleet), MANAGER_NAME, "node-1")
    address = fleet.manager.grpc_address
    async with open_grpc_loop():
        for request in (register("node-9"), register("node-2")):
            status = await refusal(address, tls, ManagerService.RegisterNode, request)
            assert status is StatusCode.PERMISSION_DENIED
        status = await refusal(address, tls, ManagerService.Heartbeat, heartbeat("node-2"))
        assert status is StatusCode.PERMISSION_DENIED
        assert (await answer(address, tls, ManagerService.Heartbeat, heartbeat("node-1"))).success
    missing = api.raw("GET", "/nodes/node-9")
    assert (missing.status_code, missing.json()["code"]) == (404, 2001)
    after = api.node("node-2")
    assert (after["hostname"], after["ip"], after["register_at"]) == (
        before["hostname"],
        before["ip"],
        before["register_at"],
    )
    assert after["hostname"] != "impostor"


async def test_a_node_certificate_cannot_operate_daemons(fleet: Fleet) -> None:
    """node-1's certificate (signed by the fleet's CA, trusted by the Manager) opens no
    daemon: node-2's refuses its ListAgents and its stop, and the agent runs on; the
    Manager's certificate opens it."""
    pki, target = pki_of(fleet), fleet.daemon("node-2")
    pid = target.agent_pid("sleeper")
    assert pid is not None
    address = f"127.0.0.1:{target.port}"
    stop = daemon_pb2.AgentOperationRequest(agent_id="sleeper", operation="stop")
    list_agents = daemon_pb2.ListAgentsRequest()
    async with open_grpc_loop():
        for name in ("node-1", "node-2"):  # even the daemon's own certificate
            tls = client_tls(pki, None, name)
            status = await refusal(address, tls, DaemonService.ListAgents, list_agents)
            assert status is StatusCode.UNAVAILABLE
            status = await refusal(address, tls, DaemonService.OperateAgent, stop)
            assert status is StatusCode.UNAVAILABLE
        trusted = client_tls(pki, None, "manager-client")
        reply = await answer(address, trusted, DaemonService.ListAgents, list_agents)
        assert {a.id: a.pid for a in reply.agents}["sleeper"] == pid
    assert alive(pid) and target.agent_pid("sleeper") == pid


# --------------------------------------------------------------------------- roles


def test_a_viewer_cannot_operate_agents(fleet: Fleet) -> None:
    """A viewer reads agents but its stop is 403 (code 1003) and the agent runs on; an
    operator's restart goes through."""
    viewer, operator = fleet.api("viewer"), fleet.api("operator")
    daemon = fleet.daemon("node-1")
    fleet.wait(lambda: daemon.agent_pid("sleeper") is not None, "node-1's sleeper")
    pid = daemon.agent_pid("sleeper")
    assert pid is not None
    assert any(a["agent_id"] == "sleeper" for a in viewer.agents("node-1"))
    seen = len(daemon.log_text())

    for action in ("stop", "restart"):
        answer = viewer.raw(
            "POST", "/nodes/node-1/agents/sleeper/operate", json={"operation": action}
        )
        assert answer.status_code == 403, answer.text
        assert answer.json()["code"] == 1003, answer.text
    assert alive(pid) and daemon.agent_pid("sleeper") == pid
    assert "sleeper: running -> stopping" not in daemon.log_text()[seen:]

    operator.operate("node-1", "sleeper", "restart")
    fleet.wait(lambda: not alive(pid), "the operator's restart to end the old sleeper")
    fleet.wait(lambda: daemon.agent_pid("sleeper") not in (None, pid), "a new sleeper")
