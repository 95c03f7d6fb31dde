"""The one place where Trio meets grpc.aio.

grpc.aio is asyncio code. It runs inside our Trio program on an asyncio loop that
trio-asyncio implements on top of Trio (:func:`open_grpc_loop`). Everything else in
``transport`` stays Trio code and never sees asyncio or a grpc type:

* Servers: :func:`serve_grpc` serves :class:`Route`\\ s, each a typed method descriptor (from
  the generated ``*_rpc`` modules) and a Trio coroutine. A handler gets the request and a
  :class:`CallContext`; it returns the response, or for a streaming method awaits ``send``
  for each message. It answers a non-OK status by raising :class:`~transport.StatusError`.
* Clients: :func:`open_channel` gives a :class:`Channel` whose :meth:`Channel.call` and
  :meth:`Channel.stream` are Trio coroutines; a non-OK answer raises
  :class:`~transport.RemoteError`.

Theory of operation. A handler runs as a Trio task through ``trio_as_aio``; a client call
runs as an asyncio task through ``aio_as_trio``. trio-asyncio links the two tasks'
cancellation: a Trio cancel scope around a client call cancels the asyncio task, which
makes grpc cancel the RPC on the wire; the server's grpc then cancels its asyncio handler
task, which cancels the handler's Trio task (it sees ``trio.Cancelled``). Every grpc object
is created while the asyncio loop runs (inside an asyncio task) and is closed in a shielded
``finally`` with a deadline before the loop closes; otherwise grpc's callbacks outlive the
loop ("Event loop is closed").
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeVar

import grpc
import trio
import trio_asyncio
from google.protobuf.message import Message

from ._errors import ListenError, RemoteError, StatusCode, StatusError, TransportError
from ._pb._methods import StreamMethod, UnaryMethod

__all__ = [
    "CLOSE_TIMEOUT_S",
    "CallContext",
    "Channel",
    "ClientTls",
    "Listener",
    "Metadata",
    "Reply",
    "ResponseStream",
    "Route",
    "Send",
    "ServerTls",
    "StreamHandler",
    "UnaryHandler",
    "open_channel",
    "open_grpc_loop",
    "serve_grpc",
    "stream_route",
    "unary_route",
]

logger = logging.getLogger("transport.grpc")

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
T = TypeVar("T")

Metadata = tuple[tuple[str, str], ...]
"""gRPC metadata as (key, value) pairs; keys are lower case (binary ``-bin`` keys are not
supported here)."""

CLOSE_TIMEOUT_S = 5.0
"""How long closing a channel, or a server beyond its grace period, may take."""


# --------------------------------------------------------------------------- the loop


@asynccontextmanager
async def open_grpc_loop() -> AsyncIterator[None]:
    """Run an asyncio loop on top of Trio, so that grpc.aio works in the body.

    Open it once, around everything that serves or calls gRPC (servers and channels must
    close before it does; :func:`serve_grpc` and :func:`open_channel` see to that).

    Raises:
        BaseException: An exception of the body, unwrapped from the exception groups
            trio-asyncio's nurseries wrap it in when it is the only one.
    """
    try:
        async with trio_asyncio.open_loop():
            yield
    except BaseExceptionGroup as group:
        only = _single_leaf(group)
        if only is None:
            raise
        raise only from None


def _single_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack += exc.exceptions
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else None


async def _in_asyncio(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn()`` as an asyncio task (grpc objects must be made and used there)."""

    async def run() -> T:
        return await fn()

    result: T = await trio_asyncio.aio_as_trio(run)()
    return result


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True, slots=True)
class ServerTls:
    """A server's certificate, and the CA its clients' certificates must chain to.

    Attributes:
        cert_chain: The server's certificate chain (PEM).
        private_key: The server's private key (PEM).
        client_ca: When set, every client must present a certificate signed by this CA
            (PEM); clients without one are refused during the handshake.
    """

    cert_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None


@dataclass(frozen=True, slots=True)
class ClientTls:
    """What a client trusts, and the certificate it presents.

    Attributes:
        server_ca: The CA the server's certificate must chain to (PEM); None: the system's.
        cert_chain: The client's certificate chain (PEM), for servers that require one.
        private_key: The client's private key (PEM).
        server_name: The name to verify in the server's certificate instead of the host
            part of the target (for servers reached by IP address).
    """

    server_ca: bytes | None = None
    cert_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_chain is None) != (self.private_key is None):
            raise ValueError("ClientTls: cert_chain and private_key go together")


def _status(code: Any) -> StatusCode:
    """grpc.StatusCode -> ours (UNKNOWN for anything unexpected)."""
    name = getattr(code, "name", "")
    return StatusCode[name] if name in StatusCode.__members__ else StatusCode.UNKNOWN


def _remote_error(exc: Any, method: str) -> RemoteError:
    return RemoteError(_status(exc.code()), str(exc.details() or ""), method=method)


# --------------------------------------------------------------------------- server


@dataclass(slots=True)
class CallContext:
    """What a handler knows about its call, and the metadata it answers with.

    Handlers may build one themselves in tests: nothing here refers to grpc.

    Attributes:
        method: The method's path, e.g. ``/proto.DaemonService/ListAgents``.
        peer: The client's address as grpc names it, e.g. ``ipv4:127.0.0.1:50412``.
        metadata: The request's metadata.
        deadline: The client's deadline on Trio's clock (``math.inf``: none).
        peer_identities: The names in the client's verified TLS certificate (its subject
            common name and subject alternative names); empty without a client certificate.
        initial_metadata: Sent before the response (handlers append to it before they
            return, or for a streaming method before the first message).
        trailing_metadata: Sent with the status, also when the handler raises.
    """

    method: str
    peer: str = ""
    metadata: Metadata = ()
    deadline: float = math.inf
    peer_identities: tuple[str, ...] = ()
    initial_metadata: list[tuple[str, str]] = field(default_factory=list)
    trailing_metadata: list[tuple[str, str]] = field(default_factory=list)

    def get(self, key: str) -> str | None:
        """The request metadata's last value for ``key`` (case-insensitive), or None."""
        key = key.lower()
        found = [value for k, value in self.metadata if k == key]
        return found[-1] if found else None


UnaryHandler = Callable[[Req, CallContext], Awaitable[Resp]]
"""A handler of a unary method: the request in, the response out."""

Send = Callable[[Resp], Awaitable[None]]
"""Sends one message of a stream; waits while the client is not reading (flow control)."""

StreamHandler = Callable[[Req, CallContext, Send[Resp]], Awaitable[None]]
"""A handler of a server-streaming method; the stream ends when it returns."""


@dataclass(frozen=True, slots=True)
class Route:
    """A method and its handler, made by :func:`unary_route` or :func:`stream_route`."""

    service: str
    name: str
    _build: Callable[[_Shutdown], Any] = field(repr=False)

    @property
    def path(self) -> str:
        """The method's path on the wire."""
        return f"/{self.service}/{self.name}"


class _Shutdown:
    """The cancel scopes of running stream handlers: a stream has no natural end, so the
    server cancels them when it stops instead of waiting out its grace period."""

    def __init__(self) -> None:
        self.streams: set[trio.CancelScope] = set()
        self.stopping = False

    def cancel_streams(self) -> None:
        self.stopping = True
        for scope in self.streams:
            scope.cancel()


def _context(
    method: str, context: Any, clock: Callable[[], float] = trio.current_time
) -> CallContext:
    """The handler's view of grpc's call context; the deadline on ``clock``."""
    remaining = context.time_remaining()
    metadata = tuple(
        (str(k), v if isinstance(v, str) else repr(v))
        for k, v in (context.invocation_metadata() or ())
    )
    return CallContext(
        method=method,
        peer=str(context.peer()),
        metadata=metadata,
        deadline=math.inf if remaining is None else clock() + remaining,
        peer_identities=_peer_identities(context),
    )


def _peer_identities(context: Any) -> tuple[str, ...]:
    """The verified client certificate's common name and subject alternative names.

    grpc fills the auth context only after the handshake verified the certificate against
    the server's client CA, so these names are trustworthy when present.
    """
    try:
        auth = context.auth_context() or {}
    except Exception:  # an insecure port has no auth context on some grpc versions
        return ()
    names: list[str] = []
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for raw in auth.get(key, ()):
            name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            if name and name not in names:
                names.append(name)
    return tuple(names)


def _leaf_status_error(exc: BaseException) -> StatusError | None:
    if isinstance(exc, StatusError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        only = _single_leaf(exc)
        return only if isinstance(only, StatusError) else None
    return None


async def _answer_error(context: Any, ctx: CallContext, exc: Exception) -> NoReturn:
    """Abort the call with the status a handler's exception stands for."""
    status_error = _leaf_status_error(exc)
    if status_error is None:
        logger.error("%s failed", ctx.method, exc_info=exc)
        status_error = StatusError(StatusCode.INTERNAL, f"internal error ({type(exc).__name__})")
    if ctx.trailing_metadata:
        context.set_trailing_metadata(tuple(ctx.trailing_metadata))
    await context.abort(grpc.StatusCode[status_error.status.name], status_error.details)
    raise AssertionError("unreachable: grpc's abort raises")  # pragma: no cover


def unary_route(method: UnaryMethod[Req, Resp], handler: UnaryHandler[Req, Resp]) -> Route:
    """Serve a unary method with a Trio coroutine.

    Args:
        method: The method, e.g. ``transport.DaemonService.ListAgents``.
        handler: ``await handler(request, context)`` returns the response; it raises
            :class:`~transport.StatusError` to answer a non-OK status. Any other exception
            answers ``INTERNAL`` (and is logged).

    Returns:
        The route, for :func:`serve_grpc`.
    """

    def build(_: _Shutdown) -> Any:
        async def on_call(request: Req, context: Any) -> Resp:
            ctx = _context(method.path, context)
            try:
                response: Resp = await trio_asyncio.trio_as_aio(handler)(request, ctx)
            except Exception as exc:
                await _answer_error(context, ctx, exc)
            if ctx.initial_metadata:
                await context.send_initial_metadata(tuple(ctx.initial_metadata))
            if ctx.trailing_metadata:
                context.set_trailing_metadata(tuple(ctx.trailing_metadata))
            return response

        return grpc.unary_unary_rpc_method_handler(
            on_call,
            request_deserializer=method.request_type.FromString,
            response_serializer=method.response_type.SerializeToString,
        )

    return Route(method.service, method.name, build)


def stream_route(method: StreamMethod[Req, Resp], handler: StreamHandler[Req, Resp]) -> Route:
    """Serve a server-streaming method with a Trio coroutine.

    Args:
        method: The method, e.g. ``transport.HostvisorService.FollowAgentLogs``.
        handler: ``await handler(request, context, send)`` calls ``await send(message)``
            for each message; the stream ends (OK) when it returns. It raises
            :class:`~transport.StatusError` to end with a non-OK status. When the server
            stops, a running stream handler is cancelled and the client gets
            ``UNAVAILABLE``.

    Returns:
        The route, for :func:`serve_grpc`.
    """

    def build(shutdown: _Shutdown) -> Any:
        async def run(request: Req, ctx: CallContext, context: Any) -> None:
            pending_initial = True

            async def send(message: Resp) -> None:
                nonlocal pending_initial
                if pending_initial and ctx.initial_metadata:
                    await trio_asyncio.aio_as_trio(context.send_initial_metadata)(
                        tuple(ctx.initial_metadata)
                    )
                pending_initial = False
                await trio_asyncio.aio_as_trio(context.write)(message)

            with trio.CancelScope() as scope:
                if shutdown.stopping:
                    scope.cancel()
                shutdown.streams.add(scope)
                try:
                    await handler(request, ctx, send)
                finally:
                    shutdown.streams.discard(scope)
            if scope.cancelled_caught:
                raise StatusError(StatusCode.UNAVAILABLE, "the server is shutting down")

        async def on_call(request: Req, context: Any) -> None:
            ctx = _context(method.path, context)
            try:
                await trio_asyncio.trio_as_aio(run)(request, ctx, context)
            except Exception as exc:
                await _answer_error(context, ctx, exc)
            if ctx.trailing_metadata:
                context.set_trailing_metadata(tuple(ctx.trailing_metadata))

        return grpc.unary_stream_rpc_method_handler(
            on_call,
            request_deserializer=method.request_type.FromString,
            response_serializer=method.response_type.SerializeToString,
        )

    return Route(method.service, method.name, build)


@dataclass(frozen=True, slots=True)
class Listener:
    """An address a server listens on.

    Attributes:
        address: ``host:port`` (port 0: any free port) or ``unix:/path/to/socket``.
        tls: The server's TLS settings; None: plaintext.
    """

    address: str
    tls: ServerTls | None = None


def _credentials(tls: ServerTls) -> Any:
    return grpc.ssl_server_credentials(
        [(tls.private_key, tls.cert_chain)],
        root_certificates=tls.client_ca,
        require_client_auth=tls.client_ca is not None,
    )


def _bound(address: str, port: int) -> str:
    if address.startswith("unix:"):
        return address
    host = address.rpartition(":")[0]
    return f"{host}:{port}"


async def serve_grpc(
    routes: Iterable[Route],
    listeners: Sequence[Listener],
    *,
    options: Sequence[tuple[str, int | str]] = (),
    grace_s: float = 2.0,
    task_status: trio.TaskStatus[tuple[str, ...]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve gRPC until cancelled. Needs :func:`open_grpc_loop` around it.

    Methods without a route answer ``UNIMPLEMENTED``. When cancelled, the server stops
    accepting calls, cancels its streams, gives unary calls ``grace_s`` to finish, cancels
    what remains, and returns only when everything is closed.

    Args:
        routes: What to serve (at most one route per method).
        listeners: Where to listen (at least one).
        options: grpc channel arguments, e.g. ``("grpc.keepalive_permit_without_calls",
            1)`` or ``("grpc.http2.min_ping_interval_without_data_ms", 20_000)``.
            ``grpc.so_reuseport`` is 0 unless given: a busy port is a :class:`ListenError`.
        grace_s: How long unary calls in flight may finish when the server stops.
        task_status: Started with the bound addresses, in ``listeners`` order
            (``host:port`` with the real port, or the ``unix:`` address as given).

    Raises:
        ListenError: An address could not be bound.
        ValueError: Two routes for one method, or no listener.
    """
    if not listeners:
        raise ValueError("serve_grpc needs at least one listener")
    shutdown = _Shutdown()
    by_service: dict[str, dict[str, Any]] = {}
    for route in routes:
        methods = by_service.setdefault(route.service, {})
        if route.name in methods:
            raise ValueError(f"two routes for {route.path}")
        methods[route.name] = route._build(shutdown)

    # grpc sets SO_REUSEPORT by default: a second daemon would then share the port
    # silently instead of failing to bind.
    arguments = {"grpc.so_reuseport": 0, **dict(options)}

    async def start() -> tuple[Any, tuple[str, ...]]:
        server = grpc.aio.server(options=list(arguments.items()))
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(s, m) for s, m in by_service.items()]
        )
        bound: list[str] = []
        try:
            for listener in listeners:
                try:
                    if listener.tls is None:
                        port = server.add_insecure_port(listener.address)
                    else:
                        credentials = _credentials(listener.tls)
                        port = server.add_secure_port(listener.address, credentials)
                except RuntimeError as exc:
                    raise ListenError(f"cannot listen on {listener.address!r}: {exc}") from exc
                if port == 0 and not listener.address.startswith("unix:"):
                    raise ListenError(f"cannot listen on {listener.address!r}")
                bound.append(_bound(listener.address, port))
            await server.start()
        except BaseException:
            await server.stop(None)  # releases the addresses already bound
            raise
        return server, tuple(bound)

    server, bound = await _in_asyncio(start)
    try:
        task_status.started(bound)
        await trio.sleep_forever()
    finally:
        shutdown.cancel_streams()
        with trio.move_on_after(grace_s + CLOSE_TIMEOUT_S, shield=True) as scope:
            await _in_asyncio(lambda: server.stop(grace_s))
        if scope.cancelled_caught:
            logger.warning("the gRPC server did not stop within %.1f s", grace_s + CLOSE_TIMEOUT_S)


# --------------------------------------------------------------------------- client


@dataclass(frozen=True, slots=True)
class Reply(Generic[Resp]):
    """A unary call's response with the metadata that came with it.

    Attributes:
        response: The response message.
        initial_metadata: The server's initial metadata.
        trailing_metadata: The server's trailing metadata.
    """

    response: Resp
    initial_metadata: Metadata
    trailing_metadata: Metadata


def _metadata(raw: Any) -> Metadata:
    if raw is None:
        return ()
    return tuple((str(k), v if isinstance(v, str) else repr(v)) for k, v in raw)


class ResponseStream(Generic[Resp]):
    """The messages of a server-streaming call, as a Trio async iterator.

    Iterate with ``async for``; it ends when the server ends the stream with OK and raises
    :class:`~transport.RemoteError` when it ends with another status. Cancelling a read
    ends the stream. Made by :meth:`Channel.stream`, which cancels the call on exit.
    """

    def __init__(self, call: Any, path: str) -> None:
        self._call = call
        self._path = path
        self._messages: Any = trio_asyncio.aio_as_trio(call).__aiter__()

    def __aiter__(self) -> ResponseStream[Resp]:
        return self

    async def __anext__(self) -> Resp:
        try:
            message: Resp = await self._messages.__anext__()
        except grpc.aio.AioRpcError as exc:
            raise _remote_error(exc, self._path) from None
        return message

    async def initial_metadata(self) -> Metadata:
        """The server's initial metadata (waits until it arrives)."""
        try:
            return _metadata(await _in_asyncio(self._call.initial_metadata))
        except grpc.aio.AioRpcError as exc:
            raise _remote_error(exc, self._path) from None

    async def _close(self) -> None:
        self._call.cancel()
        await self._messages.aclose()


class Channel:
    """A connection to one server; make it with :func:`open_channel`."""

    def __init__(self, channel: Any, target: str) -> None:
        self._channel = channel
        self.target = target
        """The address it connects to."""

    async def call_with_metadata(
        self,
        method: UnaryMethod[Req, Resp],
        request: Req,
        *,
        timeout_s: float | None = None,
        metadata: Metadata = (),
        wait_for_ready: bool = False,
    ) -> Reply[Resp]:
        """Call a unary method; the response and the server's metadata.

        Cancelling the calling Trio task cancels the call on the wire.

        Args:
            method: The method, e.g. ``transport.DaemonService.ListAgents``.
            request: The request message.
            timeout_s: The call's deadline, from now; None: none.
            metadata: Request metadata.
            wait_for_ready: Wait for the server to become reachable (within the
                deadline) instead of failing at once with ``UNAVAILABLE``.

        Returns:
            The reply.

        Raises:
            RemoteError: The call ended with a non-OK status (``UNAVAILABLE``: the server
                could not be reached; ``DEADLINE_EXCEEDED``: ``timeout_s`` passed).
            TransportError: The channel is closed.
        """
        multi = self._channel.unary_unary(
            method.path,
            request_serializer=method.request_type.SerializeToString,
            response_deserializer=method.response_type.FromString,
        )

        async def run() -> Reply[Resp]:
            call = multi(
                request,
                timeout=timeout_s,
                metadata=metadata or None,
                wait_for_ready=wait_for_ready,
            )
            response: Resp = await call
            return Reply(
                response,
                _metadata(await call.initial_metadata()),
                _metadata(await call.trailing_metadata()),
            )

        try:
            return await _in_asyncio(run)
        except grpc.aio.AioRpcError as exc:
            raise _remote_error(exc, method.path) from None
        except grpc.aio.UsageError as exc:  # e.g. the channel is closed
            raise TransportError(f"{method.path}: {exc}") from exc

    async def call(
        self,
        method: UnaryMethod[Req, Resp],
        request: Req,
        *,
        timeout_s: float | None = None,
        metadata: Metadata = (),
        wait_for_ready: bool = False,
    ) -> Resp:
        """Call a unary method; its response. See :meth:`call_with_metadata`.

        Raises:
            RemoteError: The call ended with a non-OK status.
        """
        reply = await self.call_with_metadata(
            method,
            request,
            timeout_s=timeout_s,
            metadata=metadata,
            wait_for_ready=wait_for_ready,
        )
        return reply.response

    @asynccontextmanager
    async def stream(
        self,
        method: StreamMethod[Req, Resp],
        request: Req,
        *,
        timeout_s: float | None = None,
        metadata: Metadata = (),
    ) -> AsyncIterator[ResponseStream[Resp]]:
        """Call a server-streaming method; the call is cancelled when the block exits.

        Args:
            method: The method, e.g. ``transport.HostvisorService.FollowAgentLogs``.
            request: The request message.
            timeout_s: The whole stream's deadline, from now; None: none.
            metadata: Request metadata.

        Yields:
            The stream of responses.

        Raises:
            RemoteError: The call ended with a non-OK status (while iterating).
        """
        multi = self._channel.unary_stream(
            method.path,
            request_serializer=method.request_type.SerializeToString,
            response_deserializer=method.response_type.FromString,
        )

        async def start() -> Any:
            return multi(request, timeout=timeout_s, metadata=metadata or None)

        try:
            call = await _in_asyncio(start)
        except grpc.aio.UsageError as exc:
            raise TransportError(f"{method.path}: {exc}") from exc
        responses: ResponseStream[Resp] = ResponseStream(call, method.path)
        try:
            yield responses
        finally:
            with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                await responses._close()


def _channel_credentials(tls: ClientTls) -> Any:
    return grpc.ssl_channel_credentials(
        root_certificates=tls.server_ca,
        private_key=tls.private_key,
        certificate_chain=tls.cert_chain,
    )


@asynccontextmanager
async def open_channel(
    target: str,
    *,
    tls: ClientTls | None = None,
    options: Sequence[tuple[str, int | str]] = (),
) -> AsyncIterator[Channel]:
    """Open a channel to a server; it is closed when the block exits.

    Needs :func:`open_grpc_loop` around it. Connecting is lazy: the first call connects.

    Args:
        target: ``host:port`` or ``unix:/path/to/socket``.
        tls: TLS settings; None: plaintext.
        options: grpc channel arguments, e.g. ``("grpc.keepalive_time_ms", 30_000)``.

    Yields:
        The channel.
    """
    arguments = list(options)
    if tls is not None and tls.server_name is not None:
        arguments.append(("grpc.ssl_target_name_override", tls.server_name))

    async def make() -> Any:
        if tls is None:
            return grpc.aio.insecure_channel(target, options=arguments)
        return grpc.aio.secure_channel(target, _channel_credentials(tls), options=arguments)

    raw = await _in_asyncio(make)
    try:
        yield Channel(raw, target)
    finally:
        with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
            await _in_asyncio(raw.close)
