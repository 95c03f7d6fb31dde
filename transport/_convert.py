"""Conversions between the wire messages and transport's small domain records. PURE.

Rules of this file:

* Records are valid by construction: ``__post_init__`` checks every field against its
  wire type (``int32``, ``int64``, ``uint64``) and its meaning, raising ``ValueError`` with
  the record's field. So ``*_to_message`` never fails, and a record that came from
  ``*_from_message`` converts back to an equal message.
* ``*_from_message`` trusts nothing: a value the contract does not allow raises
  :class:`~transport.InvalidMessageError` naming the message field (for example
  ``AgentOperationRequest.operation``), which a server handler turns into
  ``INVALID_ARGUMENT``. Leniency is deliberate and written down where it is granted:
  an empty status means "not reported", ``error`` means ``failed``, a non-positive time
  means unknown (an original Go daemon sends its zero time as ``-62135596800``), and a
  non-finite metric value is dropped (JSON cannot store it; one bad gauge must not lose a
  whole report).
* Time is data here: unix seconds as the original sends them, never read from a clock.

Imports no trio, no os, no socket, no grpc: only the generated message classes.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from ._errors import InvalidMessageError
from ._pb import daemon_pb2, manager_pb2
from ._pb.hostvisor.v1 import hostvisor_pb2

if TYPE_CHECKING:
    import supervisor

__all__ = [
    "DEFAULT_LOG_LINES",
    "DEFAULT_METRICS_DURATION_S",
    "MAX_LOG_LINES",
    "UPDATE_ID_METADATA_KEY",
    "AgentInfoRecord",
    "AgentStateRecord",
    "AgentStatus",
    "LogRequest",
    "MetricPoint",
    "NodeRegistration",
    "Operation",
    "OperationRequest",
    "ResourcePoint",
    "StateChange",
    "agent_detail_from_supervisor",
    "agent_info_from_message",
    "agent_info_from_supervisor",
    "agent_info_to_message",
    "agent_state_from_message",
    "agent_state_to_message",
    "metric_from_message",
    "metric_to_message",
    "operation_request_from_message",
    "operation_request_to_message",
    "parse_agent_status",
    "parse_follow_request",
    "parse_log_request",
    "parse_metrics_request",
    "parse_operation",
    "registration_from_message",
    "registration_to_message",
    "resource_point_from_message",
    "resource_point_to_message",
    "state_change_from_message",
    "state_change_to_message",
]

INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1

DEFAULT_LOG_LINES = 100
"""GetAgentLogs' ``lines`` when the request says 0."""
MAX_LOG_LINES = 1000
"""The most lines GetAgentLogs answers, and FollowAgentLogs sends as history."""
DEFAULT_METRICS_DURATION_S = 3600
"""GetAgentMetrics' ``duration_seconds`` when the request says 0 or less."""
UPDATE_ID_METADATA_KEY = "hostvisor-update-id"
"""The metadata key naming an update: PushUpdate's response carries it (initial metadata),
and a client may send it with the request to choose the id (see hostvisor.proto)."""


class AgentStatus(enum.Enum):
    """An agent's status as the wire spells it (the value)."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    RESTARTING = "restarting"
    FAILED = "failed"


_STATUS_SYNONYMS = {"error": AgentStatus.FAILED}


class Operation(enum.Enum):
    """What OperateAgent may do to an agent (the value is the wire string)."""

    START = "start"
    STOP = "stop"
    RESTART = "restart"


def parse_agent_status(text: str, *, field: str) -> AgentStatus | None:
    """Read a status string from the wire.

    Args:
        text: The string; case and surrounding blanks do not matter.
        field: The message field it came from, for the error.

    Returns:
        The status, or None when ``text`` is empty (not reported). ``error`` is ``FAILED``.

    Raises:
        InvalidMessageError: Any other string.
    """
    key = text.strip().lower()
    if not key:
        return None
    try:
        return _STATUS_SYNONYMS.get(key) or AgentStatus(key)
    except ValueError:
        allowed = ", ".join(s.value for s in AgentStatus)
        raise InvalidMessageError(field, f"unknown status {text!r} (one of {allowed})") from None


def parse_operation(text: str, *, field: str = "AgentOperationRequest.operation") -> Operation:
    """Read an operation string (``start``, ``stop``, ``restart``; exact, lower case).

    Raises:
        InvalidMessageError: Empty or anything else.
    """
    try:
        return Operation(text)
    except ValueError:
        problem = "empty" if not text else f"unknown operation {text!r}"
        raise InvalidMessageError(field, f"{problem} (start, stop or restart)") from None


# --------------------------------------------------------------------------- checks


def _check_int(owner: str, name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{owner}.{name}: expected an integer in [{low}, {high}]; got {value!r}")


def _check_time(owner: str, name: str, value: int | None) -> None:
    if value is not None:
        _check_int(owner, name, value, 1, INT64_MAX)


def _check_text(owner: str, name: str, value: str, *, required: bool = False) -> None:
    if not isinstance(value, str) or (required and not value):
        raise ValueError(f"{owner}.{name}: expected a non-empty string; got {value!r}")


def _required(field: str, value: str) -> str:
    if not value:
        raise InvalidMessageError(field, "empty")
    return value


def _non_negative(field: str, value: int) -> int:
    if value < 0:
        raise InvalidMessageError(field, f"negative ({value})")
    return value


def _time(value: int) -> int | None:
    """A wire time (unix seconds) -> None when unknown (0, or a Go zero time)."""
    return value if value > 0 else None


# --------------------------------------------------------------------------- agents


@dataclass(frozen=True, slots=True)
class AgentInfoRecord:
    """One agent as ListAgents reports it (``proto.AgentInfo``).

    Attributes:
        id: The agent id (non-empty).
        type: The agent type, e.g. ``filebeat`` (may be empty).
        version: Its version, as the agent reports it or the updater installed it.
        status: Its status; None when the peer did not report one.
        pid: Its process id; 0 when not running.
        start_time: When its process started (unix seconds), or None.
        restart_count: How often it was restarted.
        last_heartbeat: Its last heartbeat (unix seconds), or None when it never sent one.
    """

    id: str
    type: str = ""
    version: str = ""
    status: AgentStatus | None = None
    pid: int = 0
    start_time: int | None = None
    restart_count: int = 0
    last_heartbeat: int | None = None

    def __post_init__(self) -> None:
        _check_text("AgentInfoRecord", "id", self.id, required=True)
        _check_text("AgentInfoRecord", "type", self.type)
        _check_text("AgentInfoRecord", "version", self.version)
        _check_int("AgentInfoRecord", "pid", self.pid, 0, INT32_MAX)
        _check_time("AgentInfoRecord", "start_time", self.start_time)
        _check_int("AgentInfoRecord", "restart_count", self.restart_count, 0, INT32_MAX)
        _check_time("AgentInfoRecord", "last_heartbeat", self.last_heartbeat)


def agent_info_to_message(record: AgentInfoRecord) -> daemon_pb2.AgentInfo:
    """The wire form of an :class:`AgentInfoRecord` (unknown times are 0)."""
    return daemon_pb2.AgentInfo(
        id=record.id,
        type=record.type,
        version=record.version,
        status=record.status.value if record.status else "",
        pid=record.pid,
        start_time=record.start_time or 0,
        restart_count=record.restart_count,
        last_heartbeat=record.last_heartbeat or 0,
    )


def agent_info_from_message(message: daemon_pb2.AgentInfo) -> AgentInfoRecord:
    """Read a ``proto.AgentInfo``.

    Raises:
        InvalidMessageError: Empty id, unknown status, negative pid or restart count.
    """
    return AgentInfoRecord(
        id=_required("AgentInfo.id", message.id),
        type=message.type,
        version=message.version,
        status=parse_agent_status(message.status, field="AgentInfo.status"),
        pid=_non_negative("AgentInfo.pid", message.pid),
        start_time=_time(message.start_time),
        restart_count=_non_negative("AgentInfo.restart_count", message.restart_count),
        last_heartbeat=_time(message.last_heartbeat),
    )


@dataclass(frozen=True, slots=True)
class AgentStateRecord:
    """One agent in SyncAgentStates (``proto.AgentState``).

    The Manager keeps its stored value for a field that is empty here: None (status,
    last_heartbeat) or the empty string (type, version).

    Attributes:
        agent_id: The agent id (non-empty).
        status: Its status, or None.
        pid: Its process id; 0 when not running.
        last_heartbeat: Its last heartbeat (unix seconds), or None.
        type: The agent type, or empty.
        version: Its version, or empty.
    """

    agent_id: str
    status: AgentStatus | None = None
    pid: int = 0
    last_heartbeat: int | None = None
    type: str = ""
    version: str = ""

    def __post_init__(self) -> None:
        _check_text("AgentStateRecord", "agent_id", self.agent_id, required=True)
        _check_int("AgentStateRecord", "pid", self.pid, 0, INT32_MAX)
        _check_time("AgentStateRecord", "last_heartbeat", self.last_heartbeat)
        _check_text("AgentStateRecord", "type", self.type)
        _check_text("AgentStateRecord", "version", self.version)


def agent_state_to_message(record: AgentStateRecord) -> daemon_pb2.AgentState:
    """The wire form of an :class:`AgentStateRecord`."""
    return daemon_pb2.AgentState(
        agent_id=record.agent_id,
        status=record.status.value if record.status else "",
        pid=record.pid,
        last_heartbeat=record.last_heartbeat or 0,
        type=record.type,
        version=record.version,
    )


def agent_state_from_message(message: daemon_pb2.AgentState) -> AgentStateRecord:
    """Read a ``proto.AgentState``.

    Raises:
        InvalidMessageError: Empty agent_id, unknown status, negative pid.
    """
    return AgentStateRecord(
        agent_id=_required("AgentState.agent_id", message.agent_id),
        status=parse_agent_status(message.status, field="AgentState.status"),
        pid=_non_negative("AgentState.pid", message.pid),
        last_heartbeat=_time(message.last_heartbeat),
        type=message.type,
        version=message.version,
    )


def agent_info_from_supervisor(
    info: supervisor.AgentInfo, *, version: str = "", last_heartbeat: float | None = None
) -> AgentInfoRecord:
    """The wire view of a supervisor's agent snapshot.

    Args:
        info: The snapshot (``Supervisor.status()``).
        version: The agent's version (the supervisor does not know it).
        last_heartbeat: The agent's last heartbeat, wall-clock seconds, if it sent one.

    Returns:
        The record (times truncated to whole seconds; a restart count beyond int32 is
        capped).
    """
    return AgentInfoRecord(
        id=info.id,
        type=info.type.value,
        version=version,
        status=AgentStatus(info.status.value),
        pid=info.pid if 0 < info.pid <= INT32_MAX else 0,
        start_time=_seconds(info.started_at),
        restart_count=min(max(info.restart_count, 0), INT32_MAX),
        last_heartbeat=_seconds(last_heartbeat),
    )


def agent_detail_from_supervisor(
    info: supervisor.AgentInfo, *, version: str = "", last_heartbeat: float | None = None
) -> hostvisor_pb2.AgentDetail:
    """``hostvisor.v1.AgentDetail`` (what ``hostvisor status`` shows) of a snapshot.

    Args:
        info: The snapshot (``Supervisor.status()``).
        version: The agent's version.
        last_heartbeat: The agent's last heartbeat, wall-clock seconds, if any.

    Returns:
        The message.
    """
    health = hostvisor_pb2.HEALTH_UNSPECIFIED
    if info.healthy is not None:
        health = hostvisor_pb2.HEALTH_HEALTHY if info.healthy else hostvisor_pb2.HEALTH_UNHEALTHY
    record = agent_info_from_supervisor(info, version=version, last_heartbeat=last_heartbeat)
    return hostvisor_pb2.AgentDetail(
        info=agent_info_to_message(record),
        name=info.name,
        enabled=info.enabled,
        health=health,
        health_summary=info.health.summary() if info.health is not None else "",
        last_error=info.last_error or "",
        last_exit=info.last_exit.describe() if info.last_exit is not None else "",
        consecutive_restarts=min(max(info.consecutive_restarts, 0), INT32_MAX),
        next_restart_at_ms=_millis(info.next_restart_at),
    )


def _seconds(wall: float | None) -> int | None:
    if wall is None or not math.isfinite(wall) or wall < 1:
        return None
    return min(int(wall), INT64_MAX)


def _millis(wall: float | None) -> int:
    if wall is None or not math.isfinite(wall) or wall <= 0:
        return 0
    return min(round(wall * 1000), INT64_MAX)


@dataclass(frozen=True, slots=True)
class StateChange:
    """A change of an agent's status (``hostvisor.v1.AgentStateChange``).

    Attributes:
        agent_id: The agent (non-empty).
        old_status: Its status before.
        new_status: Its status after.
        reason: Why, in words (may be empty).
        timestamp_ms: When (unix milliseconds), or None.
        pid: Its process after the change; 0 when none.
    """

    agent_id: str
    old_status: AgentStatus
    new_status: AgentStatus
    reason: str = ""
    timestamp_ms: int | None = None
    pid: int = 0

    def __post_init__(self) -> None:
        _check_text("StateChange", "agent_id", self.agent_id, required=True)
        _check_text("StateChange", "reason", self.reason)
        _check_time("StateChange", "timestamp_ms", self.timestamp_ms)
        _check_int("StateChange", "pid", self.pid, 0, INT32_MAX)


def state_change_to_message(change: StateChange) -> hostvisor_pb2.AgentStateChange:
    """The wire form of a :class:`StateChange`."""
    return hostvisor_pb2.AgentStateChange(
        agent_id=change.agent_id,
        old_status=change.old_status.value,
        new_status=change.new_status.value,
        reason=change.reason,
        timestamp_ms=change.timestamp_ms or 0,
        pid=change.pid,
    )


def state_change_from_message(message: hostvisor_pb2.AgentStateChange) -> StateChange:
    """Read a ``hostvisor.v1.AgentStateChange``.

    Raises:
        InvalidMessageError: Empty agent_id, a missing or unknown status, negative pid.
    """
    statuses: list[AgentStatus] = []
    for name in ("old_status", "new_status"):
        field = f"AgentStateChange.{name}"
        status = parse_agent_status(getattr(message, name), field=field)
        if status is None:
            raise InvalidMessageError(field, "empty")
        statuses.append(status)
    return StateChange(
        agent_id=_required("AgentStateChange.agent_id", message.agent_id),
        old_status=statuses[0],
        new_status=statuses[1],
        reason=message.reason,
        timestamp_ms=_time(message.timestamp_ms),
        pid=_non_negative("AgentStateChange.pid", message.pid),
    )


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class OperationRequest:
    """OperateAgent's request, validated.

    Attributes:
        agent_id: The agent (non-empty).
        operation: What to do.
    """

    agent_id: str
    operation: Operation

    def __post_init__(self) -> None:
        _check_text("OperationRequest", "agent_id", self.agent_id, required=True)


def operation_request_to_message(request: OperationRequest) -> daemon_pb2.AgentOperationRequest:
    """The wire form of an :class:`OperationRequest`."""
    return daemon_pb2.AgentOperationRequest(
        agent_id=request.agent_id, operation=request.operation.value
    )


def operation_request_from_message(message: daemon_pb2.AgentOperationRequest) -> OperationRequest:
    """Read OperateAgent's request.

    Raises:
        InvalidMessageError: Empty agent_id, empty or unknown operation.
    """
    return OperationRequest(
        agent_id=_required("AgentOperationRequest.agent_id", message.agent_id),
        operation=parse_operation(message.operation),
    )


@dataclass(frozen=True, slots=True)
class LogRequest:
    """GetAgentLogs' or FollowAgentLogs' request, validated.

    Attributes:
        agent_id: The agent.
        lines: How many of the last lines (GetAgentLogs: 1 to 1000; FollowAgentLogs'
            history: 0 to 1000).
    """

    agent_id: str
    lines: int


def parse_log_request(message: hostvisor_pb2.GetAgentLogsRequest) -> LogRequest:
    """Read GetAgentLogs' request (``lines`` 0 means :data:`DEFAULT_LOG_LINES`).

    Raises:
        InvalidMessageError: Empty agent_id; lines outside 0 to 1000.
    """
    agent_id = _required("GetAgentLogsRequest.agent_id", message.agent_id)
    lines = message.lines or DEFAULT_LOG_LINES
    if not 1 <= lines <= MAX_LOG_LINES:
        raise InvalidMessageError(
            "GetAgentLogsRequest.lines", f"{message.lines} is outside 1 to {MAX_LOG_LINES}"
        )
    return LogRequest(agent_id, lines)


def parse_follow_request(message: hostvisor_pb2.FollowAgentLogsRequest) -> LogRequest:
    """Read FollowAgentLogs' request.

    Raises:
        InvalidMessageError: Empty agent_id; tail_lines outside 0 to 1000.
    """
    agent_id = _required("FollowAgentLogsRequest.agent_id", message.agent_id)
    if not 0 <= message.tail_lines <= MAX_LOG_LINES:
        raise InvalidMessageError(
            "FollowAgentLogsRequest.tail_lines",
            f"{message.tail_lines} is outside 0 to {MAX_LOG_LINES}",
        )
    return LogRequest(agent_id, message.tail_lines)


def parse_metrics_request(message: daemon_pb2.AgentMetricsRequest) -> tuple[str, int]:
    """Read GetAgentMetrics' request.

    Returns:
        The agent id and the duration in seconds (0 or less means
        :data:`DEFAULT_METRICS_DURATION_S`).

    Raises:
        InvalidMessageError: Empty agent_id.
    """
    agent_id = _required("AgentMetricsRequest.agent_id", message.agent_id)
    duration = message.duration_seconds
    return agent_id, duration if duration > 0 else DEFAULT_METRICS_DURATION_S


# --------------------------------------------------------------------------- nodes, metrics


@dataclass(frozen=True, slots=True)
class NodeRegistration:
    """A daemon introducing itself to the Manager (``manager.RegisterNodeRequest``).

    Attributes:
        node_id: The node's id, chosen by the daemon (non-empty).
        hostname: The host's name.
        ip: The address the Manager reaches the daemon at.
        os: e.g. ``linux``.
        arch: e.g. ``amd64``.
        labels: Free-form labels (a read-only copy).
        daemon_version: The daemon's version.
        agent_version: The agent version the original reports (often empty).
    """

    node_id: str
    hostname: str = ""
    ip: str = ""
    os: str = ""
    arch: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    daemon_version: str = ""
    agent_version: str = ""

    def __post_init__(self) -> None:
        _check_text("NodeRegistration", "node_id", self.node_id, required=True)
        for name in ("hostname", "ip", "os", "arch", "daemon_version", "agent_version"):
            _check_text("NodeRegistration", name, getattr(self, name))
        labels = dict(self.labels)
        for key, value in labels.items():
            _check_text("NodeRegistration", f"labels[{key!r}]", value)
            _check_text("NodeRegistration", "labels (a key)", key)
        object.__setattr__(self, "labels", MappingProxyType(labels))


def registration_to_message(registration: NodeRegistration) -> manager_pb2.RegisterNodeRequest:
    """The wire form of a :class:`NodeRegistration`."""
    return manager_pb2.RegisterNodeRequest(
        node_id=registration.node_id,
        hostname=registration.hostname,
        ip=registration.ip,
        os=registration.os,
        arch=registration.arch,
        labels=dict(registration.labels),
        daemon_version=registration.daemon_version,
        agent_version=registration.agent_version,
    )


def registration_from_message(message: manager_pb2.RegisterNodeRequest) -> NodeRegistration:
    """Read RegisterNode's request.

    Raises:
        InvalidMessageError: Empty node_id.
    """
    return NodeRegistration(
        node_id=_required("RegisterNodeRequest.node_id", message.node_id),
        hostname=message.hostname,
        ip=message.ip,
        os=message.os,
        arch=message.arch,
        labels=dict(message.labels),
        daemon_version=message.daemon_version,
        agent_version=message.agent_version,
    )


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One collector's sample (``manager.MetricData``).

    Attributes:
        type: ``cpu``, ``memory``, ``disk``, ``network`` (or a plugin's type); non-empty.
        timestamp: When (unix seconds).
        values: The finite values by key (a read-only copy).
    """

    type: str
    timestamp: int
    values: Mapping[str, float]

    def __post_init__(self) -> None:
        _check_text("MetricPoint", "type", self.type, required=True)
        _check_int("MetricPoint", "timestamp", self.timestamp, INT64_MIN, INT64_MAX)
        values = dict(self.values)
        for key, value in values.items():
            _check_text("MetricPoint", "values (a key)", key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"MetricPoint.values[{key!r}]: expected a number; got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"MetricPoint.values[{key!r}]: not finite ({value!r})")
            values[key] = float(value)
        object.__setattr__(self, "values", MappingProxyType(values))

    @classmethod
    def finite(cls, type: str, timestamp: int, values: Mapping[str, float]) -> MetricPoint:
        """Build a point, dropping the values that are NaN or infinite.

        Args:
            type: The metric type.
            timestamp: When (unix seconds).
            values: The values, some perhaps not finite.

        Returns:
            The point.
        """
        return cls(type, timestamp, {k: v for k, v in values.items() if math.isfinite(v)})

    @classmethod
    def _of_wire(cls, type: str, timestamp: int, values: dict[str, float]) -> MetricPoint:
        """A point of a message's fields, without :meth:`__post_init__`'s checks: the
        wire's types already hold them (a ``map<string, double>``'s keys are strings and
        its values floats, an ``int64`` is in range), and the caller has checked the
        rest (``type`` non-empty, every value finite). ``values`` is kept, not copied.
        It costs a report's validation a third of what the checks would."""
        point = object.__new__(cls)
        object.__setattr__(point, "type", type)
        object.__setattr__(point, "timestamp", timestamp)
        object.__setattr__(point, "values", MappingProxyType(values))
        return point


def metric_to_message(point: MetricPoint) -> manager_pb2.MetricData:
    """The wire form of a :class:`MetricPoint`."""
    return manager_pb2.MetricData(
        type=point.type, timestamp=point.timestamp, values=dict(point.values)
    )


def metric_from_message(message: manager_pb2.MetricData) -> MetricPoint:
    """Read a ``manager.MetricData``; values that are NaN or infinite are dropped.

    Raises:
        InvalidMessageError: Empty type.
    """
    kind, isfinite = _required("MetricData.type", message.type), math.isfinite
    values = {key: value for key, value in message.values.items() if isfinite(value)}
    return MetricPoint._of_wire(kind, message.timestamp, values)


@dataclass(frozen=True, slots=True)
class ResourcePoint:
    """An agent's process tree at one moment (``proto.ResourceDataPoint``).

    Attributes:
        timestamp: When (unix seconds).
        cpu: CPU use in percent of one core (finite, >= 0; above 100 on several cores).
        memory_rss: Resident memory, bytes.
        memory_vms: Virtual memory, bytes.
        disk_read_bytes: Bytes read so far.
        disk_write_bytes: Bytes written so far.
        open_files: Open file descriptors.
    """

    timestamp: int
    cpu: float = 0.0
    memory_rss: int = 0
    memory_vms: int = 0
    disk_read_bytes: int = 0
    disk_write_bytes: int = 0
    open_files: int = 0

    def __post_init__(self) -> None:
        _check_int("ResourcePoint", "timestamp", self.timestamp, INT64_MIN, INT64_MAX)
        if isinstance(self.cpu, bool) or not isinstance(self.cpu, int | float):
            raise ValueError(f"ResourcePoint.cpu: expected a number; got {self.cpu!r}")
        if not (math.isfinite(self.cpu) and self.cpu >= 0):
            raise ValueError(f"ResourcePoint.cpu: expected a finite number >= 0; got {self.cpu!r}")
        object.__setattr__(self, "cpu", float(self.cpu))
        for name in ("memory_rss", "memory_vms", "disk_read_bytes", "disk_write_bytes"):
            _check_int("ResourcePoint", name, getattr(self, name), 0, UINT64_MAX)
        _check_int("ResourcePoint", "open_files", self.open_files, 0, INT32_MAX)


def resource_point_to_message(point: ResourcePoint) -> daemon_pb2.ResourceDataPoint:
    """The wire form of a :class:`ResourcePoint`."""
    return daemon_pb2.ResourceDataPoint(
        timestamp=point.timestamp,
        cpu=point.cpu,
        memory_rss=point.memory_rss,
        memory_vms=point.memory_vms,
        disk_read_bytes=point.disk_read_bytes,
        disk_write_bytes=point.disk_write_bytes,
        open_files=point.open_files,
    )


def resource_point_from_message(message: daemon_pb2.ResourceDataPoint) -> ResourcePoint:
    """Read a ``proto.ResourceDataPoint``.

    Raises:
        InvalidMessageError: cpu NaN, infinite or negative; open_files negative.
    """
    if not (math.isfinite(message.cpu) and message.cpu >= 0):
        raise InvalidMessageError(
            "ResourceDataPoint.cpu", f"expected a finite number >= 0; got {message.cpu!r}"
        )
    return ResourcePoint(
        timestamp=message.timestamp,
        cpu=message.cpu,
        memory_rss=message.memory_rss,
        memory_vms=message.memory_vms,
        disk_read_bytes=message.disk_read_bytes,
        disk_write_bytes=message.disk_write_bytes,
        open_files=_non_negative("ResourceDataPoint.open_files", message.open_files),
    )
