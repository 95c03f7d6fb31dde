"""What the daemon pool answers beyond transport's records: agent details, log streams,
its statistics and its channels' options (split out of :mod:`transport.manager._pool`).

Theory of operation
-------------------
:func:`agent_detail_record` reads a ``hostvisor.v1.AgentDetail`` (ListAgentDetails) into
an :class:`AgentDetailRecord`, pure; a field that breaks the contract raises
:class:`~transport.InvalidMessageError` (the pool turns it into ``DaemonAnswerError``).

:class:`LogStream` is what :meth:`DaemonPool.follow_logs
<transport.manager._pool.DaemonPool.follow_logs>` yields: the chunks of a
FollowAgentLogs stream as :class:`LogLines`, with a failure of the stream translated by
the pool's own rule (``UNAVAILABLE`` and ``DEADLINE_EXCEEDED`` evict the channel and
become ``DaemonUnreachableError``; other statuses pass unchanged). The stream never ends
by itself while the agent lives: the caller leaves the ``async with`` (the call is then
cancelled on the wire, and the daemon's handler ends).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from transport import (
    AgentInfoRecord,
    RemoteError,
    ResponseStream,
    TransportError,
    agent_info_from_message,
    hostvisor_pb2,
)

from ._errors import ManagerError

__all__ = [
    "KEEPALIVE_TIMEOUT_S",
    "MAX_MESSAGE_BYTES",
    "AgentDetailRecord",
    "LogLines",
    "LogStream",
    "PoolStatistics",
    "agent_detail_record",
    "channel_options",
]

KEEPALIVE_TIMEOUT_S = 10.0
"""How long a keepalive ping may go unanswered before the connection counts as dead."""
MAX_MESSAGE_BYTES = 16 << 20
"""The largest response accepted (1000 log lines of a chatty agent fit many times)."""

_HEALTH = {
    hostvisor_pb2.HEALTH_HEALTHY: "healthy",
    hostvisor_pb2.HEALTH_UNHEALTHY: "unhealthy",
}


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """Counts since the pool was made.

    Attributes:
        open_channels: Channels open now (including evicted ones still finishing calls).
        opened: Channels opened.
        calls: Calls made (or tried: a call to a node without an address counts).
        failures: Calls that raised, for any reason.
        unreachable: Calls that raised :class:`~transport.manager.DaemonUnreachableError`.
        evictions: Channels taken out after ``UNAVAILABLE`` or ``DEADLINE_EXCEEDED``.
        lru_closes: Channels closed to stay within ``max_channels``.
        idle_closes: Channels closed after ``idle_s`` unused.
    """

    open_channels: int
    opened: int
    calls: int
    failures: int
    unreachable: int
    evictions: int
    lru_closes: int
    idle_closes: int


def channel_options(keepalive_s: float | None) -> tuple[tuple[str, int | str], ...]:
    """The grpc arguments of the pool's channels.

    Args:
        keepalive_s: Ping interval during calls; None: no pings.

    Returns:
        The arguments.
    """
    options: list[tuple[str, int | str]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        # A channel of its own subchannels: by default grpc shares them between channels to
        # one target, and a new channel after an eviction would inherit the old one's
        # failure and reconnect backoff instead of dialling afresh.
        ("grpc.use_local_subchannel_pool", 1),
        # Reconnect promptly after a daemon restart (evicted channels dial afresh anyway).
        ("grpc.initial_reconnect_backoff_ms", 1_000),
        ("grpc.max_reconnect_backoff_ms", 10_000),
    ]
    if keepalive_s is not None:
        options += [
            ("grpc.keepalive_time_ms", round(keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", round(KEEPALIVE_TIMEOUT_S * 1000)),
            ("grpc.keepalive_permit_without_calls", 0),
        ]
    return tuple(options)


@dataclass(frozen=True, slots=True)
class AgentDetailRecord:
    """One agent as ListAgentDetails reports it (what ``hostvisor status`` shows).

    Attributes:
        info: The original's AgentInfo fields.
        name: The agent's display name.
        enabled: Whether it is enabled.
        health: ``healthy``, ``unhealthy`` or ``unknown`` (never started, or stopped).
        health_summary: One line, e.g. ``unhealthy: heartbeat: none for 95.0s``.
        last_error: Why it last failed or was restarted.
        last_exit: How its last process ended, e.g. ``exit status 1``.
        consecutive_restarts: Automatic restarts in a row.
        next_restart_at: A scheduled restart (unix seconds), or None.
    """

    info: AgentInfoRecord
    name: str = ""
    enabled: bool = True
    health: str = "unknown"
    health_summary: str = ""
    last_error: str = ""
    last_exit: str = ""
    consecutive_restarts: int = 0
    next_restart_at: float | None = None


def agent_detail_record(message: hostvisor_pb2.AgentDetail) -> AgentDetailRecord:
    """Read a ``hostvisor.v1.AgentDetail``.

    Args:
        message: The message.

    Returns:
        The record (an unknown health value reads ``unknown``).

    Raises:
        InvalidMessageError: Its AgentInfo breaks the contract.
    """
    return AgentDetailRecord(
        info=agent_info_from_message(message.info),
        name=message.name,
        enabled=message.enabled,
        health=_HEALTH.get(message.health, "unknown"),
        health_summary=message.health_summary,
        last_error=message.last_error,
        last_exit=message.last_exit,
        consecutive_restarts=max(0, message.consecutive_restarts),
        next_restart_at=message.next_restart_at_ms / 1000
        if message.next_restart_at_ms > 0
        else None,
    )


@dataclass(frozen=True, slots=True)
class LogLines:
    """One chunk of a followed log.

    Attributes:
        lines: New lines, oldest first (the first chunk: the history asked for).
        dropped: Lines the daemon skipped before these because the reader was slow.
    """

    lines: tuple[str, ...]
    dropped: int = 0


class LogStream:
    """The chunks of a followed log (``async for chunk in stream``); see the module.

    Args:
        responses: The FollowAgentLogs stream.
        where: The node and target, for messages.
        failure: The pool's translation of a failed stream (the error to raise).
    """

    def __init__(
        self,
        responses: ResponseStream[hostvisor_pb2.LogChunk],
        where: str,
        failure: Callable[[RemoteError], Exception],
    ) -> None:
        self._responses = responses
        self._where = where
        self._failure = failure

    def __aiter__(self) -> LogStream:
        return self

    async def __anext__(self) -> LogLines:
        """The next chunk.

        Raises:
            StopAsyncIteration: The daemon ended the stream (OK).
            DaemonUnreachableError: The daemon went away (the channel is evicted).
            RemoteError: ``NOT_FOUND`` (no such agent, or it was removed),
                ``FAILED_PRECONDITION``, ``UNIMPLEMENTED`` (an original daemon), ...
            ManagerError: The channel was closed under the stream.
        """
        try:
            chunk = await self._responses.__anext__()
        except RemoteError as exc:
            error = self._failure(exc)
            if error is exc:
                raise
            raise error from exc
        except TransportError as exc:
            raise ManagerError(f"{self._where}: {exc}") from exc
        return LogLines(tuple(chunk.lines), int(chunk.dropped_lines))
