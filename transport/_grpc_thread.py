"""A gRPC server on a real asyncio loop in its own thread, owned by a Trio task.

:func:`transport.serve_grpc` runs grpc.aio on trio-asyncio's emulated loop and each call
as a Trio task: convenient, but at a fleet's rate of calls the emulation and Trio's
scheduling cost more CPU than the work (about 1.1 ms per call). A server whose handlers
only validate a request and hand it to a writer thread does not need Trio at all:
:func:`serve_grpc_in_thread` serves :class:`SyncRoute`\\ s whose handlers are plain
synchronous functions, on a stock ``asyncio`` loop in a thread of its own.

Theory of operation
-------------------
* A handler is ``handler(request, ctx) -> response | concurrent.futures.Future``. It runs
  on the server thread's loop, so it must be quick and must not block: it validates, and
  hands slow work (the database) to another thread, returning a future. The bridge awaits
  the future (as ``asyncio.wrap_future`` would, but one wake-up of the loop serves every
  future completed meanwhile: :class:`_Handback`): the loop serves other calls meanwhile. When the
  client cancels the call, the future is cancelled (a writer that has not taken it yet
  leaves it out; see ``Future.set_running_or_notify_cancel``).
* Errors: :class:`~transport.StatusError` raised by the handler, or set on its future,
  answers that status; anything else answers ``INTERNAL`` and is logged. The handler's
  ``ctx.trailing_metadata`` goes with every answer; ``ctx.initial_metadata`` with a
  successful one. Handlers may append to them until the future completes.
* ``ctx.deadline`` is on :func:`time.monotonic`'s clock here (Trio's clock is not
  readable from another thread).
* Lifetime: the owning Trio task starts the thread, which makes the loop, binds every
  listener and starts the server; the task reports the bound addresses (or raises
  :class:`~transport.ListenError`). When the task is cancelled it asks the loop to stop
  the server (new calls refused, calls in flight given ``grace_s``, then cancelled), and
  joins the thread: nothing is left running when it returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn, TypeVar

import grpc
import trio
from google.protobuf.message import Message

from ._bridge import (
    CLOSE_TIMEOUT_S,
    CallContext,
    Listener,
    _answer_error,
    _bound,
    _context,
    _credentials,
)
from ._errors import ListenError
from ._pb._methods import UnaryMethod

__all__ = ["SyncRoute", "SyncUnaryHandler", "serve_grpc_in_thread", "sync_unary_route"]

logger = logging.getLogger("transport.grpc")

T = TypeVar("T")
Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)

SyncUnaryHandler = Callable[[Req, CallContext], "Resp | concurrent.futures.Future[Resp]"]
"""A synchronous handler: the response, or a future of it (see the module documentation)."""


@dataclass(frozen=True, slots=True)
class SyncRoute:
    """A method and its synchronous handler, made by :func:`sync_unary_route`."""

    service: str
    name: str
    handler: Any = field(repr=False)
    """grpc's method handler."""

    @property
    def path(self) -> str:
        """The method's path on the wire."""
        return f"/{self.service}/{self.name}"


def sync_unary_route(
    method: UnaryMethod[Req, Resp], handler: SyncUnaryHandler[Req, Resp]
) -> SyncRoute:
    """Serve a unary method with a synchronous function (see the module documentation).

    Args:
        method: The method, e.g. ``transport.ManagerService.Heartbeat``.
        handler: ``handler(request, ctx)`` returns the response or a
            ``concurrent.futures.Future`` of it; it raises (or sets on the future)
            :class:`~transport.StatusError` to answer a non-OK status. Any other exception
            answers ``INTERNAL`` (and is logged).

    Returns:
        The route, for :func:`serve_grpc_in_thread`.
    """
    path = method.path

    async def on_call(request: Req, context: Any) -> Resp:
        ctx = _context(path, context, time.monotonic)
        future: concurrent.futures.Future[Resp] | None = None
        try:
            result = handler(request, ctx)
            if isinstance(result, concurrent.futures.Future):
                future = result
                result = await _Handback.of(asyncio.get_running_loop()).wait(future)
        except Exception as exc:
            await _answer_error(context, ctx, exc)
        finally:
            if future is not None and not future.done():
                future.cancel()  # the call was cancelled: a writer not yet at it skips it
        if ctx.initial_metadata:
            await context.send_initial_metadata(tuple(ctx.initial_metadata))
        if ctx.trailing_metadata:
            context.set_trailing_metadata(tuple(ctx.trailing_metadata))
        return result

    grpc_handler = grpc.unary_unary_rpc_method_handler(
        on_call,
        request_deserializer=method.request_type.FromString,
        response_serializer=method.response_type.SerializeToString,
    )
    return SyncRoute(method.service, method.name, grpc_handler)


class _Handback:
    """Futures completed by other threads, handed to the loop in bursts.

    ``asyncio.wrap_future`` wakes the loop once per completed future (a byte written to
    its self-pipe, a system call on each side); a writer that completes a batch of a few
    hundred calls at once would wake it a few hundred times. Here a completion queues the
    pair (loop future, done future) and wakes the loop only when the queue was empty; the
    loop then settles everything queued in one callback.
    """

    _by_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Handback]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._done: list[tuple[asyncio.Future[Any], concurrent.futures.Future[Any]]] = []

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Handback:
        """The loop's hand-back (made on first use, in the loop's thread)."""
        handback = cls._by_loop.get(loop)
        if handback is None:
            handback = cls._by_loop[loop] = cls(loop)
        return handback

    async def wait(self, future: concurrent.futures.Future[T]) -> T:
        """``await asyncio.wrap_future(future)``, with the wake-ups shared (see above)."""
        waiter: asyncio.Future[T] = self._loop.create_future()
        future.add_done_callback(lambda done: self._completed(waiter, done))
        return await waiter

    def _completed(self, waiter: asyncio.Future[Any], done: concurrent.futures.Future[Any]) -> None:
        """In the completing thread: queue the pair, and wake the loop if it was empty."""
        with self._lock:
            self._done.append((waiter, done))
            if len(self._done) > 1:
                return
        try:
            self._loop.call_soon_threadsafe(self._settle)
        except RuntimeError:  # pragma: no cover - the loop closed: nobody waits any more
            pass

    def _settle(self) -> None:
        """In the loop: give each waiter its future's outcome."""
        with self._lock:
            done, self._done = self._done, []
        for waiter, future in done:
            if waiter.done():  # the call was cancelled meanwhile
                continue
            if future.cancelled():
                waiter.cancel()
            elif (error := future.exception()) is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(future.result())


class _ServerThread:
    """The server thread's state, shared with the owning Trio task."""

    def __init__(
        self,
        handlers: list[Any],
        listeners: Sequence[Listener],
        arguments: dict[str, int | str],
        grace_s: float,
    ) -> None:
        self.handlers = handlers
        self.listeners = listeners
        self.arguments = arguments
        self.grace_s = grace_s
        self.started: concurrent.futures.Future[tuple[str, ...]] = concurrent.futures.Future()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_requested: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.main, name="grpc-server", daemon=True)

    def main(self) -> None:
        # Not asyncio.new_event_loop(): trio-asyncio patches it to make its emulated loop
        # (a Trio run in this thread), which would cost what this module saves.
        loop = asyncio.SelectorEventLoop()
        try:
            loop.run_until_complete(self.serve(loop))
        except BaseException as exc:  # pragma: no cover - a defect of this module
            logger.error("the gRPC server thread failed", exc_info=exc)
            if not self.started.done():
                self.started.set_exception(exc)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def serve(self, loop: asyncio.AbstractEventLoop) -> None:
        server = grpc.aio.server(options=list(self.arguments.items()))
        server.add_generic_rpc_handlers(self.handlers)
        try:
            bound = [self.bind(server, listener) for listener in self.listeners]
            await server.start()
        except BaseException as exc:
            await server.stop(None)  # releases the addresses already bound
            self.started.set_exception(exc)
            return
        self.stop_requested = asyncio.Event()
        self.loop = loop
        self.started.set_result(tuple(bound))
        await self.stop_requested.wait()
        try:
            await asyncio.wait_for(server.stop(self.grace_s), self.grace_s + CLOSE_TIMEOUT_S)
        except TimeoutError:
            logger.warning("the gRPC server did not stop in %.1f s", self.grace_s + CLOSE_TIMEOUT_S)

    @staticmethod
    def bind(server: Any, listener: Listener) -> str:
        try:
            if listener.tls is None:
                port = server.add_insecure_port(listener.address)
            else:
                port = server.add_secure_port(listener.address, _credentials(listener.tls))
        except RuntimeError as exc:
            raise ListenError(f"cannot listen on {listener.address!r}: {exc}") from exc
        if port == 0 and not listener.address.startswith("unix:"):
            raise ListenError(f"cannot listen on {listener.address!r}")
        return _bound(listener.address, port)

    def request_stop(self) -> None:
        """Ask the loop to stop the server (from any thread; once it is serving)."""
        loop, event = self.loop, self.stop_requested
        if loop is not None and event is not None:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # pragma: no cover - the loop closed already
                pass


async def serve_grpc_in_thread(
    routes: Iterable[SyncRoute],
    listeners: Sequence[Listener],
    *,
    options: Sequence[tuple[str, int | str]] = (),
    grace_s: float = 2.0,
    task_status: trio.TaskStatus[tuple[str, ...]] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve synchronous routes on an asyncio loop in a thread until cancelled.

    Needs no :func:`~transport.open_grpc_loop`. Methods without a route answer
    ``UNIMPLEMENTED``. When cancelled, the server stops accepting calls, gives calls in
    flight ``grace_s`` to finish, cancels what remains, and the thread is joined.

    Args:
        routes: What to serve (at most one route per method).
        listeners: Where to listen (at least one).
        options: grpc channel arguments. ``grpc.so_reuseport`` is 0 unless given: a busy
            port is a :class:`~transport.ListenError`.
        grace_s: How long calls in flight may finish when the server stops.
        task_status: Started with the bound addresses, in ``listeners`` order.

    Raises:
        ListenError: An address could not be bound.
        ValueError: Two routes for one method, or no listener.
    """
    if not listeners:
        raise ValueError("serve_grpc_in_thread needs at least one listener")
    by_service: dict[str, dict[str, Any]] = {}
    for route in routes:
        methods = by_service.setdefault(route.service, {})
        if route.name in methods:
            raise ValueError(f"two routes for {route.path}")
        methods[route.name] = route.handler
    handlers = [grpc.method_handlers_generic_handler(s, m) for s, m in by_service.items()]
    server = _ServerThread(handlers, listeners, {"grpc.so_reuseport": 0, **dict(options)}, grace_s)
    server.thread.start()
    try:
        bound = await trio.to_thread.run_sync(server.started.result)
        task_status.started(bound)
        await trio.sleep_forever()
    finally:
        server.request_stop()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(server.thread.join)
