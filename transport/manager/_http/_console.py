"""The console's own routes: the dashboard, agent details, and two Server-Sent Event streams.

Theory of operation
-------------------
* ``GET /api/v1/dashboard`` reads :meth:`Store.dashboard
  <transport.manager._store._dashboard.DashboardMixin.dashboard>` (a fixed number of
  queries, whatever the fleet's size) and lets :func:`transport.manager._alerts.alerts`
  decide the alerts (at most :data:`MAX_ALERTS` listed; ``alerts_total`` counts all).
* ``GET /api/v1/nodes/:node_id/agents/details`` asks the node's daemon
  (ListAgentDetails); when the daemon cannot answer (unreachable, an original daemon
  without the method, ...) it answers the stored agents with ``live: false``, health
  ``unknown`` and the reason in ``error``.
* ``GET /api/v1/events`` streams the :class:`~transport.manager._events.EventHub`'s events;
  ``GET /api/v1/nodes/:node_id/agents/:agent_id/logs/follow`` streams an agent's new log
  lines (``line`` events; ``dropped`` when the daemon skipped lines for a slow reader;
  ``error`` then the end when the daemon fails; ``end`` when it ends the stream).

Both streams authenticate like every route, and also with ``?access_token=`` (EventSource
cannot send headers). They are :class:`EventStream` responses: the response starts, then
a producer runs in a nursery beside a task that reads the request's ASGI messages; the
client's ``http.disconnect`` cancels the nursery, so the producer stops wherever it waits
(the hub subscription is left, the daemon's FollowAgentLogs call is cancelled on the wire
and its handler ends). A comment line is written whenever nothing was for
``keepalive_s`` (15 s), so proxies keep the connection open. Writes are serialised by a
lock. A slow browser slows only its own stream: the hub drops a subscriber that lags
(its stream ends and EventSource reconnects), and the daemon drops log lines for a slow
follower; neither ever waits for the browser.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from transport import RemoteError
from transport.manager._alerts import Alert, Thresholds, alerts
from transport.manager._errors import ManagerError, NotFoundError
from transport.manager._events import EventHub, sse
from transport.manager._http._auth import principal
from transport.manager._http._envelope import ok, query_int
from transport.manager._http._json import rfc3339
from transport.manager._http._nodes import (
    DEFAULT_LOG_LINES,
    MAX_LOG_LINES,
    Fleet,
    daemon_error,
    node_not_found,
)
from transport.manager._model import Role

if TYPE_CHECKING:
    from transport.manager._model import Agent, Node
    from transport.manager._pool_streams import AgentDetailRecord
    from transport.manager._store._dashboard import TopEntry

__all__ = [
    "KEEPALIVE_S",
    "MAX_ALERTS",
    "Console",
    "EventStream",
    "alert_json",
    "console_api_routes",
    "detail_json",
    "stored_detail_json",
]

KEEPALIVE_S = 15.0
"""A comment line is written after this long without an event."""
MAX_ALERTS = 100
"""The most alerts the dashboard lists of each kind (``alerts_total`` counts them all)."""
RETRY_MS = 3000
"""What the event stream tells EventSource to wait before reconnecting."""
_API = "/api/v1"

Write = Callable[[bytes], Awaitable[None]]


def alert_json(alert: Alert) -> dict[str, Any]:
    """An alert as the dashboard's JSON.

    Args:
        alert: The alert.

    Returns:
        ``{severity, kind, node_id, hostname, agent_id, value, threshold, message, since}``.
    """
    return {
        "severity": alert.severity.value,
        "kind": alert.kind.value,
        "node_id": alert.node_id,
        "hostname": alert.hostname,
        "agent_id": alert.agent_id,
        "value": None if alert.value is None else round(alert.value, 2),
        "threshold": alert.threshold,
        "message": alert.message,
        "since": rfc3339(alert.since),
    }


def _top_json(entry: TopEntry) -> dict[str, Any]:
    return {"node_id": entry.node_id, "hostname": entry.hostname, "value": round(entry.value, 2)}


def detail_json(detail: AgentDetailRecord, *, now: float) -> dict[str, Any]:
    """An agent's details from its daemon, as JSON.

    Args:
        detail: The daemon's record.
        now: Unix seconds (for ``uptime_s``).

    Returns:
        The JSON object (``uptime_s`` only while the agent has a process).
    """
    info = detail.info
    status = info.status.value if info.status is not None else ""
    uptime = None
    if info.start_time is not None and info.pid > 0:
        uptime = max(0.0, now - info.start_time)
    return {
        "agent_id": info.id,
        "name": detail.name,
        "type": info.type,
        "version": info.version,
        "status": status,
        "enabled": detail.enabled,
        "pid": info.pid,
        "start_time": info.start_time,
        "uptime_s": uptime,
        "restart_count": info.restart_count,
        "consecutive_restarts": detail.consecutive_restarts,
        "health": detail.health,
        "health_summary": detail.health_summary,
        "last_error": detail.last_error,
        "last_exit": detail.last_exit,
        "next_restart_at": rfc3339(detail.next_restart_at),
        "last_heartbeat": rfc3339(info.last_heartbeat),
    }


def stored_detail_json(agent: Agent) -> dict[str, Any]:
    """A stored agent in the details' shape (what is not stored is null or empty).

    Args:
        agent: The stored agent.

    Returns:
        The JSON object, health ``unknown``.
    """
    return {
        "agent_id": agent.agent_id,
        "name": agent.agent_id,
        "type": agent.type,
        "version": agent.version,
        "status": agent.status,
        "enabled": None,
        "pid": agent.pid,
        "start_time": None,
        "uptime_s": None,
        "restart_count": None,
        "consecutive_restarts": None,
        "health": "unknown",
        "health_summary": "",
        "last_error": "",
        "last_exit": "",
        "next_restart_at": None,
        "last_heartbeat": rfc3339(agent.last_heartbeat),
    }


class EventStream(StreamingResponse):
    """A ``text/event-stream`` response written by a producer until it returns or the
    client disconnects (see the module).

    Args:
        produce: Writes the stream with the function it is given; cancelled when the
            client disconnects.
        keepalive_s: Write a comment after this long without a write.
    """

    media_type = "text/event-stream"

    def __init__(self, produce: Callable[[Write], Awaitable[None]], *, keepalive_s: float) -> None:
        super().__init__(
            iter(()),  # unused: __call__ writes the body (and no Content-Length is sent)
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            media_type=self.media_type,
        )
        self._produce = produce
        self._keepalive_s = keepalive_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the stream (ASGI)."""
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        lock = trio.Lock()
        last = trio.current_time()

        async def write(data: bytes) -> None:
            nonlocal last
            async with lock:
                await send({"type": "http.response.body", "body": data, "more_body": True})
                last = trio.current_time()

        async def keepalive() -> None:
            while True:
                await trio.sleep_until(last + self._keepalive_s)
                if trio.current_time() >= last + self._keepalive_s:
                    await write(sse(None))

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(disconnected)
            nursery.start_soon(keepalive)
            await self._produce(write)
            nursery.cancel_scope.cancel()
        with trio.move_on_after(1, shield=True), contextlib.suppress(OSError):
            # The end of the body (ignored by the server when the client is gone).
            await send({"type": "http.response.body", "body": b"", "more_body": False})


@dataclasses.dataclass(frozen=True)
class Console:
    """What the console's routes share.

    Attributes:
        fleet: The fleet's routes' shared state (store, pool, clock).
        events: The event hub.
        thresholds: The alert thresholds.
        keepalive_s: The streams' keep-alive interval.
    """

    fleet: Fleet
    events: EventHub
    thresholds: Thresholds = dataclasses.field(default_factory=Thresholds)
    keepalive_s: float = KEEPALIVE_S

    async def dashboard(self, request: Request) -> JSONResponse:
        """``GET /api/v1/dashboard`` (viewer)."""
        await principal(request, Role.VIEWER)
        store = self.fleet.store
        data = await self.fleet.db(
            store.dashboard,
            self.thresholds,
            online_since=self.fleet.online_since(),
            limit=MAX_ALERTS,
        )
        found = alerts(
            self.thresholds, readings=data.readings, offline=data.offline, failed=data.failed
        )
        return ok(
            {
                "nodes": data.nodes,
                "agents": data.agents,
                "top_cpu": [_top_json(entry) for entry in data.top_cpu],
                "top_memory": [_top_json(entry) for entry in data.top_memory],
                "alerts": [alert_json(alert) for alert in found],
                "alerts_total": data.candidates,
                "thresholds": dataclasses.asdict(self.thresholds),
            }
        )

    async def details(self, request: Request) -> JSONResponse:
        """``GET /api/v1/nodes/:node_id/agents/details`` (viewer)."""
        await principal(request, Role.VIEWER)
        node = await self.fleet.node(request.path_params["node_id"])
        try:
            found = await self.fleet.pool.agent_details(node)
        except (RemoteError, ManagerError) as error:
            reason = daemon_error(error, node, "ListAgentDetails").message
            try:
                stored = await self.fleet.db(self.fleet.store.list_agents, node.node_id)
            except NotFoundError:
                raise node_not_found(node.node_id) from None
            agents = [stored_detail_json(agent) for agent in stored]
            return ok({"live": False, "error": reason, "agents": agents, "count": len(agents)})
        now = self.fleet.clock()
        agents = [detail_json(detail, now=now) for detail in found]
        return ok({"live": True, "error": None, "agents": agents, "count": len(agents)})

    async def events_stream(self, request: Request) -> Response:
        """``GET /api/v1/events`` (viewer; SSE)."""
        await principal(request, Role.VIEWER, query_token=True)

        async def produce(write: Write) -> None:
            with self.events.subscribe() as subscription:
                await write(f"retry: {RETRY_MS}\n\n".encode())
                while True:
                    try:
                        event = await subscription.receive()
                    except trio.EndOfChannel:  # dropped for lagging: EventSource reconnects
                        return
                    assert event is not None
                    await write(sse(event.name, event.data))

        return EventStream(produce, keepalive_s=self.keepalive_s)

    async def follow_logs(self, request: Request) -> Response:
        """``GET /api/v1/nodes/:node_id/agents/:agent_id/logs/follow`` (viewer; SSE)."""
        await principal(request, Role.VIEWER, query_token=True)
        lines = query_int(
            request, "lines", default=DEFAULT_LOG_LINES, minimum=0, maximum=MAX_LOG_LINES
        )
        node = await self.fleet.node(request.path_params["node_id"])
        agent_id = request.path_params["agent_id"]
        return EventStream(self._log_producer(node, agent_id, lines), keepalive_s=self.keepalive_s)

    def _log_producer(
        self, node: Node, agent_id: str, lines: int
    ) -> Callable[[Write], Awaitable[None]]:
        async def produce(write: Write) -> None:
            await write(b": following\n\n")
            try:
                async with self.fleet.pool.follow_logs(node, agent_id, lines) as stream:
                    async for chunk in stream:
                        parts = [sse("line", {"line": line}) for line in chunk.lines]
                        if chunk.dropped:
                            parts.insert(0, sse("dropped", {"count": chunk.dropped}))
                        if parts:
                            await write(b"".join(parts))
            except (RemoteError, ManagerError) as error:
                failure = daemon_error(error, node, f"following the log of agent {agent_id!r}")
                await write(sse("error", {"code": int(failure.code), "message": failure.message}))
                return
            await write(sse("end", {}))

        return produce


def console_api_routes(console: Console) -> list[Route]:
    """The console's API routes (under ``/api/v1``; put them before the node routes).

    Args:
        console: What they serve from.

    Returns:
        The routes.
    """
    agents = f"{_API}/nodes/{{node_id}}/agents"
    return [
        Route(f"{_API}/dashboard", console.dashboard, methods=["GET"]),
        Route(f"{_API}/events", console.events_stream, methods=["GET"]),
        Route(f"{agents}/details", console.details, methods=["GET"]),
        Route(f"{agents}/{{agent_id}}/logs/follow", console.follow_logs, methods=["GET"]),
    ]
