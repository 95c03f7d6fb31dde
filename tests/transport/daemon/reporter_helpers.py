"""Helpers for the Manager client's tests: an in-process Manager over real loopback gRPC,
fake collectors and supervisor, certificates."""

from __future__ import annotations

import datetime
import math
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from collectors import Metrics, Table
from supervisor import AgentEvent, AgentInfo, AgentState, AgentType
from transport import (
    CallContext,
    DaemonService,
    Listener,
    ManagerService,
    Route,
    ServerTls,
    StatusCode,
    StatusError,
    daemon_pb2,
    manager_pb2,
    serve_grpc,
    unary_route,
)
from transport.daemon._manager_config import ManagerSpec
from transport.daemon._node import HostFacts
from transport.daemon._reporter import Reporter

#: A safety net against a hung test, never a timing assertion.
SAFETY_S = 60

FACTS = HostFacts(hostname="node-a", ip="10.1.2.3", os="linux", arch="amd64")


@dataclass
class Call:
    """One call the fake Manager received."""

    method: str
    request: Any
    metadata: tuple[tuple[str, str], ...]


@dataclass
class FakeManager:
    """A ManagerService (+ SyncAgentStates) that records calls and can misbehave.

    ``mode``: ``ok`` answers; ``refuse`` answers UNAVAILABLE; ``hang`` never answers (the
    client's deadline passes); ``invalid`` answers INVALID_ARGUMENT to reports.
    """

    mode: str = "ok"
    register_success: bool = True
    heartbeat_success: bool = True
    report_success: bool = True
    calls: list[Call] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)

    def _record(self, name: str, request: Any, ctx: CallContext) -> None:
        self.calls.append(Call(name, request, ctx.metadata))
        self.changed.set()
        self.changed = trio.Event()

    async def _misbehave(self, name: str) -> None:
        if self.mode == "refuse":
            raise StatusError(StatusCode.UNAVAILABLE, "refusing")
        if self.mode == "hang":
            await trio.sleep_forever()
        if self.mode == "invalid" and name in ("ReportMetrics", "SyncAgentStates"):
            raise StatusError(StatusCode.INVALID_ARGUMENT, "MetricData.type: empty")

    async def register(
        self, request: manager_pb2.RegisterNodeRequest, ctx: CallContext
    ) -> manager_pb2.RegisterNodeResponse:
        await self._misbehave("RegisterNode")
        self._record("RegisterNode", request, ctx)
        return manager_pb2.RegisterNodeResponse(success=self.register_success, message="ok")

    async def heartbeat(
        self, request: manager_pb2.HeartbeatRequest, ctx: CallContext
    ) -> manager_pb2.HeartbeatResponse:
        await self._misbehave("Heartbeat")
        self._record("Heartbeat", request, ctx)
        message = "ok" if self.heartbeat_success else "node not registered"
        return manager_pb2.HeartbeatResponse(success=self.heartbeat_success, message=message)

    async def report(
        self, request: manager_pb2.ReportMetricsRequest, ctx: CallContext
    ) -> manager_pb2.ReportMetricsResponse:
        await self._misbehave("ReportMetrics")
        self._record("ReportMetrics", request, ctx)
        return manager_pb2.ReportMetricsResponse(success=self.report_success, message="x")

    async def sync(
        self, request: daemon_pb2.SyncAgentStatesRequest, ctx: CallContext
    ) -> daemon_pb2.SyncAgentStatesResponse:
        await self._misbehave("SyncAgentStates")
        self._record("SyncAgentStates", request, ctx)
        return daemon_pb2.SyncAgentStatesResponse(success=True)

    def routes(self) -> list[Route]:
        return [
            unary_route(ManagerService.RegisterNode, self.register),
            unary_route(ManagerService.Heartbeat, self.heartbeat),
            unary_route(ManagerService.ReportMetrics, self.report),
            unary_route(DaemonService.SyncAgentStates, self.sync),
        ]

    def of(self, method: str) -> list[Any]:
        """The requests of one method, in arrival order."""
        return [c.request for c in self.calls if c.method == method]

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds (re-checked at each call received)."""
        while not condition():
            with trio.move_on_after(0.05):
                await self.changed.wait()


@asynccontextmanager
async def manager_server(
    fake: FakeManager, address: str = "127.0.0.1:0", tls: ServerTls | None = None
) -> AsyncIterator[str]:
    """Serve ``fake`` for the block (inside an open grpc loop); yields its address."""
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(serve_grpc, fake.routes(), [Listener(address, tls)]))
        yield bound[0]
        nursery.cancel_scope.cancel()


class FakeMetrics:
    """A collectors stand-in: results pushed by the test reach every subscriber."""

    def __init__(self) -> None:
        self._sends: list[trio.MemorySendChannel[Metrics]] = []

    @contextmanager
    def subscribe(
        self, *, max_buffer_size: int = 64
    ) -> Iterator[trio.MemoryReceiveChannel[Metrics]]:
        send, receive = trio.open_memory_channel[Metrics](max_buffer_size)
        self._sends.append(send)
        with receive:
            yield receive
        self._sends.remove(send)

    def publish(self, metrics: Metrics) -> None:
        for send in self._sends:
            send.send_nowait(metrics)


def cpu(timestamp: float, usage: float = 12.5) -> Metrics:
    return Metrics(
        name="cpu",
        timestamp=timestamp,
        values={
            "usage_percent": usage,
            "cores": 2,
            "model": "x",
            "user": 1.0,
            "system": 2.0,
            "idle": 3.0,
        },
    )


def network(timestamp: float, sent: int, received: int) -> Metrics:
    row = {
        "bytes_sent": sent,
        "bytes_recv": received,
        "packets_sent": 1,
        "packets_recv": 2,
        "errin": 0,
        "errout": 0,
        "dropin": 0,
        "dropout": 0,
    }
    return Metrics(
        name="network",
        timestamp=timestamp,
        values={"interfaces": Table(key="interface", rows={"eth0": row})},
    )


def agent_info(
    agent_id: str, status: AgentState = AgentState.RUNNING, pid: int = 4242
) -> AgentInfo:
    return AgentInfo(
        id=agent_id, type=AgentType.TELEGRAF, name=agent_id, binary_path="/bin/true",
        config_file=None, work_dir="/tmp", socket_path=None, enabled=True,
        pid=pid if status is AgentState.RUNNING else 0, status=status, restart_count=0,
        last_restart=None, started_at=1.7e9, created_at=1.7e9, updated_at=1.7e9,
        last_exit=None, last_error=None, next_restart_at=None, consecutive_restarts=0,
        log_file="/tmp/log", healthy=True if status is AgentState.RUNNING else None,
    )  # fmt: skip


class FakeAgents:
    """A supervisor stand-in: a status list and an event stream the test drives."""

    def __init__(self, *infos: AgentInfo) -> None:
        self.infos = list(infos)
        self._subs: list[trio.MemorySendChannel[AgentEvent]] = []

    def statuses(self) -> list[AgentInfo]:
        return list(self.infos)

    def subscribe(self, max_buffer: int = 1024) -> Any:
        send, receive = trio.open_memory_channel[AgentEvent](math.inf)
        self._subs.append(send)
        return _Subscription(receive)

    def change(self, info: AgentInfo, old: AgentState) -> None:
        self.infos = [info if i.id == info.id else i for i in self.infos]
        event = AgentEvent(info.id, old, info.status, "test", "test", 0.0, info.pid)
        for send in self._subs:
            send.send_nowait(event)


class _Subscription:
    def __init__(self, receive: trio.MemoryReceiveChannel[AgentEvent]) -> None:
        self._receive = receive

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> AgentEvent:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    def close(self) -> None:
        self._receive.close()


def spec(address: str, **overrides: Any) -> ManagerSpec:
    """A ManagerSpec with short real intervals (tests never assert durations)."""
    values: dict[str, Any] = {
        "heartbeat_interval_s": 0.3,
        "reconnect_interval_s": 0.2,
        "timeout_s": 1.0,
        "sync_interval_s": 0.5,
    }
    values.update(overrides)
    return ManagerSpec(address=address, **values)


def reporter(manager: ManagerSpec, work: Path, **kwargs: Any) -> Reporter:
    """A Reporter inside the test's grpc loop, with fixed host facts."""
    options: dict[str, Any] = {
        "node_id": "node-1",
        "work_dir": str(work),
        "open_loop": False,
        "facts": lambda: FACTS,
        "labels": {"rack": "r1"},
        "daemon_version": "9.9.9",
        "linger_s": 0.1,
        "debounce_s": 0.1,
        "shutdown_grace_s": 2.0,
    }
    options.update(kwargs)
    return Reporter(manager, **options)


@asynccontextmanager
async def running(r: Reporter) -> AsyncIterator[Reporter]:
    """Run a reporter for the block, then stop it (its shutdown included)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(r.run)
        yield r
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- TLS


def _cert(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name = (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]) if issuer else subject
    )
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )  # fmt: skip
    if issuer is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False
        )
    signer = issuer[1] if issuer else key
    return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class Pki:
    """A CA, the Manager's certificate and a client certificate, written as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_tls(self, *, require_client: bool) -> ServerTls:
        return ServerTls(
            self.server_cert.read_bytes(),
            self.server_key.read_bytes(),
            self.ca.read_bytes() if require_client else None,
        )


def make_pki(directory: Path) -> Pki:
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("test-ca", ca_key, None)
    files = {
        "ca": ca,
        "server_cert": _cert("manager.test", server_key, ("test-ca", ca_key)),
        "server_key": _key_pem(server_key),
        "client_cert": _cert("node-1", client_key, ("test-ca", ca_key)),
        "client_key": _key_pem(client_key),
    }
    paths = {}
    for name, data in files.items():
        path = directory / f"{name}.pem"
        path.write_bytes(data)
        paths[name] = path
    return Pki(**paths)
