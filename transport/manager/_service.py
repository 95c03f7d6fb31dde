"""The Manager's gRPC service for daemons: ManagerService and SyncAgentStates. IO.

Theory of operation
-------------------
:func:`manager_routes` gives :func:`~transport.serve_grpc` four routes, the methods the
original Manager serves on its port 9090: ``manager.ManagerService`` RegisterNode,
Heartbeat and ReportMetrics, and ``proto.DaemonService/SyncAgentStates``. Every other
method of ``proto.DaemonService`` has no route, so the server answers ``UNIMPLEMENTED``
as the original does. Each call goes through the same steps:

1. **Validate** (:mod:`._validate`): a bad request answers ``INVALID_ARGUMENT`` naming
   the field (our daemon drops such a report and counts it; retrying cannot help).
2. **Authorize**: with ``bind_node_identity`` the request's ``node_id`` must be one of
   the names of the client's verified certificate (``CallContext.peer_identities``), or
   the call answers ``PERMISSION_DENIED``: a certificate is valid for its own node only.
3. **Store**: every write goes through the group commit (:mod:`._ingest`): RegisterNode
   (an upsert, with the port the daemon announced in the ``hostvisor-grpc-port``
   metadata), Heartbeat, ReportMetrics and SyncAgentStates (the whole list, applied in
   the batch's one transaction). The call is answered once its batch is committed.

The handlers are synchronous functions served by :func:`transport._grpc_thread.
serve_grpc_in_thread` on the gRPC server's own thread: steps 1 and 2 run there (they are
cheap), and a handler returns the future of its answer, which the writer thread completes
(:meth:`_Service.then` maps its result to the response, or its failure to a status).

**Unknown nodes.** A heartbeat of an unknown node creates it (hostname and the like
``unknown``, as the original does, so that original daemons reappear after a Manager
lost its database) and answers ``success`` with the trailing metadata
``hostvisor-register: 1``, which makes our daemon register again at once (an original
daemon ignores it). ReportMetrics and SyncAgentStates of an unknown node answer
``NOT_FOUND`` "node X is not registered" with the same metadata; our daemon registers and
sends them again.

**Console events.** With an :class:`~._events.EventHub`, a registration (or a heartbeat
that created its node) publishes ``node`` online, any other heartbeat lets the hub say a
node it reported offline is back, and each stored SyncAgentStates is handed to
:meth:`~._events.EventHub.agents_reported`, which publishes the node's agents when their
states changed. The hub never waits (it may be called from any thread), so the console
costs the ingest nothing.

**Failures** map to statuses our daemon knows what to do with
(:mod:`transport.daemon._retry`): the database failing, or the Manager shutting down,
answers ``UNAVAILABLE`` (reconnect, keep the report); a full ingest queue
``RESOURCE_EXHAUSTED`` (retry with backoff); a defect ``INTERNAL`` (logged). Calls and
refusals are counted in :meth:`Ingest.statistics <._ingest.Ingest.statistics>`.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from transport import (
    CallContext,
    DaemonService,
    ManagerService,
    StatusCode,
    StatusError,
    daemon_pb2,
    manager_pb2,
)
from transport._grpc_thread import SyncRoute, sync_unary_route
from transport.daemon._retry import REGISTER_METADATA_KEY

from ._errors import StoreError
from ._ingest import Ingest, IngestError, OverloadedError, ShuttingDownError
from ._validate import (
    DEFAULT_LIMITS,
    GRPC_PORT_METADATA_KEY,
    Limits,
    heartbeat_request,
    metrics_request,
    registration_request,
    states_request,
)

if TYPE_CHECKING:
    from transport import AgentStateRecord

__all__ = ["EventSink", "manager_routes", "not_registered"]

logger = logging.getLogger("hostvisor.manager.grpc")

T = TypeVar("T")
R = TypeVar("R")
Answer = concurrent.futures.Future


class EventSink(Protocol):
    """What the service tells the console (an :class:`~._events.EventHub`, or a gRPC
    worker's link that forwards the calls to the main process's hub)."""

    def node_status(self, node_id: str, status: str) -> None:
        """A node's status changed (``online``)."""

    def node_seen(self, node_id: str) -> None:
        """A heartbeat of a known node was stored."""

    def agents_reported(self, node_id: str, states: Sequence[AgentStateRecord]) -> object:
        """A node's SyncAgentStates was stored."""


def not_registered(node_id: str, ctx: CallContext) -> StatusError:
    """``NOT_FOUND`` for a node the Manager does not know, asking our daemon to register.

    Args:
        node_id: The node.
        ctx: The call (the metadata is added to its trailing metadata).

    Returns:
        The error to raise.
    """
    ctx.trailing_metadata.append((REGISTER_METADATA_KEY, "1"))
    return StatusError(StatusCode.NOT_FOUND, f"node {node_id} is not registered")


class _Service:
    """The handlers; see the module documentation."""

    def __init__(
        self,
        ingest: Ingest,
        *,
        bind_node_identity: bool,
        limits: Limits,
        events: EventSink | None = None,
    ) -> None:
        self.events = events
        self.ingest = ingest
        self.bind_node_identity = bind_node_identity
        self.limits = limits

    def authorize(self, node_id: str, ctx: CallContext) -> None:
        """Refuse a node id that the client's certificate does not name (when bound)."""
        if not self.bind_node_identity or node_id in ctx.peer_identities:
            return
        names = ", ".join(ctx.peer_identities) or "none: no client certificate"
        raise StatusError(
            StatusCode.PERMISSION_DENIED,
            f"the client certificate is not valid for node {node_id} (it names {names})",
        )

    def refusal(self, method: str, exc: Exception) -> Exception:
        """Count a failed call; the exception to answer it with (a StatusError, or the
        defect itself, which the bridge logs and answers INTERNAL)."""
        if isinstance(exc, StatusError):
            self.ingest.count_refused(exc.status)
            return exc
        if isinstance(exc, StoreError | IngestError | OverloadedError | ShuttingDownError):
            status = _status_of(exc)
            self.ingest.count_refused(status)
            if isinstance(exc, StoreError):
                logger.warning("%s: the database failed: %s", method, exc)
            error = StatusError(status, str(exc))
            error.__cause__ = exc
            return error
        self.ingest.count_refused(StatusCode.INTERNAL)
        return exc

    def answer(self, method: str, call: Callable[[], Answer[T]]) -> Answer[T]:
        """Run a handler's body: count the call and turn failures into statuses."""
        self.ingest.count_call(method)
        try:
            return call()
        except Exception as exc:
            error = self.refusal(method, exc)
            if error is exc:
                raise
            raise error from exc

    def then(self, method: str, future: Answer[R], respond: Callable[[R], T]) -> Answer[T]:
        """The future of ``respond(result)`` once ``future`` completes (in the writer
        thread); its failures become statuses. Cancelling the answer (the client gave
        up) cancels ``future``."""
        answer: _Answer[T] = _Answer(future)

        def settle(done: Answer[R]) -> None:
            answer.release()
            if done.cancelled() or answer.done():
                answer.cancel()
                return
            try:
                response = respond(done.result())
            except Exception as exc:
                _settle(answer.set_exception, self.refusal(method, exc))
            else:
                _settle(answer.set_result, response)

        future.add_done_callback(settle)
        return answer

    def seen(self, node_id: str, *, created: bool) -> None:
        """Tell the console a heartbeat was stored (a node it created is online now)."""
        if self.events is None:
            return
        if created:
            self.events.node_status(node_id, "online")
        else:
            self.events.node_seen(node_id)

    # --- handlers ---------------------------------------------------------------------------

    def register(
        self, request: manager_pb2.RegisterNodeRequest, ctx: CallContext
    ) -> Answer[manager_pb2.RegisterNodeResponse]:
        def call() -> Answer[manager_pb2.RegisterNodeResponse]:
            reg = registration_request(
                request, grpc_port=ctx.get(GRPC_PORT_METADATA_KEY), limits=self.limits
            )
            self.authorize(reg.node.node_id, ctx)
            stored = self.ingest.submit_registration(reg.node, reg.grpc_port)
            return self.then("RegisterNode", stored, respond)

        def respond(node: Any) -> manager_pb2.RegisterNodeResponse:
            logger.debug("node %s registered (%s)", node.node_id, node.ip or "no ip")
            if self.events is not None:
                self.events.node_status(node.node_id, "online")
            return manager_pb2.RegisterNodeResponse(success=True, message="registered")

        return self.answer("RegisterNode", call)

    def heartbeat(
        self, request: manager_pb2.HeartbeatRequest, ctx: CallContext
    ) -> Answer[manager_pb2.HeartbeatResponse]:
        def call() -> Answer[manager_pb2.HeartbeatResponse]:
            node_id = heartbeat_request(request, limits=self.limits)
            self.authorize(node_id, ctx)
            return self.then(
                "Heartbeat", self.ingest.submit_heartbeat(node_id), lambda c: respond(node_id, c)
            )

        def respond(node_id: str, created: bool) -> manager_pb2.HeartbeatResponse:
            self.seen(node_id, created=created)
            if created:
                logger.info("node %s was unknown: created from its heartbeat", node_id)
                ctx.trailing_metadata.append((REGISTER_METADATA_KEY, "1"))
                message = f"node {node_id} was not registered: created; register again"
                return manager_pb2.HeartbeatResponse(success=True, message=message)
            return manager_pb2.HeartbeatResponse(success=True, message="ok")

        return self.answer("Heartbeat", call)

    def report(
        self, request: manager_pb2.ReportMetricsRequest, ctx: CallContext
    ) -> Answer[manager_pb2.ReportMetricsResponse]:
        def call() -> Answer[manager_pb2.ReportMetricsResponse]:
            node_id, points = metrics_request(request, limits=self.limits)
            self.authorize(node_id, ctx)

            def respond(inserted: int | None) -> manager_pb2.ReportMetricsResponse:
                if inserted is None:
                    raise not_registered(node_id, ctx)
                message = f"stored {inserted} of {len(points)} metrics"
                return manager_pb2.ReportMetricsResponse(success=True, message=message)

            return self.then("ReportMetrics", self.ingest.submit_report(node_id, points), respond)

        return self.answer("ReportMetrics", call)

    def sync(
        self, request: daemon_pb2.SyncAgentStatesRequest, ctx: CallContext
    ) -> Answer[daemon_pb2.SyncAgentStatesResponse]:
        def call() -> Answer[daemon_pb2.SyncAgentStatesResponse]:
            node_id, states = states_request(request, limits=self.limits)
            self.authorize(node_id, ctx)

            def respond(count: int | None) -> daemon_pb2.SyncAgentStatesResponse:
                if count is None:
                    raise not_registered(node_id, ctx)
                if self.events is not None:
                    self.events.agents_reported(node_id, states)
                message = f"synced {len(states)} agents"
                return daemon_pb2.SyncAgentStatesResponse(success=True, message=message)

            return self.then("SyncAgentStates", self.ingest.submit_sync(node_id, states), respond)

        return self.answer("SyncAgentStates", call)


class _Answer(concurrent.futures.Future[T]):
    """A handler's answer to the future of its write: cancelling it (the client gave up)
    cancels the write, which the writer then leaves out if it has not taken it yet.

    It holds the write only until :meth:`release` (the write completed): the write's
    callback holds the answer, so holding the write for longer would make a reference
    cycle per call, garbage that only the cycle collector frees, and its full collections
    stall every call in flight.
    """

    def __init__(self, write: concurrent.futures.Future[Any]) -> None:
        super().__init__()
        self._write: concurrent.futures.Future[Any] | None = write

    def release(self) -> None:
        """Let go of the write (it completed)."""
        self._write = None

    def cancel(self) -> bool:
        write = self._write
        cancelled = super().cancel()
        if cancelled and write is not None:
            write.cancel()
        return cancelled


def _settle(set_outcome: Callable[[Any], None], outcome: Any) -> None:
    """Complete a future unless it was cancelled meanwhile (by the gRPC thread)."""
    try:
        set_outcome(outcome)
    except concurrent.futures.InvalidStateError:
        pass


def _status_of(exc: Exception) -> StatusCode:
    if isinstance(exc, OverloadedError):
        return StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, IngestError) and not exc.transient:
        return StatusCode.INTERNAL
    return StatusCode.UNAVAILABLE  # the database failed, or the Manager is stopping


def manager_routes(
    ingest: Ingest,
    *,
    bind_node_identity: bool = False,
    limits: Limits = DEFAULT_LIMITS,
    events: EventSink | None = None,
) -> list[SyncRoute]:
    """The routes of the Manager's gRPC server (see the module documentation).

    Args:
        ingest: The group commit every write goes through; its :meth:`Ingest.run` must be
            running while the routes are served.
        bind_node_identity: Accept a node id only from a client whose verified certificate
            names it (needs a server with a client CA: without a client certificate every
            call is refused).
        limits: The request size limits.
        events: The console's event hub (see the module), or None.

    Returns:
        The routes, for :func:`~transport._grpc_thread.serve_grpc_in_thread`.
    """
    service = _Service(ingest, bind_node_identity=bind_node_identity, limits=limits, events=events)
    routes: list[SyncRoute] = [
        sync_unary_route(ManagerService.RegisterNode, service.register),
        sync_unary_route(ManagerService.Heartbeat, service.heartbeat),
        sync_unary_route(ManagerService.ReportMetrics, service.report),
        sync_unary_route(DaemonService.SyncAgentStates, service.sync),
    ]
    return routes
