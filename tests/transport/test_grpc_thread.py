"""The threaded gRPC server (sync handlers on an asyncio loop in a thread), over real gRPC.

Clients are the Trio bridge's channels (on trio-asyncio's loop in the test's thread), so
the two loops run side by side in one process, as in the Manager.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import ec

from transport import (
    CallContext,
    Channel,
    ClientTls,
    Listener,
    ListenError,
    RemoteError,
    ServerTls,
    StatusCode,
    StatusError,
    open_channel,
    open_grpc_loop,
)
from transport._grpc_thread import SyncRoute, serve_grpc_in_thread, sync_unary_route
from transport._pb import daemon_pb2 as d
from transport._pb.daemon_rpc import DaemonService

from .test_bridge import _cert, _key_pem

SAFETY_S = 20


def list_agents(request: d.ListAgentsRequest, ctx: CallContext) -> d.ListAgentsResponse:
    loop = asyncio.get_running_loop()  # a stock asyncio loop, not trio-asyncio's emulation
    assert type(loop).__module__.startswith("asyncio"), type(loop)
    return d.ListAgentsResponse(agents=[d.AgentInfo(id="a1", status="running", pid=42)])


@asynccontextmanager
async def serving(
    routes: Sequence[SyncRoute], listeners: Sequence[Listener] = (Listener("127.0.0.1:0"),)
) -> AsyncIterator[tuple[str, ...]]:
    """A threaded server for the block."""
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(serve_grpc_in_thread, routes, listeners))
        yield bound
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def connected(routes: Sequence[SyncRoute]) -> AsyncIterator[Channel]:
    """A threaded server, a grpc loop and a channel to the server, for the block."""
    with trio.fail_after(SAFETY_S):
        async with serving(routes) as (address,), open_grpc_loop(), open_channel(address) as ch:
            yield ch


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name == "grpc-server"}


async def test_a_sync_handler_answers_and_the_thread_ends() -> None:
    """A sync handler answers; after the block the server thread is gone."""
    async with connected([sync_unary_route(DaemonService.ListAgents, list_agents)]) as channel:
        assert _threads() == {"grpc-server"}
        response = await channel.call(DaemonService.ListAgents, d.ListAgentsRequest())
        with pytest.raises(RemoteError) as caught:  # a method without a route
            await channel.call(DaemonService.Register, d.RegisterRequest())
    assert [(a.id, a.pid) for a in response.agents] == [("a1", 42)]
    assert caught.value.status is StatusCode.UNIMPLEMENTED
    assert _threads() == set()


async def test_a_future_is_awaited_and_metadata_crosses_both_ways() -> None:
    """A handler's future is answered when it completes, from another thread; metadata
    appended meanwhile goes with the answer."""
    pool = concurrent.futures.ThreadPoolExecutor(1)

    def handler(
        request: d.UpdateRequest, ctx: CallContext
    ) -> concurrent.futures.Future[d.UpdateResponse]:
        assert ctx.deadline < math.inf and ctx.method == "/proto.DaemonService/PushUpdate"
        ctx.initial_metadata.append(("hostvisor-update-id", ctx.get("Hostvisor-Update-Id") or ""))

        def later() -> d.UpdateResponse:
            ctx.trailing_metadata.append(("note", "accepted"))
            return d.UpdateResponse(success=True, message=request.version)

        return pool.submit(later)

    with pool:
        async with connected([sync_unary_route(DaemonService.PushUpdate, handler)]) as channel:
            reply = await channel.call_with_metadata(
                DaemonService.PushUpdate,
                d.UpdateRequest(version="1.2.3"),
                metadata=(("hostvisor-update-id", "u-7"),),
                timeout_s=SAFETY_S,
            )
    assert reply.response == d.UpdateResponse(success=True, message="1.2.3")
    assert ("hostvisor-update-id", "u-7") in reply.initial_metadata
    assert ("note", "accepted") in reply.trailing_metadata


async def test_futures_completed_together_answer_each_call() -> None:
    """Calls whose futures another thread completes in one burst (as the ingest's writer
    does a batch) each get their own answer, and one failed among them its own status."""
    calls = 40
    lock = threading.Lock()
    waiting: list[tuple[str, concurrent.futures.Future[d.UpdateResponse]]] = []

    def handler(
        request: d.UpdateRequest, ctx: CallContext
    ) -> concurrent.futures.Future[d.UpdateResponse]:
        future: concurrent.futures.Future[d.UpdateResponse] = concurrent.futures.Future()
        with lock:
            waiting.append((request.version, future))
            if len(waiting) == calls:  # every call is in: complete them all at once
                threading.Thread(target=complete, args=(list(waiting),)).start()
        return future

    def complete(items: list[tuple[str, concurrent.futures.Future[d.UpdateResponse]]]) -> None:
        for version, future in items:
            if version == "7":
                future.set_exception(StatusError(StatusCode.ABORTED, "not 7"))
            else:
                future.set_result(d.UpdateResponse(success=True, message=version))

    answers: dict[str, object] = {}

    async def call(channel: Channel, version: str) -> None:
        try:
            reply = await channel.call(
                DaemonService.PushUpdate, d.UpdateRequest(version=version), timeout_s=SAFETY_S
            )
            answers[version] = reply.message
        except RemoteError as exc:
            answers[version] = exc.status

    route = sync_unary_route(DaemonService.PushUpdate, handler)
    async with connected([route]) as channel, trio.open_nursery() as nursery:
        for number in range(calls):
            nursery.start_soon(call, channel, str(number))
    assert answers == {str(n): StatusCode.ABORTED if n == 7 else str(n) for n in range(calls)}


@pytest.mark.parametrize("in_future", [False, True])
@pytest.mark.parametrize(
    ("error", "status", "details"),
    [
        (StatusError(StatusCode.NOT_FOUND, "no agent x"), StatusCode.NOT_FOUND, "no agent x"),
        (KeyError("oops"), StatusCode.INTERNAL, "internal error (KeyError)"),
    ],
)
async def test_errors_become_statuses(
    error: Exception,
    status: StatusCode,
    details: str,
    in_future: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A StatusError (raised, or set on the future) is the answer, with the trailing
    metadata; anything else answers INTERNAL and is logged."""

    def handler(request: d.AgentOperationRequest, ctx: CallContext) -> object:
        ctx.trailing_metadata.append(("why", "test"))
        if not in_future:
            raise error
        future: concurrent.futures.Future[object] = concurrent.futures.Future()
        future.set_exception(error)
        return future

    caplog.set_level(logging.ERROR, logger="transport.grpc")
    route = sync_unary_route(DaemonService.OperateAgent, handler)  # type: ignore[arg-type]
    async with connected([route]) as channel:
        with pytest.raises(RemoteError) as caught:
            await channel.call(DaemonService.OperateAgent, d.AgentOperationRequest(agent_id="x"))
    assert (caught.value.status, caught.value.details) == (status, details)
    assert bool(caplog.records) == (status is StatusCode.INTERNAL)


async def test_a_cancelled_call_cancels_its_future() -> None:
    """A client that gives up cancels the handler's future (a writer skips it)."""
    token = trio.lowlevel.current_trio_token()
    entered, cancelled = trio.Event(), trio.Event()
    future: concurrent.futures.Future[d.ListAgentsResponse] = concurrent.futures.Future()
    future.add_done_callback(lambda f: token.run_sync_soon(cancelled.set))

    def handler(request: d.ListAgentsRequest, ctx: CallContext) -> object:
        token.run_sync_soon(entered.set)
        return future

    route = sync_unary_route(DaemonService.ListAgents, handler)  # type: ignore[arg-type]
    async with connected([route]) as channel, trio.open_nursery() as nursery:
        nursery.start_soon(channel.call, DaemonService.ListAgents, d.ListAgentsRequest())
        await entered.wait()
        nursery.cancel_scope.cancel()
        await cancelled.wait()
    assert future.cancelled()


async def test_shutdown_with_a_call_in_flight_answers_it() -> None:
    """Cancelling the server while a call waits for its future: the server waits (grace)
    for the future, answers, and the thread ends."""
    entered = trio.Event()
    token = trio.lowlevel.current_trio_token()
    future: concurrent.futures.Future[d.ListAgentsResponse] = concurrent.futures.Future()

    def handler(request: d.ListAgentsRequest, ctx: CallContext) -> object:
        token.run_sync_soon(entered.set)
        return future

    route = sync_unary_route(DaemonService.ListAgents, handler)  # type: ignore[arg-type]
    got: list[d.ListAgentsResponse] = []
    server_scope = trio.CancelScope()

    async def run_server(task_status: trio.TaskStatus[tuple[str, ...]]) -> None:
        with server_scope:
            listeners = [Listener("127.0.0.1:0")]
            await serve_grpc_in_thread(
                [route], listeners, grace_s=SAFETY_S, task_status=task_status
            )

    async def call(channel: Channel) -> None:
        got.append(await channel.call(DaemonService.ListAgents, d.ListAgentsRequest()))

    with trio.fail_after(SAFETY_S):
        async with open_grpc_loop(), trio.open_nursery() as nursery:
            (address,) = await nursery.start(run_server)
            async with open_channel(address) as channel, trio.open_nursery() as calls:
                calls.start_soon(call, channel)
                await entered.wait()
                server_scope.cancel()  # the server stops while the call is in flight
                await trio.testing.wait_all_tasks_blocked()
                future.set_result(d.ListAgentsResponse(agents=[d.AgentInfo(id="late")]))
    assert [r.agents[0].id for r in got] == ["late"]
    assert _threads() == set()


async def test_a_busy_port_is_a_listen_error() -> None:
    """A busy port raises ListenError (and leaves no thread); duplicate routes and no
    listener raise ValueError."""
    route = sync_unary_route(DaemonService.ListAgents, list_agents)
    with trio.fail_after(SAFETY_S):
        async with serving([route]) as (address,):
            with pytest.raises(ListenError, match="cannot listen"):
                await serve_grpc_in_thread([route], [Listener("127.0.0.1:0"), Listener(address)])
    assert _threads() == set()
    with pytest.raises(ValueError, match="two routes"):
        await serve_grpc_in_thread([route, route], [Listener("127.0.0.1:0")])
    with pytest.raises(ValueError, match="listener"):
        await serve_grpc_in_thread([route], [])


async def test_mutual_tls_gives_the_peer_identities() -> None:
    """With a client CA, the handler sees the client certificate's names; a client
    without a certificate is refused."""
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("test-ca", ca_key, None)
    server_tls = ServerTls(
        _cert("manager.test", server_key, ("test-ca", ca_key)), _key_pem(server_key), ca
    )
    good = ClientTls(
        server_ca=ca,
        cert_chain=_cert("node-7", client_key, ("test-ca", ca_key)),
        private_key=_key_pem(client_key),
        server_name="manager.test",
    )
    seen: list[tuple[str, ...]] = []

    def handler(request: d.ListAgentsRequest, ctx: CallContext) -> d.ListAgentsResponse:
        seen.append(ctx.peer_identities)
        return d.ListAgentsResponse()

    route = sync_unary_route(DaemonService.ListAgents, handler)
    with trio.fail_after(SAFETY_S):
        async with (
            open_grpc_loop(),
            serving([route], [Listener("127.0.0.1:0", server_tls)]) as (addr,),
        ):
            async with open_channel(addr, tls=good) as channel:
                await channel.call(DaemonService.ListAgents, d.ListAgentsRequest())
            anonymous = ClientTls(server_ca=ca, server_name="manager.test")
            async with open_channel(addr, tls=anonymous) as channel:
                with pytest.raises(RemoteError) as caught:
                    await channel.call(DaemonService.ListAgents, d.ListAgentsRequest())
    assert seen == [("node-7",)]
    assert caught.value.status is StatusCode.UNAVAILABLE
