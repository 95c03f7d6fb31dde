"""The fleet's REST routes: nodes, their agents, and calls through to their daemons.

Theory of operation
-------------------
Every handler is a thin IO shell: it authorises (:func:`~._auth.principal` to read,
:func:`~._auth.audited` to change anything, which records actor, action, target, source IP
and outcome however the call ends), parses its parameters with the envelope's helpers
(1001 naming the parameter), reads or writes the store in a worker thread, calls the
node's daemon through the :class:`~transport.manager._pool.DaemonPool`, and answers the
original's JSON shapes (:mod:`._json`).

:class:`Fleet` holds what the routes share: the store, the pool, the clock and the offline
threshold. Errors keep the original's codes, where the original answered right:

* an unknown node is 2001 (404) on every route (the original answers 500 on the agent
  routes); an unknown agent, per the daemon (gRPC ``NOT_FOUND``), is 1004 (404);
* a daemon that cannot be reached, times out or fails the operation is 5004 (HTTP 500,
  as the original) with the reason; a request the daemon finds invalid is 1001.

A node is shown ``offline`` once its last heartbeat is older than the threshold even
before the offline job has marked it so in the database (:func:`shown_status`, pure), so
that a Manager that was stopped for a while never shows a stale ``online``.

After an operation succeeds, the node's agents are refreshed from its daemon (ListAgents)
so that the console, which reads the agent list right after, sees the new state; a failed
refresh only costs freshness (the daemon's own sync comes within 30 s). A refresh (after
an operation or a REST sync) publishes the node's agents to the console's event hub
(``agents``), and a deletion publishes ``node`` ``deleted``. ``GET /nodes`` takes ``q``, a
search by hostname, node id, IP or label (``key=value`` or a key), done in SQL.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from transport import Operation, RemoteError, StatusCode
from transport.manager._errors import (
    DaemonUnreachableError,
    ManagerError,
    NotFoundError,
    StoreError,
)
from transport.manager._http._auth import audited, principal
from transport.manager._http._envelope import (
    ApiError,
    ErrorCode,
    Fields,
    json_body,
    ok,
    page_ok,
    paging,
    query_int,
    query_str,
)
from transport.manager._http._json import agent_json, node_json, resource_point_json
from transport.manager._model import Node, NodeStatus, Role

if TYPE_CHECKING:
    from transport.manager._events import EventHub
    from transport.manager._pool import DaemonPool
    from transport.manager._store import Store

__all__ = [
    "DEFAULT_DURATION_S",
    "DEFAULT_LOG_LINES",
    "MAX_DURATION_S",
    "MAX_LOG_LINES",
    "Fleet",
    "daemon_error",
    "node_not_found",
    "node_routes",
    "path_id",
    "shown_status",
]

T = TypeVar("T")
logger = logging.getLogger("hostvisor.manager.http")

DEFAULT_LOG_LINES = 100
MAX_LOG_LINES = 1000
DEFAULT_DURATION_S = 3600
MAX_DURATION_S = 7 * 24 * 3600
"""Agent metrics' ``duration`` bound (seconds), as the original."""
_API = "/api/v1"


def shown_status(node: Node, *, now: float, offline_after_s: float) -> NodeStatus:
    """The status a node is shown with: offline once its last heartbeat is too old.

    Args:
        node: The node as stored.
        now: Unix seconds now.
        offline_after_s: How old a last heartbeat may be for an online node.

    Returns:
        ``offline`` when stored so, never seen, or last seen more than ``offline_after_s``
        before ``now``; else ``online``.
    """
    if node.status is not NodeStatus.ONLINE or node.last_seen_at is None:
        return NodeStatus.OFFLINE
    return NodeStatus.ONLINE if now - node.last_seen_at <= offline_after_s else NodeStatus.OFFLINE


def node_not_found(node: str | int) -> ApiError:
    """2001 (404) for a node id (or numeric id) that names no node."""
    return ApiError(ErrorCode.NODE_NOT_FOUND, f"node {node!r} not found")


def daemon_error(error: Exception, node: Node, what: str) -> ApiError:
    """The API's answer to a failed call to a node's daemon.

    Args:
        error: :class:`transport.RemoteError` or a :class:`ManagerError` of the pool
            (:class:`DaemonUnreachableError`; a daemon's answer that breaks the contract; the
            pool stopped).
        node: The node.
        what: The call, e.g. ``"restart of agent 'web'"``, for the message.

    Returns:
        1004 for ``NOT_FOUND`` (the daemon knows no such agent), 1001 for
        ``INVALID_ARGUMENT``, else 5004 (unreachable, timed out, failed) with the reason.
    """
    if isinstance(error, RemoteError):
        if error.status is StatusCode.NOT_FOUND:
            return ApiError(ErrorCode.NOT_FOUND, f"node {node.node_id}: {error.details}")
        if error.status is StatusCode.INVALID_ARGUMENT:
            return ApiError(ErrorCode.INVALID_PARAMS, f"node {node.node_id}: {error.details}")
        reason = f"{error.status.name}: {error.details}" if error.details else error.status.name
        return ApiError(ErrorCode.GRPC, f"{what} on node {node.node_id} failed: {reason}")
    if isinstance(error, DaemonUnreachableError):
        return ApiError(
            ErrorCode.GRPC, f"the daemon of node {node.node_id} cannot be reached: {error}"
        )
    return ApiError(ErrorCode.GRPC, f"{what} on node {node.node_id} failed: {error}")


def path_id(request: Request, name: str = "id") -> int:
    """A numeric id from the request's path.

    Args:
        request: The request.
        name: The path parameter.

    Returns:
        The id.

    Raises:
        ApiError: 1001 naming the parameter when it is not a positive integer.
    """
    raw = str(request.path_params[name])
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18 or int(raw) < 1:
        raise ApiError(
            ErrorCode.INVALID_PARAMS, f"{name}: expected a positive integer; got {raw[:40]!r}"
        )
    return int(raw)


@contextmanager
def daemon_call(node: Node, what: str) -> Iterator[None]:
    """Translate a failed daemon call in the block into its :class:`ApiError`.

    Args:
        node: The node called.
        what: The call, for the message.

    Raises:
        ApiError: See :func:`daemon_error`.
    """
    try:
        yield
    except (RemoteError, ManagerError) as error:
        raise daemon_error(error, node, what) from error


@dataclasses.dataclass(frozen=True)
class Fleet:
    """What the fleet's routes share.

    Attributes:
        store: The Manager's store.
        pool: The daemon client pool.
        offline_after_s: A node is shown offline after this long without a heartbeat.
        clock: Unix seconds now.
        events: The console's event hub (agents refreshed, nodes deleted), or None.
    """

    store: Store
    pool: DaemonPool
    offline_after_s: float = 180.0
    clock: Callable[[], float] = time.time
    events: EventHub | None = None

    async def db(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a synchronous store call in a worker thread.

        Args:
            function: e.g. ``store.get_node``.
            *args: Its positional arguments.
            **kwargs: Its keyword arguments.

        Returns:
            What it returns.
        """
        return await trio.to_thread.run_sync(functools.partial(function, *args, **kwargs))

    def online_since(self) -> float:
        """The oldest last heartbeat that still counts as online, now."""
        return self.clock() - self.offline_after_s

    def shown(self, node: Node) -> Node:
        """``node`` with the status it is shown with (see :func:`shown_status`)."""
        status = shown_status(node, now=self.clock(), offline_after_s=self.offline_after_s)
        return node if status is node.status else dataclasses.replace(node, status=status)

    async def node(self, node_id: str) -> Node:
        """The node named ``node_id``.

        Raises:
            ApiError: 2001 when there is none.
        """
        try:
            return await self.db(self.store.get_node, node_id)
        except NotFoundError:
            raise node_not_found(node_id) from None

    async def node_by_id(self, request: Request) -> Node:
        """The node whose numeric ``id`` the path names.

        Raises:
            ApiError: 1001 for an id that is not a positive integer; 2001 when there is none.
        """
        number = path_id(request)
        try:
            return await self.db(self.store.get_node_by_id, number)
        except NotFoundError:
            raise node_not_found(number) from None

    async def refresh_agents(self, node: Node) -> int:
        """Replace the node's stored agents with what its daemon lists now.

        Returns:
            How many agents were stored.

        Raises:
            ApiError: 5004 (or 1001/1004) when the daemon call fails.
        """
        with daemon_call(node, "ListAgents"):
            infos = await self.pool.list_agents(node)
        try:
            count = await self.db(self.store.replace_agents, node.node_id, infos, now=self.clock())
            if self.events is not None and self.events.subscribers:
                self.events.agents(
                    node.node_id, await self.db(self.store.list_agents, node.node_id)
                )
        except NotFoundError:  # deleted meanwhile
            raise node_not_found(node.node_id) from None
        return count


# --------------------------------------------------------------------------- routes


class _NodeRoutes:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    async def list_nodes(self, request: Request) -> JSONResponse:
        await principal(request, Role.VIEWER)
        page, size = paging(request)
        status = query_str(request, "status", choices=[s.value for s in NodeStatus])
        search = query_str(request, "q")
        if len(search) > 200:
            raise ApiError(ErrorCode.INVALID_PARAMS, "q: at most 200 characters")
        found = await self.fleet.db(
            self.fleet.store.list_nodes,
            page=page,
            page_size=size,
            status=NodeStatus(status) if status else None,
            online_since=self.fleet.online_since(),
            search=search,
        )
        return page_ok(found, lambda node: node_json(self.fleet.shown(node)))

    async def statistics(self, request: Request) -> JSONResponse:
        await principal(request, Role.VIEWER)
        counts = await self.fleet.db(
            self.fleet.store.node_counts, online_since=self.fleet.online_since()
        )
        keys = ("total", "online", "offline")
        return ok({"statistics": {key: int(counts.get(key, 0)) for key in keys}})

    async def get_node(self, request: Request) -> JSONResponse:
        await principal(request, Role.VIEWER)
        node = await self.fleet.node(request.path_params["node_id"])
        return ok({"node": node_json(self.fleet.shown(node))})

    async def delete_node(self, request: Request) -> JSONResponse:
        raw = str(request.path_params["id"])[:40]
        async with audited(request, Role.ADMIN, "node.delete", target=f"node:{raw}") as act:
            node = await self.fleet.node_by_id(request)
            act.target = f"node:{node.node_id}"
            act.detail["id"] = node.id
            try:
                await self.fleet.db(self.fleet.store.delete_node, node.id)
            except NotFoundError:  # deleted meanwhile
                raise node_not_found(node.id) from None
        if self.fleet.events is not None:
            self.fleet.events.node_status(node.node_id, "deleted")
        return ok({"message": f"node {node.node_id} deleted"})

    async def list_agents(self, request: Request) -> JSONResponse:
        await principal(request, Role.VIEWER)
        node = await self.fleet.node(request.path_params["node_id"])
        try:
            agents = await self.fleet.db(self.fleet.store.list_agents, node.node_id)
        except NotFoundError:
            raise node_not_found(node.node_id) from None
        return ok({"agents": [agent_json(agent) for agent in agents], "count": len(agents)})

    async def sync_agents(self, request: Request) -> JSONResponse:
        node_id = request.path_params["node_id"]
        async with audited(request, Role.OPERATOR, "agents.sync", target=f"node:{node_id}") as act:
            node = await self.fleet.node(node_id)
            count = await self.fleet.refresh_agents(node)
            act.detail["synced_count"] = count
        return ok({"message": "agents synced", "synced_count": count})

    async def operate(self, request: Request) -> JSONResponse:
        node_id, agent_id = request.path_params["node_id"], request.path_params["agent_id"]
        target = f"node:{node_id}/agent:{agent_id}"
        async with audited(request, Role.OPERATOR, "agent.operate", target=target) as act:
            fields = Fields(await json_body(request))
            verb = fields.text("operation", choices=[op.value for op in Operation])
            act.detail["operation"] = verb
            node = await self.fleet.node(node_id)
            with daemon_call(node, f"{verb} of agent {agent_id!r}"):
                await self.fleet.pool.operate(node, agent_id, Operation(verb))
        try:
            await self.fleet.refresh_agents(node)
        except (ApiError, StoreError) as error:
            logger.info("agents of %s not refreshed after %s: %s", node_id, verb, error)
        return ok({"message": f"{verb} of agent {agent_id} done"})

    async def _agent_query(
        self, request: Request, name: str, default: int, maximum: int
    ) -> tuple[Node, str, int]:
        """A read of one agent: authorised, its integer parameter, the node, the agent."""
        await principal(request, Role.VIEWER)
        value = query_int(request, name, default=default, minimum=1, maximum=maximum)
        node = await self.fleet.node(request.path_params["node_id"])
        return node, request.path_params["agent_id"], value

    async def logs(self, request: Request) -> JSONResponse:
        node, agent_id, lines = await self._agent_query(
            request, "lines", DEFAULT_LOG_LINES, MAX_LOG_LINES
        )
        with daemon_call(node, f"logs of agent {agent_id!r}"):
            found = await self.fleet.pool.agent_logs(node, agent_id, lines)
        return ok({"logs": found, "count": len(found)})

    async def agent_metrics(self, request: Request) -> JSONResponse:
        node, agent_id, duration = await self._agent_query(
            request, "duration", DEFAULT_DURATION_S, MAX_DURATION_S
        )
        with daemon_call(node, f"metrics of agent {agent_id!r}"):
            points = await self.fleet.pool.agent_metrics(node, agent_id, duration)
        data = [resource_point_json(point) for point in points]
        return ok({"agent_id": agent_id, "data_points": data, "count": len(data)})


def node_routes(fleet: Fleet) -> list[Route]:
    """The routes of nodes and agents (under ``/api/v1``).

    Args:
        fleet: What they serve from.

    Returns:
        The routes, the fixed paths before the parametrised ones.
    """
    r = _NodeRoutes(fleet)
    agent = f"{_API}/nodes/{{node_id}}/agents/{{agent_id}}"
    return [
        Route(f"{_API}/nodes", r.list_nodes, methods=["GET"]),
        Route(f"{_API}/nodes/statistics", r.statistics, methods=["GET"]),
        Route(f"{_API}/nodes/{{node_id}}/agents", r.list_agents, methods=["GET"]),
        Route(f"{_API}/nodes/{{node_id}}/agents/sync", r.sync_agents, methods=["POST"]),
        Route(f"{agent}/operate", r.operate, methods=["POST"]),
        Route(f"{agent}/logs", r.logs, methods=["GET"]),
        Route(f"{agent}/metrics", r.agent_metrics, methods=["GET"]),
        Route(f"{_API}/admin/nodes/{{id}}", r.delete_node, methods=["DELETE"]),
        Route(f"{_API}/nodes/{{id}}", r.delete_node, methods=["DELETE"]),
        Route(f"{_API}/nodes/{{node_id}}", r.get_node, methods=["GET"]),
    ]
