"""The daemon's ``proto.DaemonService``: the original contract, served over the supervisor.

Theory of operation
-------------------
Handlers are Trio coroutines (:func:`transport.unary_route`) over the running
:class:`supervisor.Supervisor`, the daemon's current configuration and its update service.
Each handler first converts and validates its request (:mod:`transport._convert`): bad
input is ``INVALID_ARGUMENT`` naming the field, an unknown agent ``NOT_FOUND``; a handler
never lets a client's input reach the supervisor unchecked, and an unexpected exception
costs that call (``INTERNAL``, logged by the bridge), never the daemon.

**Cancellation.** A client that cancels or times out a call cancels its handler (the
bridge delivers ``trio.Cancelled``), but never half an operation:

* OperateAgent hands its request to the agent's own task (its inbox) before it first
  waits: from then on the start, stop or restart completes whatever the client does, and
  the agent's state tells its outcome. A call cancelled before the handler runs starts
  nothing.
* PushUpdate's request is either written to the spool whole (then it is installed) or
  not at all (see :mod:`transport.daemon._update_rpc`).
* Everything else only reads.

Statuses, as the original: empty agent_id or a bad operation ``INVALID_ARGUMENT``; unknown
agent ``NOT_FOUND``; a failed operation ``INTERNAL`` with the reason (clients of the
original treat any non-OK status as failure); Register, Heartbeat and ReportMetrics
``UNIMPLEMENTED`` (they are the Manager's); a daemon shutting down ``UNAVAILABLE``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn, Protocol

from supervisor import (
    AgentInfo,
    ResourceSample,
    SupervisorClosedError,
    UnknownAgentError,
)
from transport import (
    UPDATE_ID_METADATA_KEY,
    CallContext,
    DaemonService,
    InvalidMessageError,
    Operation,
    ResourcePoint,
    Route,
    StatusCode,
    StatusError,
    agent_info_from_supervisor,
    agent_info_to_message,
    agent_state_from_message,
    daemon_pb2,
    hostvisor_pb2,
    operation_request_from_message,
    parse_metrics_request,
    resource_point_to_message,
    unary_route,
)

from ._config import DaemonConfig, dump_config
from ._redact import redact

if TYPE_CHECKING:
    from supervisor import Outcome, Supervisor

__all__ = ["Backend", "DaemonServiceHandlers", "UpdatePort", "resource_point"]

logger = logging.getLogger("hostvisor.grpc")

CONFIG_TYPES = ("daemon", "agent")
"""GetConfig's ``config_type`` values."""


class UpdatePort(Protocol):
    """What the gRPC services need of the daemon's update service."""

    async def push(self, message: daemon_pb2.UpdateRequest, ctx: CallContext) -> str:
        """Validate and accept an update; its id."""
        ...

    async def result(
        self, message: hostvisor_pb2.GetUpdateResultRequest
    ) -> hostvisor_pb2.UpdateResult:
        """The state of an accepted update."""
        ...

    async def versions(self) -> Mapping[str, str]:
        """The installed versions, by agent id."""
        ...


@dataclass
class Backend:
    """What the handlers serve from.

    Args:
        supervisor: The running supervisor.
        config: The daemon's current configuration (it changes on SIGHUP).
        updates: The update service, or None when the daemon has no ``update:`` block.
    """

    supervisor: Supervisor
    config: Callable[[], DaemonConfig]
    updates: UpdatePort | None = None

    def node_id(self) -> str | None:
        """This daemon's node id (``daemon.id``, else ``{work_dir}/node_id``), if known."""
        config = self.config()
        if config.daemon.id:
            return config.daemon.id
        try:
            with open(os.path.join(config.daemon.work_dir, "node_id")) as file:
                return file.read(256).strip() or None
        except OSError:
            return None

    def check_node(self, field: str, node_id: str) -> None:
        """Refuse a request addressed to another node (an empty node_id is accepted).

        Raises:
            InvalidMessageError: ``node_id`` names another node.
        """
        mine = self.node_id() if node_id else None
        if mine is not None and node_id != mine:
            raise InvalidMessageError(field, f"this daemon is node {mine!r}, not {node_id!r}")

    def agent(self, agent_id: str, field: str) -> AgentInfo:
        """The agent's snapshot.

        Raises:
            InvalidMessageError: ``agent_id`` is empty.
            StatusError: ``NOT_FOUND``.
        """
        if not agent_id:
            raise InvalidMessageError(field, "empty")
        try:
            return self.supervisor.status(agent_id)
        except UnknownAgentError:
            not_found(agent_id)

    async def versions(self) -> Mapping[str, str]:
        """The updater's installed versions by agent id (empty without updates)."""
        return await self.updates.versions() if self.updates is not None else {}


def not_found(agent_id: str) -> NoReturn:
    """Answer ``NOT_FOUND`` for an agent id."""
    raise StatusError(StatusCode.NOT_FOUND, f"unknown agent {agent_id!r:.200}")


def version_of(info: AgentInfo, installed: Mapping[str, str]) -> str:
    """The agent's version: as it reports it, else as the updater installed it, else ""."""
    return info.version or installed.get(info.id, "")


def heartbeat_of(info: AgentInfo) -> float | None:
    """The agent's last heartbeat (wall-clock seconds), None when it never sent one."""
    beat = info.last_heartbeat
    return beat if beat is not None and beat > 0 else None


def resource_point(sample: ResourceSample) -> ResourcePoint | None:
    """The wire's ResourceDataPoint of one sample of an agent's process tree.

    Args:
        sample: The sample (``Supervisor.metrics``).

    Returns:
        The point; None for a sample that cannot be one (a time or CPU figure that is not
        finite).
    """
    if not (math.isfinite(sample.at) and math.isfinite(sample.cpu_percent)):
        return None
    try:
        return ResourcePoint(
            timestamp=int(sample.at),
            cpu=max(0.0, sample.cpu_percent),
            memory_rss=max(0, sample.rss_bytes),
            memory_vms=max(0, sample.memory_vms),
            disk_read_bytes=max(0, sample.disk_read_bytes),
            disk_write_bytes=max(0, sample.disk_write_bytes),
            open_files=min(max(0, sample.open_files), 2**31 - 1),
        )
    except ValueError:
        return None


class DaemonServiceHandlers:
    """The handlers of ``proto.DaemonService``.

    Args:
        backend: What they serve from.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def routes(self) -> list[Route]:
        """Every method of the service, routed."""
        s = DaemonService
        return [
            unary_route(s.Register, self.register),
            unary_route(s.Heartbeat, self.heartbeat),
            unary_route(s.ReportMetrics, self.report_metrics),
            unary_route(s.GetConfig, self.get_config),
            unary_route(s.PushUpdate, self.push_update),
            unary_route(s.ListAgents, self.list_agents),
            unary_route(s.OperateAgent, self.operate_agent),
            unary_route(s.GetAgentMetrics, self.get_agent_metrics),
            unary_route(s.SyncAgentStates, self.sync_agent_states),
        ]

    # -- the Manager's methods ------------------------------------------------------------

    async def register(
        self, request: daemon_pb2.RegisterRequest, ctx: CallContext
    ) -> daemon_pb2.RegisterResponse:
        """UNIMPLEMENTED: registration is the Manager's (manager.ManagerService)."""
        _managers_method("Register")

    async def heartbeat(
        self, request: daemon_pb2.HeartbeatRequest, ctx: CallContext
    ) -> daemon_pb2.HeartbeatResponse:
        """UNIMPLEMENTED: heartbeats go to the Manager (manager.ManagerService)."""
        _managers_method("Heartbeat")

    async def report_metrics(
        self, request: daemon_pb2.MetricsRequest, ctx: CallContext
    ) -> daemon_pb2.MetricsResponse:
        """UNIMPLEMENTED: metrics go to the Manager (manager.ManagerService)."""
        _managers_method("ReportMetrics")

    async def sync_agent_states(
        self, request: daemon_pb2.SyncAgentStatesRequest, ctx: CallContext
    ) -> daemon_pb2.SyncAgentStatesResponse:
        """Validate the request and accept it, as the original daemon does (it keeps its own
        states: the Manager's copy changes nothing here).

        Raises:
            InvalidMessageError: Empty node_id, or an invalid state.
        """
        if not request.node_id:
            raise InvalidMessageError("SyncAgentStatesRequest.node_id", "empty")
        for state in request.states:
            agent_state_from_message(state)
        return daemon_pb2.SyncAgentStatesResponse(
            success=True, message=f"accepted {len(request.states)} state(s)"
        )

    # -- agents ---------------------------------------------------------------------------

    async def list_agents(
        self, request: daemon_pb2.ListAgentsRequest, ctx: CallContext
    ) -> daemon_pb2.ListAgentsResponse:
        """Every configured agent, disabled ones too, in configuration order."""
        installed = await self.backend.versions()
        agents = [
            agent_info_to_message(
                agent_info_from_supervisor(
                    info, version=version_of(info, installed), last_heartbeat=heartbeat_of(info)
                )
            )
            for info in self.backend.supervisor.statuses()
        ]
        return daemon_pb2.ListAgentsResponse(agents=agents)

    async def operate_agent(
        self, request: daemon_pb2.AgentOperationRequest, ctx: CallContext
    ) -> daemon_pb2.AgentOperationResponse:
        """Start, stop (gracefully, as configured) or restart an agent; answer when done.

        ``start`` answers once the process is spawned (``starting``), and clears
        ``failed``; ``stop`` once the whole process tree is gone; ``restart`` both.

        Raises:
            InvalidMessageError: Empty agent_id; empty or unknown operation.
            StatusError: ``NOT_FOUND``; ``INTERNAL`` with the reason when the operation
                failed; ``UNAVAILABLE`` while the daemon shuts down.
        """
        operation = operation_request_from_message(request)
        agent_id = operation.agent_id
        supervisor = self.backend.supervisor
        act: dict[Operation, Callable[[str], Awaitable[Outcome]]] = {
            Operation.START: supervisor.start,
            Operation.STOP: supervisor.stop,
            Operation.RESTART: supervisor.restart,
        }
        verb = operation.operation.value
        try:
            supervisor.registry.get(agent_id)
        except UnknownAgentError:
            not_found(agent_id)
        logger.info("gRPC: %s of agent %s requested by %s", verb, agent_id, ctx.peer or "?")
        try:
            # The request reaches the agent's inbox before the first wait (see above).
            outcome = await act[operation.operation](agent_id)
        except UnknownAgentError:
            not_found(agent_id)
        except SupervisorClosedError:
            raise StatusError(StatusCode.UNAVAILABLE, "the daemon is shutting down") from None
        if not outcome.ok:
            raise StatusError(
                StatusCode.INTERNAL,
                f"{verb} of agent {agent_id!r} failed: {outcome.error or 'unknown reason'}"
                f" (now {outcome.state.value})",
            )
        return daemon_pb2.AgentOperationResponse(success=True)

    async def get_agent_metrics(
        self, request: daemon_pb2.AgentMetricsRequest, ctx: CallContext
    ) -> daemon_pb2.AgentMetricsResponse:
        """The agent's resource samples (whole process tree) of the last duration_seconds
        (0 or less: an hour), oldest first.

        Raises:
            InvalidMessageError: Empty agent_id.
            StatusError: ``NOT_FOUND``.
        """
        agent_id, seconds = parse_metrics_request(request)
        try:
            samples = self.backend.supervisor.metrics(agent_id, float(seconds))
        except UnknownAgentError:
            not_found(agent_id)
        points = (resource_point(sample) for sample in samples)
        return daemon_pb2.AgentMetricsResponse(
            agent_id=agent_id,
            data_points=[resource_point_to_message(p) for p in points if p is not None],
        )

    # -- configuration and updates --------------------------------------------------------

    async def get_config(
        self, request: daemon_pb2.ConfigRequest, ctx: CallContext
    ) -> daemon_pb2.ConfigResponse:
        """The effective configuration as JSON, secrets redacted (see
        :mod:`transport.daemon._redact`): ``daemon`` is every section but the agents,
        ``agent`` the agents (with ``agent_defaults`` merged in).

        Raises:
            InvalidMessageError: config_type is not ``daemon`` or ``agent``; node_id names
                another node.
        """
        self.backend.check_node("ConfigRequest.node_id", request.node_id)
        kind = request.config_type
        if kind not in CONFIG_TYPES:
            problem = "empty" if not kind else f"unknown config_type {kind!r:.80}"
            raise InvalidMessageError("ConfigRequest.config_type", f"{problem} (daemon or agent)")
        document = dump_config(self.backend.config())
        agents = document.pop("agents")
        shown = document if kind == "daemon" else {"agents": agents}
        data = json.dumps(redact(shown), indent=2, sort_keys=True, default=str)
        return daemon_pb2.ConfigResponse(success=True, config_data=data.encode())

    async def push_update(
        self, request: daemon_pb2.UpdateRequest, ctx: CallContext
    ) -> daemon_pb2.UpdateResponse:
        """Validate an update and hand it to the update service; answer once accepted.

        The update's id comes back in the initial metadata ``hostvisor-update-id``;
        ``hostvisor.v1.HostvisorService/GetUpdateResult`` tells its outcome.

        Raises:
            InvalidMessageError: A field is invalid.
            StatusError: ``FAILED_PRECONDITION`` without an ``update:`` block (and see
                :meth:`transport.daemon._update_rpc.UpdateDesk.push`).
        """
        updates = self.backend.updates
        if updates is None:
            raise StatusError(
                StatusCode.FAILED_PRECONDITION,
                "updates are not configured on this daemon (no update: block)",
            )
        self.backend.check_node("UpdateRequest.node_id", request.node_id)
        update_id = await updates.push(request, ctx)
        ctx.initial_metadata.append((UPDATE_ID_METADATA_KEY, update_id))
        return daemon_pb2.UpdateResponse(
            success=True,
            message=f"accepted as update {update_id}; GetUpdateResult tells its outcome",
        )


def _managers_method(name: str) -> NoReturn:
    raise StatusError(
        StatusCode.UNIMPLEMENTED,
        f"{name} is served by the Manager (manager.ManagerService), not by a daemon",
    )
