"""What the Manager accepts from daemons over gRPC: every request checked. PURE.

Theory of operation
-------------------
Each ``*_request`` function reads one request message of the daemon-facing service
(``manager.ManagerService`` and ``proto.DaemonService/SyncAgentStates``) into
:mod:`transport._convert`'s records, and checks what the conversion leaves open: the shape
of ``node_id``, the metric types, and bounds on every size (:class:`Limits`), so that one
request can neither fill the database nor the Manager's memory. A violation raises
:class:`~transport.InvalidMessageError`, which is a :class:`~transport.StatusError` with
``INVALID_ARGUMENT`` and the message ``"<Message.field>: <problem>"``; the gRPC bridge
answers it as is.

Leniency is inherited from the conversions and written down there: an empty status is "not
reported", ``error`` is ``failed``, a non-positive agent time is unknown, and a metric value
that is NaN or infinite is dropped (one broken gauge must not lose a report). Everything the
original Go daemon sends passes (tests replay a recording of it).

Two things are refused that the conversions would let through, because storing them would
go wrong later: a metric timestamp that no calendar can show (before 1970-01-01T00:00:01 or
after 9999-12-31), and an agent id named twice in one SyncAgentStates (one upsert cannot
apply both).

Nothing here reads a clock, a socket or a database.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from transport._convert import (
    AgentStateRecord,
    MetricPoint,
    NodeRegistration,
    agent_state_from_message,
    metric_from_message,
    registration_from_message,
)
from transport._errors import InvalidMessageError
from transport._pb import daemon_pb2, manager_pb2

__all__ = [
    "DEFAULT_LIMITS",
    "GRPC_PORT_METADATA_KEY",
    "KNOWN_METRIC_TYPES",
    "MAX_TIMESTAMP",
    "Limits",
    "Registration",
    "check_node_id",
    "grpc_port_from_metadata",
    "heartbeat_request",
    "metrics_request",
    "registration_request",
    "states_request",
]

GRPC_PORT_METADATA_KEY = "hostvisor-grpc-port"
"""RegisterNode request metadata by which our daemon announces the TCP port of its
``proto.DaemonService`` (the original daemon sends none: the Manager uses 9091)."""

KNOWN_METRIC_TYPES = frozenset({"cpu", "memory", "disk", "network"})
"""The original collectors' metric types; other types must match ``[a-z_]{1,32}``."""

MAX_TIMESTAMP = 253_402_300_799
"""9999-12-31T23:59:59Z, the last second a calendar date (and the REST API) can show."""

_NODE_ID = re.compile(r"[A-Za-z0-9._:-]+")
_METRIC_TYPE = re.compile(r"[a-z_]{1,32}")


@dataclass(frozen=True, slots=True)
class Limits:
    """The largest request the Manager accepts.

    Attributes:
        node_id: The longest node id (characters).
        text: The longest hostname, ip, os, arch, daemon_version, label value.
        agent_version: The longest agent_version (our daemon lists every agent's version).
        labels: The most labels a node may register with.
        metrics: The most MetricData in one ReportMetrics.
        values: The most values in one MetricData.
        value_key: The longest value key.
        states: The most AgentState in one SyncAgentStates.
        agent_id: The longest agent id, type or version of an AgentState.

    Raises:
        ValueError: A limit below 1.
    """

    node_id: int = 128
    text: int = 255
    agent_version: int = 65_536
    labels: int = 64
    metrics: int = 64
    values: int = 256
    value_key: int = 128
    states: int = 1000
    agent_id: int = 255

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name}: expected an integer >= 1; got {value!r}")


DEFAULT_LIMITS = Limits()
"""The limits the Manager runs with unless configured otherwise."""


def _too_many(field: str, count: int, limit: int, what: str) -> None:
    if count > limit:
        raise InvalidMessageError(field, f"more than {limit} {what} ({count})")


def _too_long(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidMessageError(field, f"longer than {limit} characters ({len(value)})")


def check_node_id(node_id: str, *, field: str, limits: Limits = DEFAULT_LIMITS) -> str:
    """Check a node id: required, ``[A-Za-z0-9._:-]``, at most ``limits.node_id`` long.

    Args:
        node_id: The id from the request.
        field: The message field, for the error (``HeartbeatRequest.node_id``).
        limits: The limits.

    Returns:
        ``node_id``.

    Raises:
        InvalidMessageError: Empty, too long, or another character.
    """
    if not node_id:
        raise InvalidMessageError(field, "empty")
    _too_long(field, node_id, limits.node_id)
    if _NODE_ID.fullmatch(node_id) is None:
        raise InvalidMessageError(
            field, f"{node_id!r} has a character other than A-Z a-z 0-9 . _ : -"
        )
    return node_id


def grpc_port_from_metadata(value: str | None) -> int | None:
    """The port announced in :data:`GRPC_PORT_METADATA_KEY`, if any.

    Args:
        value: The metadata's value, or None when absent.

    Returns:
        The port (1-65535), or None when not announced.

    Raises:
        InvalidMessageError: Not a decimal port number.
    """
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise InvalidMessageError(
            f"metadata {GRPC_PORT_METADATA_KEY}", f"expected a port 1-65535; got {value!r}"
        )
    return int(text)


@dataclass(frozen=True, slots=True)
class Registration:
    """A checked RegisterNode.

    Attributes:
        node: The node's registration.
        grpc_port: The port the daemon announced, or None.
    """

    node: NodeRegistration
    grpc_port: int | None = None


def registration_request(
    message: manager_pb2.RegisterNodeRequest,
    *,
    grpc_port: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Registration:
    """Read and check RegisterNode's request.

    Args:
        message: The request.
        grpc_port: The :data:`GRPC_PORT_METADATA_KEY` metadata's value, or None.
        limits: The limits.

    Returns:
        The registration.

    Raises:
        InvalidMessageError: A field out of bounds (named in the message).
    """
    check_node_id(message.node_id, field="RegisterNodeRequest.node_id", limits=limits)
    for name in ("hostname", "ip", "os", "arch", "daemon_version"):
        _too_long(f"RegisterNodeRequest.{name}", getattr(message, name), limits.text)
    _too_long("RegisterNodeRequest.agent_version", message.agent_version, limits.agent_version)
    _check_labels(message.labels, limits)
    port = grpc_port_from_metadata(grpc_port)
    return Registration(registration_from_message(message), port)


def _check_labels(labels: Mapping[str, str], limits: Limits) -> None:
    field = "RegisterNodeRequest.labels"
    _too_many(field, len(labels), limits.labels, "labels")
    for key, value in labels.items():
        if not key:
            raise InvalidMessageError(field, "an empty key")
        _too_long(f"{field}[{key[:64]!r}] (the key)", key, limits.text)
        _too_long(f"{field}[{key!r}]", value, limits.text)


def heartbeat_request(
    message: manager_pb2.HeartbeatRequest, *, limits: Limits = DEFAULT_LIMITS
) -> str:
    """Read and check Heartbeat's request (its timestamp is the daemon's business: the
    Manager's own clock says when it heard from the node).

    Returns:
        The node id.

    Raises:
        InvalidMessageError: A bad node id.
    """
    return check_node_id(message.node_id, field="HeartbeatRequest.node_id", limits=limits)


def metrics_request(
    message: manager_pb2.ReportMetricsRequest, *, limits: Limits = DEFAULT_LIMITS
) -> tuple[str, tuple[MetricPoint, ...]]:
    """Read and check ReportMetrics' request.

    Args:
        message: The request.
        limits: The limits.

    Returns:
        The node id and the points (non-finite values dropped), in request order.

    Raises:
        InvalidMessageError: A bad node id, too many metrics or values, a bad type, key or
            timestamp (the field is named with the metric's index).
    """
    node_id = check_node_id(message.node_id, field="ReportMetricsRequest.node_id", limits=limits)
    _too_many("ReportMetricsRequest.metrics", len(message.metrics), limits.metrics, "metrics")
    points = tuple(_metric(index, metric, limits) for index, metric in enumerate(message.metrics))
    return node_id, points


def _metric(index: int, message: manager_pb2.MetricData, limits: Limits) -> MetricPoint:
    """Check one MetricData (the field named ``ReportMetricsRequest.metrics[index]``,
    spelled out only for an error: a report has thousands of keys a minute)."""
    kind = message.type
    if kind not in KNOWN_METRIC_TYPES and _METRIC_TYPE.fullmatch(kind) is None:
        problem = "empty" if not kind else f"{kind[:64]!r} is not cpu, memory, disk, network"
        if kind:
            problem += " or [a-z_]{1,32}"
        raise InvalidMessageError(f"{_where(index)}.type", problem)
    if not 1 <= message.timestamp <= MAX_TIMESTAMP:
        raise InvalidMessageError(
            f"{_where(index)}.timestamp",
            f"expected unix seconds from 1 to {MAX_TIMESTAMP}; got {message.timestamp}",
        )
    values = message.values
    if len(values) > limits.values:
        _too_many(f"{_where(index)}.values", len(values), limits.values, "values")
    longest = limits.value_key
    for key in values:
        if not key:
            raise InvalidMessageError(f"{_where(index)}.values", "an empty key")
        if len(key) > longest:
            _too_long(f"{_where(index)}.values (a key)", key, longest)
    return metric_from_message(message)


def _where(index: int) -> str:
    return f"ReportMetricsRequest.metrics[{index}]"


def states_request(
    message: daemon_pb2.SyncAgentStatesRequest, *, limits: Limits = DEFAULT_LIMITS
) -> tuple[str, tuple[AgentStateRecord, ...]]:
    """Read and check SyncAgentStates' request (the daemon's whole list of agents).

    Args:
        message: The request.
        limits: The limits.

    Returns:
        The node id and the states, in request order.

    Raises:
        InvalidMessageError: A bad node id, too many states, an empty or repeated agent id,
            an unknown status, a negative pid, a field too long.
    """
    node_id = check_node_id(message.node_id, field="SyncAgentStatesRequest.node_id", limits=limits)
    _too_many("SyncAgentStatesRequest.states", len(message.states), limits.states, "states")
    seen: set[str] = set()
    states: list[AgentStateRecord] = []
    for index, state in enumerate(message.states):
        where = f"SyncAgentStatesRequest.states[{index}]"
        for name in ("agent_id", "type", "version"):
            _too_long(f"{where}.{name}", getattr(state, name), limits.agent_id)
        if state.agent_id in seen:
            raise InvalidMessageError(f"{where}.agent_id", f"{state.agent_id!r} appears twice")
        seen.add(state.agent_id)
        try:
            states.append(agent_state_from_message(state))
        except InvalidMessageError as exc:  # name the index: "AgentState.pid" -> "...[3].pid"
            field, _, problem = exc.details.partition(": ")
            raise InvalidMessageError(f"{where}.{field.rpartition('.')[2]}", problem) from None
    return node_id, tuple(states)
