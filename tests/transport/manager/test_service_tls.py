"""The Manager's gRPC service with TLS: client certificates and node-bound identities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from google.protobuf.message import Message

from tests.transport.daemon.reporter_helpers import Pki, make_pki
from transport import (
    ClientTls,
    DaemonService,
    ManagerService,
    RemoteError,
    StatusCode,
    UnaryMethod,
    daemon_pb2,
    manager_pb2,
)
from transport.manager import NotFoundError

from .service_helpers import connected, sqlite_store

SAFETY_S = 60


def client(pki: Pki, *, certificate: bool = True) -> ClientTls:
    return ClientTls(
        server_ca=pki.ca.read_bytes(),
        cert_chain=pki.client_cert.read_bytes() if certificate else None,
        private_key=pki.client_key.read_bytes() if certificate else None,
        server_name="manager.test",
    )


def calls_for(node_id: str) -> list[tuple[UnaryMethod[Any, Any], Message]]:
    """One call of each method for ``node_id``, registration first."""
    metric = manager_pb2.MetricData(type="cpu", timestamp=10, values={"usage_percent": 1.0})
    return [
        (ManagerService.RegisterNode, manager_pb2.RegisterNodeRequest(node_id=node_id)),
        (ManagerService.Heartbeat, manager_pb2.HeartbeatRequest(node_id=node_id)),
        (
            ManagerService.ReportMetrics,
            manager_pb2.ReportMetricsRequest(node_id=node_id, metrics=[metric]),
        ),
        (DaemonService.SyncAgentStates, daemon_pb2.SyncAgentStatesRequest(node_id=node_id)),
    ]


async def test_a_client_certificate_is_required(tmp_path: Path) -> None:
    """With a client CA, a daemon without a certificate is refused in the handshake;
    with one it is served."""
    pki = make_pki(tmp_path)
    server = pki.server_tls(require_client=True)
    with sqlite_store(tmp_path) as store, trio.fail_after(SAFETY_S):
        async with connected(store, tls=server, client=client(pki, certificate=False)) as (
            _,
            channel,
        ):
            for method, request in calls_for("node-1")[:2]:
                with pytest.raises(RemoteError) as caught:
                    await channel.call(method, request, timeout_s=10)
                assert caught.value.status is StatusCode.UNAVAILABLE
        with pytest.raises(NotFoundError):
            store.get_node("node-1")
        async with connected(store, tls=server, client=client(pki)) as (manager, channel):
            for method, request in calls_for("node-1"):
                assert (await channel.call(method, request)).success
        assert store.get_node("node-1").status == "online"
    assert manager.ingest.statistics().refused == {}


async def test_a_certificate_reports_for_its_own_node_only(tmp_path: Path) -> None:
    """With bind_node_identity, the certificate of node-1 serves node-1, and every call
    for node-2 is PERMISSION_DENIED (nothing of node-2 is stored)."""
    pki = make_pki(tmp_path)
    server = pki.server_tls(require_client=True)
    with sqlite_store(tmp_path) as store, trio.fail_after(SAFETY_S):
        async with connected(store, tls=server, client=client(pki), bind_node_identity=True) as (
            manager,
            channel,
        ):
            for method, request in calls_for("node-1"):
                assert (await channel.call(method, request)).success
            for method, request in calls_for("node-2"):
                with pytest.raises(RemoteError) as caught:
                    await channel.call(method, request)
                assert caught.value.status is StatusCode.PERMISSION_DENIED
                assert caught.value.details == (
                    "the client certificate is not valid for node node-2 (it names node-1)"
                )
        assert store.get_node("node-1").status == "online"
        with pytest.raises(NotFoundError):
            store.get_node("node-2")
    assert manager.ingest.statistics().refused == {"PERMISSION_DENIED": 4}


async def test_bound_identities_without_client_certificates_refuse_everything(
    tmp_path: Path,
) -> None:
    """bind_node_identity on a server that asks for no client certificate: no call names
    its node, so none is accepted (never a silent fall-back to trusting the request)."""
    pki = make_pki(tmp_path)
    server = pki.server_tls(require_client=False)
    with sqlite_store(tmp_path) as store, trio.fail_after(SAFETY_S):
        async with connected(
            store, tls=server, client=client(pki, certificate=False), bind_node_identity=True
        ) as (_, channel):
            for method, request in calls_for("node-1"):
                with pytest.raises(RemoteError, match="no client certificate") as caught:
                    await channel.call(method, request)
                assert caught.value.status is StatusCode.PERMISSION_DENIED
