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
3. **Store**: RegisterNode (an upsert, with the port the daemon announced in the
   ``hostvisor-grpc-port`` metadata) and SyncAgentStates (the whole list in one
   transaction) run as Store calls in worker threads, under the limiter shared with the
   ingest; Heartbeat and ReportMetrics go through the group commit (:mod:`._ingest`) and
   are answered once their batch is committed.

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
states changed. The hub never waits, so the console costs the ingest nothing.

**Failures** map to statuses our daemon knows what to do with
(:mod:`transport.daemon._retry`): the database failing, or the Manager shutting down,
answers ``UNAVAILABLE`` (reconnect, keep the report); a full ingest queue
``RESOURCE_EXHAUSTED`` (retry with backoff); a defect ``INTERNAL`` (logged). Calls and
refusals are counted in :meth:`Ingest.statistics <._ingest.Ingest.statistics>`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import trio

from transport import (
    AgentStateRecord,
    CallContext,
    DaemonService,
    ManagerService,
    NodeRegistration,
    Route,
    StatusCode,
    StatusError,
    daemon_pb2,
    manager_pb2,
    unary_route,
)
from transport.daemon._retry import REGISTER_METADATA_KEY

from ._errors import NotFoundError, StoreError
from ._events import EventHub
from ._ingest import Ingest, IngestError, OverloadedError, ShuttingDownError, StoreRunner
from ._model import Node
from ._validate import (
    DEFAULT_LIMITS,
    GRPC_PORT_METADATA_KEY,
    Limits,
    heartbeat_request,
    metrics_request,
    registration_request,
    states_request,
)

__all__ = ["ServiceStore", "manager_routes"]

logger = logging.getLogger("hostvisor.manager.grpc")

T = TypeVar("T")


class ServiceStore(Protocol):
    """The Store's part that the service calls directly (the rest goes through the
    ingest's writer)."""

    def register_node(self, reg: NodeRegistration, *, now: float, grpc_port: int | None) -> Node:
        """Create or update a node (one upsert)."""

    def sync_agent_states(
        self, node_id: str, states: Sequence[AgentStateRecord], *, now: float, full: bool = True
    ) -> int:
        """Apply a full agent list in one transaction; NotFoundError for an unknown node."""


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
        store: ServiceStore,
        ingest: Ingest,
        limiter: trio.CapacityLimiter,
        *,
        bind_node_identity: bool,
        limits: Limits,
        wall: Callable[[], float],
        events: EventHub | None = None,
    ) -> None:
        self.events = events
        self.run = StoreRunner(store, limiter)
        self.ingest = ingest
        self.bind_node_identity = bind_node_identity
        self.limits = limits
        self.wall = wall

    def authorize(self, node_id: str, ctx: CallContext) -> None:
        """Refuse a node id that the client's certificate does not name (when bound)."""
        if not self.bind_node_identity or node_id in ctx.peer_identities:
            return
        names = ", ".join(ctx.peer_identities) or "none: no client certificate"
        raise StatusError(
            StatusCode.PERMISSION_DENIED,
            f"the client certificate is not valid for node {node_id} (it names {names})",
        )

    async def answer(self, method: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run a handler's body: count the call and turn failures into statuses."""
        self.ingest.count_call(method)
        try:
            return await call()
        except StatusError as exc:
            self.ingest.count_refused(exc.status)
            raise
        except (StoreError, IngestError, OverloadedError, ShuttingDownError) as exc:
            status = _status_of(exc)
            self.ingest.count_refused(status)
            if isinstance(exc, StoreError):
                logger.warning("%s: the database failed: %s", method, exc)
            raise StatusError(status, str(exc)) from exc
        except Exception:
            self.ingest.count_refused(StatusCode.INTERNAL)
            raise  # the bridge logs it and answers INTERNAL

    def seen(self, node_id: str, *, created: bool) -> None:
        """Tell the console a heartbeat was stored (a node it created is online now)."""
        if self.events is None:
            return
        if created:
            self.events.node_status(node_id, "online")
        else:
            self.events.node_seen(node_id)

    # --- handlers ---------------------------------------------------------------------------

    async def register(
        self, request: manager_pb2.RegisterNodeRequest, ctx: CallContext
    ) -> manager_pb2.RegisterNodeResponse:
        async def call() -> manager_pb2.RegisterNodeResponse:
            reg = registration_request(
                request, grpc_port=ctx.get(GRPC_PORT_METADATA_KEY), limits=self.limits
            )
            self.authorize(reg.node.node_id, ctx)
            now = self.wall()
            await self.run(lambda s: s.register_node(reg.node, now=now, grpc_port=reg.grpc_port))
            self.ingest.count_registration()
            if self.events is not None:
                self.events.node_status(reg.node.node_id, "online")
            logger.debug("node %s registered (%s)", reg.node.node_id, reg.node.ip or "no ip")
            return manager_pb2.RegisterNodeResponse(success=True, message="registered")

        return await self.answer("RegisterNode", call)

    async def heartbeat(
        self, request: manager_pb2.HeartbeatRequest, ctx: CallContext
    ) -> manager_pb2.HeartbeatResponse:
        async def call() -> manager_pb2.HeartbeatResponse:
            node_id = heartbeat_request(request, limits=self.limits)
            self.authorize(node_id, ctx)
            created = await self.ingest.heartbeat(node_id)
            self.seen(node_id, created=created)
            if created:
                logger.info("node %s was unknown: created from its heartbeat", node_id)
                ctx.trailing_metadata.append((REGISTER_METADATA_KEY, "1"))
                message = f"node {node_id} was not registered: created; register again"
                return manager_pb2.HeartbeatResponse(success=True, message=message)
            return manager_pb2.HeartbeatResponse(success=True, message="ok")

        return await self.answer("Heartbeat", call)

    async def report(
        self, request: manager_pb2.ReportMetricsRequest, ctx: CallContext
    ) -> manager_pb2.ReportMetricsResponse:
        async def call() -> manager_pb2.ReportMetricsResponse:
            node_id, points = metrics_request(request, limits=self.limits)
            self.authorize(node_id, ctx)
            inserted = await self.ingest.report(node_id, points)
            if inserted is None:
                raise not_registered(node_id, ctx)
            message = f"stored {inserted} of {len(points)} metrics"
            return manager_pb2.ReportMetricsResponse(success=True, message=message)

        return await self.answer("ReportMetrics", call)

    async def sync(
        self, request: daemon_pb2.SyncAgentStatesRequest, ctx: CallContext
    ) -> daemon_pb2.SyncAgentStatesResponse:
        async def call() -> daemon_pb2.SyncAgentStatesResponse:
            node_id, states = states_request(request, limits=self.limits)
            self.authorize(node_id, ctx)
            now = self.wall()
            try:
                count = await self.run(lambda s: s.sync_agent_states(node_id, states, now=now))
            except NotFoundError:
                raise not_registered(node_id, ctx) from None
            self.ingest.count_agent_states(count)
            if self.events is not None:
                self.events.agents_reported(node_id, states)
            message = f"synced {len(states)} agents"
            return daemon_pb2.SyncAgentStatesResponse(success=True, message=message)

        return await self.answer("SyncAgentStates", call)


def _status_of(exc: Exception) -> StatusCode:
    if isinstance(exc, OverloadedError):
        return StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, IngestError) and not exc.transient:
        return StatusCode.INTERNAL
    return StatusCode.UNAVAILABLE  # the database failed, or the Manager is stopping


def manager_routes(
    store: ServiceStore,
    ingest: Ingest,
    *,
    limiter: trio.CapacityLimiter,
    bind_node_identity: bool = False,
    limits: Limits = DEFAULT_LIMITS,
    wall: Callable[[], float] = time.time,
    events: EventHub | None = None,
) -> list[Route]:
    """The routes of the Manager's gRPC server (see the module documentation).

    Args:
        store: The Store (its sync methods run in worker threads).
        ingest: The group commit for heartbeats and metric reports; its :meth:`Ingest.run`
            must be running while the routes are served.
        limiter: Bounds the worker threads in the Store (share the ingest's).
        bind_node_identity: Accept a node id only from a client whose verified certificate
            names it (needs a server with a client CA: without a client certificate every
            call is refused).
        limits: The request size limits.
        wall: The wall clock (unix seconds).
        events: The console's event hub (see the module), or None.

    Returns:
        The routes, for :func:`~transport.serve_grpc`.
    """
    service = _Service(
        store,
        ingest,
        limiter,
        bind_node_identity=bind_node_identity,
        limits=limits,
        wall=wall,
        events=events,
    )
    routes: list[Route] = [
        unary_route(ManagerService.RegisterNode, service.register),
        unary_route(ManagerService.Heartbeat, service.heartbeat),
        unary_route(ManagerService.ReportMetrics, service.report),
        unary_route(DaemonService.SyncAgentStates, service.sync),
    ]
    return routes
