"""The Trio <-> grpc.aio bridge, over real gRPC on loopback (and a Unix socket)."""

from __future__ import annotations

import datetime
import logging
import math
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from transport import (
    CallContext,
    Channel,
    ClientTls,
    InvalidMessageError,
    Listener,
    ListenError,
    RemoteError,
    Route,
    Send,
    ServerTls,
    StatusCode,
    StatusError,
    TransportError,
    open_channel,
    open_grpc_loop,
    serve_grpc,
    stream_route,
    unary_route,
)
from transport._pb import daemon_pb2 as d
from transport._pb.daemon_rpc import DaemonService
from transport._pb.hostvisor.v1 import hostvisor_pb2 as h
from transport._pb.hostvisor.v1.hostvisor_rpc import HostvisorService

# A safety net against a hung test, never a timing assertion.
SAFETY_S = 20
T = TypeVar("T")


def _task_count() -> int:
    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(t) for n in task.child_nurseries for t in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return count(root)


@asynccontextmanager
async def serving(
    routes: Sequence[Route], listeners: Sequence[Listener] = (Listener("127.0.0.1:0"),)
) -> AsyncIterator[tuple[str, ...]]:
    """A server on loopback for the block (the grpc loop must be open)."""
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(serve_grpc, routes, listeners))
        yield bound
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def connected(routes: Sequence[Route]) -> AsyncIterator[Channel]:
    """A grpc loop, a server and a channel to it, all closed after the block."""
    with trio.fail_after(SAFETY_S):
        async with (
            open_grpc_loop(),
            serving(routes) as (address,),
            open_channel(address) as channel,
        ):
            yield channel


async def drain(stream: AsyncIterator[T], into: list[T]) -> None:
    """Read a stream to its end, keeping what arrives."""
    async for message in stream:
        into.append(message)


async def list_agents(request: d.ListAgentsRequest, ctx: CallContext) -> d.ListAgentsResponse:
    return d.ListAgentsResponse(agents=[d.AgentInfo(id="a1", status="running", pid=42)])


async def test_unary_call_answers() -> None:
    """A unary handler written in Trio answers a unary call made from Trio."""
    async with connected([unary_route(DaemonService.ListAgents, list_agents)]) as channel:
        response = await channel.call(DaemonService.ListAgents, d.ListAgentsRequest())
    assert [(a.id, a.status, a.pid) for a in response.agents] == [("a1", "running", 42)]


async def test_loop_closes_without_leftovers() -> None:
    """After the loop closes, no task of the server, the channel or the loop is left."""
    before = _task_count()
    async with connected([unary_route(DaemonService.ListAgents, list_agents)]) as channel:
        await channel.call(DaemonService.ListAgents, d.ListAgentsRequest())
        assert _task_count() > before
    assert _task_count() == before


async def test_metadata_crosses_both_ways() -> None:
    """Request metadata reaches the handler; its initial and trailing metadata come back."""

    async def handler(request: d.UpdateRequest, ctx: CallContext) -> d.UpdateResponse:
        ctx.initial_metadata.append(("hostvisor-update-id", ctx.get("Hostvisor-Update-Id") or ""))
        ctx.trailing_metadata.append(("note", "accepted"))
        assert ctx.deadline < math.inf
        assert ctx.method == "/proto.DaemonService/PushUpdate"
        return d.UpdateResponse(success=True, message=request.version)

    async with connected([unary_route(DaemonService.PushUpdate, handler)]) as channel:
        reply = await channel.call_with_metadata(
            DaemonService.PushUpdate,
            d.UpdateRequest(version="1.2.3"),
            metadata=(("hostvisor-update-id", "u-7"),),
            timeout_s=SAFETY_S,
        )
    assert reply.response == d.UpdateResponse(success=True, message="1.2.3")
    assert ("hostvisor-update-id", "u-7") in reply.initial_metadata
    assert ("note", "accepted") in reply.trailing_metadata


@pytest.mark.parametrize(
    ("error", "status", "details"),
    [
        (
            StatusError(StatusCode.NOT_FOUND, "unknown agent 'x'"),
            StatusCode.NOT_FOUND,
            "unknown agent 'x'",
        ),
        (
            InvalidMessageError("AgentOperationRequest.operation", "unknown operation 'kill'"),
            StatusCode.INVALID_ARGUMENT,
            "AgentOperationRequest.operation: unknown operation 'kill'",
        ),
        (
            ExceptionGroup("nursery", [StatusError(StatusCode.INTERNAL, "boom")]),
            StatusCode.INTERNAL,
            "boom",
        ),
        (KeyError("oops"), StatusCode.INTERNAL, "internal error (KeyError)"),
    ],
)
async def test_handler_errors_become_statuses(
    error: Exception, status: StatusCode, details: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A StatusError is the answer; anything else answers INTERNAL and is logged."""

    async def handler(
        request: d.AgentOperationRequest, ctx: CallContext
    ) -> d.AgentOperationResponse:
        ctx.trailing_metadata.append(("why", "test"))
        raise error

    caplog.set_level(logging.ERROR, logger="transport.grpc")
    async with connected([unary_route(DaemonService.OperateAgent, handler)]) as channel:
        with pytest.raises(RemoteError) as caught:
            await channel.call(DaemonService.OperateAgent, d.AgentOperationRequest(agent_id="x"))
    assert (caught.value.status, caught.value.details) == (status, details)
    assert caught.value.method == "/proto.DaemonService/OperateAgent"
    assert bool(caplog.records) == (status is StatusCode.INTERNAL and "internal" in details)


async def test_unrouted_method_is_unimplemented() -> None:
    """A method of a served service without a route answers UNIMPLEMENTED."""
    async with connected([unary_route(DaemonService.ListAgents, list_agents)]) as channel:
        with pytest.raises(RemoteError) as caught:
            await channel.call(DaemonService.Register, d.RegisterRequest())
    assert caught.value.status is StatusCode.UNIMPLEMENTED


async def test_client_cancel_cancels_the_handler() -> None:
    """A client that cancels mid-call makes the server's Trio handler see trio.Cancelled."""
    started, cancelled = trio.Event(), trio.Event()

    async def handler(request: d.AgentMetricsRequest, ctx: CallContext) -> d.AgentMetricsResponse:
        started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.set()
            raise

    async with connected([unary_route(DaemonService.GetAgentMetrics, handler)]) as channel:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    channel.call, DaemonService.GetAgentMetrics, d.AgentMetricsRequest()
                )
                await started.wait()
                scope.cancel()
        await cancelled.wait()
        # The channel still works after a cancelled call.
        with pytest.raises(RemoteError):
            await channel.call(DaemonService.ListAgents, d.ListAgentsRequest())


async def test_deadline_cancels_the_handler() -> None:
    """A call's timeout ends it with DEADLINE_EXCEEDED and cancels the handler."""
    started, cancelled = trio.Event(), trio.Event()

    async def handler(request: d.AgentMetricsRequest, ctx: CallContext) -> d.AgentMetricsResponse:
        started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.set()
            raise

    async with connected([unary_route(DaemonService.GetAgentMetrics, handler)]) as channel:
        with pytest.raises(RemoteError) as caught:
            await channel.call(
                DaemonService.GetAgentMetrics, d.AgentMetricsRequest(), timeout_s=0.5
            )
        if started.is_set():  # on a loaded machine the deadline may pass before it starts
            await cancelled.wait()
    assert caught.value.status is StatusCode.DEADLINE_EXCEEDED


async def test_unreachable_server_is_unavailable() -> None:
    """A call to an address nobody listens on fails with UNAVAILABLE."""
    with trio.fail_after(SAFETY_S):
        async with open_grpc_loop(), serving([]) as (address,):
            pass  # the port is free again
        async with open_grpc_loop(), open_channel(address) as channel:
            with pytest.raises(RemoteError) as caught:
                await channel.call(DaemonService.ListAgents, d.ListAgentsRequest())
    assert caught.value.status is StatusCode.UNAVAILABLE


async def _follow(
    request: h.FollowAgentLogsRequest, ctx: CallContext, send: Send[h.LogChunk]
) -> None:
    ctx.initial_metadata.append(("agent", request.agent_id))
    for i in range(request.tail_lines):
        await send(h.LogChunk(lines=[f"line {i}"]))


async def test_stream_delivers_every_message() -> None:
    """A streaming handler's messages arrive in order and the stream ends OK."""
    async with connected([stream_route(HostvisorService.FollowAgentLogs, _follow)]) as channel:
        request = h.FollowAgentLogsRequest(agent_id="a1", tail_lines=50)
        async with channel.stream(HostvisorService.FollowAgentLogs, request) as stream:
            assert ("agent", "a1") in await stream.initial_metadata()
            lines = [chunk.lines[0] async for chunk in stream]
    assert lines == [f"line {i}" for i in range(50)]


async def test_stream_error_reaches_the_client() -> None:
    """A streaming handler that raises StatusError ends the stream with that status."""

    async def handler(
        request: h.WatchAgentStatesRequest, ctx: CallContext, send: Send[h.AgentStateEvent]
    ) -> None:
        await send(h.AgentStateEvent(snapshot=h.AgentSnapshot(timestamp_ms=1)))
        raise StatusError(StatusCode.NOT_FOUND, "unknown agent 'zz'")

    async with connected([stream_route(HostvisorService.WatchAgentStates, handler)]) as channel:
        received: list[h.AgentStateEvent] = []
        async with channel.stream(
            HostvisorService.WatchAgentStates, h.WatchAgentStatesRequest()
        ) as s:
            with pytest.raises(RemoteError) as caught:
                await drain(s, received)
    assert [e.WhichOneof("event") for e in received] == ["snapshot"]
    assert (caught.value.status, caught.value.details) == (
        StatusCode.NOT_FOUND,
        "unknown agent 'zz'",
    )


async def test_leaving_a_stream_cancels_the_handler() -> None:
    """A client that stops reading and leaves the block cancels the streaming handler."""
    cancelled = trio.Event()

    async def handler(
        request: h.FollowAgentLogsRequest, ctx: CallContext, send: Send[h.LogChunk]
    ) -> None:
        try:
            for i in range(10**9):
                await send(h.LogChunk(lines=[str(i)]))
        except trio.Cancelled:
            cancelled.set()
            raise

    async with connected([stream_route(HostvisorService.FollowAgentLogs, handler)]) as channel:
        async with channel.stream(
            HostvisorService.FollowAgentLogs, h.FollowAgentLogsRequest()
        ) as s:
            async for chunk in s:
                if chunk.lines == ["3"]:
                    break
        await cancelled.wait()


async def test_cancelled_read_cancels_the_handler() -> None:
    """Cancelling a Trio task blocked reading a stream cancels the server's handler."""
    waiting, cancelled = trio.Event(), trio.Event()

    async def handler(
        request: h.WatchAgentStatesRequest, ctx: CallContext, send: Send[h.AgentStateEvent]
    ) -> None:
        await send(h.AgentStateEvent(snapshot=h.AgentSnapshot()))
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.set()
            raise

    async def reader(channel: Channel) -> None:
        async with channel.stream(
            HostvisorService.WatchAgentStates, h.WatchAgentStatesRequest()
        ) as s:
            async for _ in s:
                waiting.set()

    async with connected([stream_route(HostvisorService.WatchAgentStates, handler)]) as channel:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader, channel)
            await waiting.wait()
            nursery.cancel_scope.cancel()
        await cancelled.wait()


async def test_server_stop_ends_streams_with_unavailable() -> None:
    """Stopping the server cancels open streams (no waiting out the grace period)."""
    streaming, cancelled = trio.Event(), trio.Event()

    async def handler(
        request: h.FollowAgentLogsRequest, ctx: CallContext, send: Send[h.LogChunk]
    ) -> None:
        await send(h.LogChunk(lines=["first"]))
        streaming.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.set()
            raise

    route = stream_route(HostvisorService.FollowAgentLogs, handler)
    with trio.fail_after(SAFETY_S):
        async with open_grpc_loop(), trio.open_nursery() as outer:
            server_scope = trio.CancelScope()

            async def server(task_status: trio.TaskStatus[tuple[str, ...]]) -> None:
                with server_scope:
                    await serve_grpc(
                        [route], [Listener("127.0.0.1:0")], grace_s=60, task_status=task_status
                    )

            (address,) = await outer.start(server)
            async with (
                open_channel(address) as channel,
                channel.stream(HostvisorService.FollowAgentLogs, h.FollowAgentLogsRequest()) as s,
            ):
                await streaming.wait()
                server_scope.cancel()
                received: list[h.LogChunk] = []
                with pytest.raises(RemoteError) as caught:
                    await drain(s, received)
            await cancelled.wait()
    assert caught.value.status is StatusCode.UNAVAILABLE


async def test_unix_socket_listener() -> None:
    """A server listens on a Unix socket and on TCP at once."""
    with tempfile.TemporaryDirectory(prefix="hv-") as tmp:
        socket = f"unix:{tmp}/daemon.sock"
        route = unary_route(DaemonService.ListAgents, list_agents)
        with trio.fail_after(SAFETY_S):
            listeners = [Listener(socket), Listener("127.0.0.1:0")]
            async with open_grpc_loop(), serving([route], listeners) as bound:
                assert bound[0] == socket and not bound[1].endswith(":0")
                for address in bound:
                    async with open_channel(address) as channel:
                        response = await channel.call(
                            DaemonService.ListAgents, d.ListAgentsRequest()
                        )
                        assert response.agents[0].id == "a1"
            assert not Path(tmp, "daemon.sock").exists()


async def test_listen_error_and_duplicate_routes() -> None:
    """A busy port raises ListenError; two routes for one method raise ValueError."""
    route = unary_route(DaemonService.ListAgents, list_agents)
    with trio.fail_after(SAFETY_S):
        async with open_grpc_loop(), serving([route]) as (address,):
            with pytest.raises(ListenError, match="cannot listen"):
                await serve_grpc([route], [Listener("127.0.0.1:0"), Listener(address)])
            with pytest.raises(ListenError, match="cannot listen"):
                await serve_grpc([route], [Listener("unix:/nonexistent-dir/x.sock")])
        with pytest.raises(ValueError, match="two routes"):
            await serve_grpc([route, route], [Listener("127.0.0.1:0")])
        with pytest.raises(ValueError, match="listener"):
            await serve_grpc([route], [])


async def test_open_grpc_loop_unwraps_a_single_error() -> None:
    """An error of the body leaves open_grpc_loop as itself, not inside exception groups."""
    with pytest.raises(KeyError):
        async with open_grpc_loop():
            raise KeyError("x")


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
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
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


async def test_mutual_tls() -> None:
    """With a client CA, a client with a certificate is served and one without is refused."""
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("test-ca", ca_key, None)
    server_tls = ServerTls(
        _cert("daemon.test", server_key, ("test-ca", ca_key)), _key_pem(server_key), ca
    )
    good = ClientTls(
        server_ca=ca,
        cert_chain=_cert("manager.test", client_key, ("test-ca", ca_key)),
        private_key=_key_pem(client_key),
        server_name="daemon.test",
    )
    anonymous = ClientTls(server_ca=ca, server_name="daemon.test")
    route = unary_route(DaemonService.ListAgents, list_agents)
    with trio.fail_after(SAFETY_S):
        async with (
            open_grpc_loop(),
            serving([route], [Listener("127.0.0.1:0", server_tls)]) as (addr,),
        ):
            async with open_channel(addr, tls=good) as channel:
                response = await channel.call(DaemonService.ListAgents, d.ListAgentsRequest())
                assert response.agents[0].id == "a1"
            async with open_channel(addr, tls=anonymous) as channel:
                with pytest.raises(RemoteError) as caught:
                    await channel.call(DaemonService.ListAgents, d.ListAgentsRequest())
                assert caught.value.status is StatusCode.UNAVAILABLE
            async with open_channel(addr) as channel:  # plaintext to a TLS port
                with pytest.raises(RemoteError):
                    await channel.call(DaemonService.ListAgents, d.ListAgentsRequest())
    with pytest.raises(ValueError, match="together"):
        ClientTls(cert_chain=b"x")


async def test_closed_channel_is_a_transport_error() -> None:
    """Calling through a channel after its block ended raises TransportError."""
    async with connected([unary_route(DaemonService.ListAgents, list_agents)]) as channel:
        pass
    async with open_grpc_loop():
        with pytest.raises(TransportError, match="ListAgents: Channel is closed"):
            await channel.call(DaemonService.ListAgents, d.ListAgentsRequest())
        with pytest.raises(TransportError, match="FollowAgentLogs: Channel is closed"):
            async with channel.stream(HostvisorService.FollowAgentLogs, h.FollowAgentLogsRequest()):
                pass
