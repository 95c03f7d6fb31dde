"""The heartbeat receiver: newline-delimited JSON over a private Unix stream socket.

Theory of operation
-------------------
Agents connect to one Unix stream socket and write one JSON object per line with the
seed's ``Heartbeat`` fields (``pid``, ``timestamp``, ``version``, ``status``, ``cpu``,
``memory``). The server is a self-contained Trio service; it knows nothing about agents
beyond two callables the supervisor hands it:

* ``resolve(pid) -> agent_id | None`` attributes a connection. The peer is identified
  by the kernel (``SO_PEERCRED``: pid, uid and gid of the process that called
  ``connect``), never by what the peer writes. A peer with another uid than ours, or
  whose pid ``resolve`` does not know, is a stranger: its connection is closed at once
  and counted. ``resolve`` is called once per connection, so its cost (e.g. walking
  ``/proc`` to decide "the agent or one of its descendants") is paid once.
* ``on_heartbeat(agent_id, heartbeat)`` is called synchronously for each valid line.
  It must not block; an exception from it is a bug in the caller and propagates out of
  :meth:`HeartbeatServer.run`.

Every defence is per connection, so a misbehaving peer never disturbs the others:

* at most ``max_line`` bytes (plus the newline) are ever buffered for a connection; a
  longer line closes the connection (``oversized``) without reading the rest of it;
* each line must be complete within ``idle_timeout_s`` of the previous heartbeat (or of
  the connection): a silent connection is ``idle``, one that drips a partial line is
  ``slow``; both are closed;
* a line that is not a JSON object with well-typed fields closes the connection
  (``malformed``); unknown extra fields are ignored;
* at most ``max_connections`` connections in all and ``max_connections_per_agent`` per
  agent are served; beyond that a new connection is closed (``over_limit``).

The socket file is created by :func:`~supervisor._health._sockets.bind_private_socket`
(0600 in a 0700 directory, stale file replaced, removed on exit only if still ours),
like the notify server's.

Wake-ups are what an idle supervisor pays for (each costs about 0.3 ms of CPU on a small
VM, far more than reading a line), so connections are not served by one task each.
Every connection is registered in a private ``epoll`` set, and one task waits until that
set is readable, drains every ready connection at once (non-blocking reads, at most
``_MAX_READS`` per connection per round, so a flooding peer cannot starve the others),
then sleeps ``resolution_s`` before it waits again. 300 agents beating every 10 s thus
cost about one wake-up per ``resolution_s``, not 30 per second; a lone heartbeat is still
read at once. The only wake-ups besides are new connections and the earliest idle
deadline. The price: a heartbeat's ``received_at`` may be up to ``resolution_s`` late.

Times: ``received_at`` is Trio's clock (:func:`trio.current_time`), the clock the health
decisions use; ``timestamp`` is the agent's own wall-clock claim, informational only.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import select
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import trio

from supervisor.agent import ENV_HEARTBEAT_SOCKET

from ._sockets import PrivateSocket, peer_credentials, remove_socket_file

__all__ = [
    "ENV_HEARTBEAT_SOCKET",
    "Heartbeat",
    "HeartbeatServer",
    "HeartbeatStatistics",
    "parse_heartbeat",
]

logger = logging.getLogger("supervisor.heartbeat")


_ACCEPT_RETRY_S = 0.1  # what trio.serve_listeners waits after EMFILE and friends
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_MAX_READS = 16  # recv calls per connection per drain round
_EPOLL_IN = select.EPOLLIN | select.EPOLLRDHUP
_MAX_UINT64 = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One heartbeat line, validated and attributed.

    Attributes:
        pid: The pid the agent claims (the peer's pid when the line has none).
        timestamp: The agent's wall-clock time in Unix seconds, or None if absent.
        version: The agent's version string ("" if absent).
        status: The agent's own status word ("" if absent).
        cpu: The agent's own CPU percent (0.0 if absent).
        memory: The agent's own memory figure in bytes (0 if absent).
        received_at: Trio time (:func:`trio.current_time`) when the line was read.
        peer_pid: The pid of the connected process, from ``SO_PEERCRED``.
    """

    pid: int
    timestamp: float | None
    version: str
    status: str
    cpu: float
    memory: int
    received_at: float
    peer_pid: int


@dataclass(frozen=True, slots=True)
class HeartbeatStatistics:
    """Counters of a :class:`HeartbeatServer`, from :meth:`HeartbeatServer.statistics`.

    Attributes:
        connections_active: Agent connections open now.
        connections_accepted: Agent connections served since start.
        strangers: Connections closed because the peer was not an agent (unknown pid or
            another uid).
        over_limit: Connections closed because a connection limit was reached.
        heartbeats: Valid heartbeats delivered to ``on_heartbeat``.
        pid_mismatches: Heartbeats whose ``pid`` differed from the peer's pid (still
            delivered, attributed to the peer's agent).
        malformed: Connections closed for a line that was not a valid heartbeat (or a
            partial line at end of stream).
        oversized: Connections closed for a line longer than ``max_line``.
        idle: Connections closed for sending nothing within ``idle_timeout_s``.
        slow: Connections closed for not completing a started line within
            ``idle_timeout_s``.
        accept_errors: Failed ``accept`` calls (e.g. out of file descriptors).
    """

    connections_active: int = 0
    connections_accepted: int = 0
    strangers: int = 0
    over_limit: int = 0
    heartbeats: int = 0
    pid_mismatches: int = 0
    malformed: int = 0
    oversized: int = 0
    idle: int = 0
    slow: int = 0
    accept_errors: int = 0


class _Invalid(ValueError):
    """A heartbeat line that is not acceptable; the message says why."""


def _int_field(obj: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = obj.get(key, default)
    if type(value) is not int or not lo <= value <= hi:
        raise _Invalid(f"{key} must be an integer in [{lo}, {hi}], not {value!r}")
    return value


def _str_field(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise _Invalid(f"{key} must be a string, not {value!r}")
    return value


def _timestamp(value: object) -> float | None:
    if value is None:
        return None
    if type(value) in (int, float):
        result = float(value)  # type: ignore[arg-type]
    elif isinstance(value, str):
        # Go's time.Time marshals as RFC 3339 with up to 9 fractional digits; Python
        # parses at most 6, so the nanoseconds are cut off before parsing.
        head, dot, frac = value.partition(".")
        if dot:
            digits = len(frac) - len(frac.lstrip("0123456789"))
            value = f"{head}.{frac[: min(digits, 6)]}{frac[digits:]}"
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise _Invalid(f"timestamp is not RFC 3339: {value!r}") from None
        if parsed.tzinfo is None:
            raise _Invalid(f"timestamp has no time zone: {value!r}")
        result = parsed.timestamp()
    else:
        raise _Invalid(f"timestamp must be a string or a number, not {value!r}")
    if not math.isfinite(result):
        raise _Invalid(f"timestamp is not finite: {value!r}")
    return result


def parse_heartbeat(line: bytes, *, peer_pid: int, received_at: float) -> Heartbeat:
    """Validate one heartbeat line (without its newline).

    Every field is optional, as with the seed's Go decoder; present fields must have the
    right type. Unknown fields are ignored.

    Args:
        line: The raw line, UTF-8 JSON.
        peer_pid: The connected process's pid; the default for a missing ``pid``.
        received_at: Trio time of arrival.

    Returns:
        The heartbeat.

    Raises:
        ValueError: The line is not a JSON object with valid fields.
    """
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:  # deep nesting raises RecursionError
        raise _Invalid(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise _Invalid(f"not a JSON object: {type(obj).__name__}")
    cpu = obj.get("cpu", 0.0)
    if type(cpu) not in (int, float) or not math.isfinite(cpu) or cpu < 0:
        raise _Invalid(f"cpu must be a finite number >= 0, not {cpu!r}")
    return Heartbeat(
        pid=_int_field(obj, "pid", peer_pid, 1, 2**31 - 1),
        timestamp=_timestamp(obj.get("timestamp")),
        version=_str_field(obj, "version"),
        status=_str_field(obj, "status"),
        cpu=float(cpu),
        memory=_int_field(obj, "memory", 0, 0, _MAX_UINT64),
        received_at=received_at,
        peer_pid=peer_pid,
    )


@dataclass(slots=True)
class _Connection:
    """One agent connection: its socket, owner, partial line and idle deadline."""

    sock: socket.socket
    agent_id: str
    peer_pid: int
    deadline: float
    buf: bytearray = field(default_factory=bytearray)


class HeartbeatServer:
    """Receives heartbeats from agents over a private Unix stream socket.

    Example::

        def on_heartbeat(agent_id: str, hb: Heartbeat) -> None:
            print(agent_id, hb.status)

        server = HeartbeatServer("/run/hostvisor/heartbeat.sock",
                                 resolve=agent_of_pid, on_heartbeat=on_heartbeat)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)

    Args:
        path: The socket file's path (at most 107 bytes).
        resolve: Maps a peer pid to its agent id, or None for a stranger.
        on_heartbeat: Called with (agent_id, heartbeat) for each valid line; must not block.
        max_line: Longest accepted line in bytes, without the newline.
        idle_timeout_s: Time allowed for each complete line, from the connection or the
            previous heartbeat; should exceed the agents' heartbeat interval.
        max_connections: Agent connections served at once, in all.
        max_connections_per_agent: Agent connections served at once for one agent.
        resolution_s: After each round of reading, wait this long before the next (see
            the module docstring): at most one wake-up per period for all connections.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        resolve: Callable[[int], str | None],
        on_heartbeat: Callable[[str, Heartbeat], None],
        max_line: int = 64 * 1024,
        idle_timeout_s: float = 120.0,
        max_connections: int = 1024,
        max_connections_per_agent: int = 8,
        resolution_s: float = 1.0,
    ) -> None:
        if max_line < 1 or idle_timeout_s <= 0 or max_connections < 1:
            raise ValueError("max_line, idle_timeout_s and max_connections must be positive")
        if max_connections_per_agent < 1:
            raise ValueError("max_connections_per_agent must be positive")
        if not resolution_s >= 0:
            raise ValueError("resolution_s must not be negative")
        self.path = os.fspath(path)
        self.socket = PrivateSocket(self.path, socket.SOCK_STREAM)
        self._resolve = resolve
        self._on_heartbeat = on_heartbeat
        self._max_line = max_line
        self._idle_timeout_s = idle_timeout_s
        self._max_connections = max_connections
        self._max_per_agent = max_connections_per_agent
        self._uid = os.geteuid()
        self.resolution_s = resolution_s
        self._counts: Counter[str] = Counter()
        self._per_agent: Counter[str] = Counter()
        self._conns: dict[int, _Connection] = {}
        self._ready: select.epoll | None = None
        self._wait: trio.CancelScope | None = None

    def statistics(self) -> HeartbeatStatistics:
        """A snapshot of the counters."""
        names = (f.name for f in fields(HeartbeatStatistics))
        return HeartbeatStatistics(**{name: self._counts[name] for name in names})

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started()`` once the socket accepts.

        Raises:
            SocketSetupError: The socket could not be created (before ``started``).
        """
        listener, ours = self.socket.take()
        ready = select.epoll()
        self._ready = ready
        try:
            listener.setblocking(False)
            listener.listen(socket.SOMAXCONN)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._drain_loop, ready)
                task_status.started()
                while True:
                    await trio.lowlevel.wait_readable(listener)
                    await self._accept_all(listener, ready)
        finally:
            for conn in list(self._conns.values()):
                self._close(conn, "")
            ready.close()
            listener.close()
            remove_socket_file(self.path, ours)

    async def _accept_all(self, listener: socket.socket, ready: select.epoll) -> None:
        """Accept every pending connection (one wake-up serves a burst of them)."""
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRNOS:
                    raise
                self._counts["accept_errors"] += 1
                logger.warning("heartbeat accept failed: %s", exc)
                await trio.sleep(_ACCEPT_RETRY_S)
                return
            admitted = self._admit(sock)
            if admitted is None:
                sock.close()
                continue
            sock.setblocking(False)
            deadline = trio.current_time() + self._idle_timeout_s
            conn = _Connection(sock, *admitted, deadline)
            self._conns[sock.fileno()] = conn
            ready.register(sock.fileno(), _EPOLL_IN)
            if self._wait is not None and deadline < self._wait.deadline:
                self._wait.deadline = deadline

    def _admit(self, conn: socket.socket) -> tuple[str, int] | None:
        """The (agent id, peer pid) a new connection serves, or None (counted) to close it."""
        try:
            pid, uid, _gid = peer_credentials(conn)
        except OSError:
            pid, uid = 0, -1
        agent_id = self._resolve(pid) if uid == self._uid and pid > 0 else None
        if agent_id is None:
            self._counts["strangers"] += 1
            return None
        if (
            self._counts["connections_active"] >= self._max_connections
            or self._per_agent[agent_id] >= self._max_per_agent
        ):
            self._counts["over_limit"] += 1
            logger.warning("heartbeat connection limit reached (agent %r)", agent_id)
            return None
        self._counts["connections_accepted"] += 1
        self._counts["connections_active"] += 1
        self._per_agent[agent_id] += 1
        return agent_id, pid

    def _close(self, conn: _Connection, reason: str) -> None:
        """Close a connection; ``reason`` is the counter to bump ("" for none)."""
        fd = conn.sock.fileno()
        if self._conns.pop(fd, None) is None:
            return
        if self._ready is not None:
            with contextlib.suppress(OSError, ValueError):
                self._ready.unregister(fd)
        conn.sock.close()
        self._counts["connections_active"] -= 1
        self._per_agent[conn.agent_id] -= 1
        if not self._per_agent[conn.agent_id]:
            del self._per_agent[conn.agent_id]
        if reason:
            self._counts[reason] += 1
            logger.info("heartbeat connection of agent %r dropped: %s", conn.agent_id, reason)

    async def _drain_loop(self, ready: select.epoll) -> None:
        """Wait until some connection is readable or a deadline passes; drain; pause."""
        while True:
            deadline = min((c.deadline for c in self._conns.values()), default=math.inf)
            with trio.CancelScope(deadline=deadline) as self._wait:
                await trio.lowlevel.wait_readable(ready.fileno())
            self._wait = None
            self._drain(ready, trio.current_time())
            await trio.sleep(self.resolution_s)

    def _drain(self, ready: select.epoll, now: float) -> None:
        """Read every ready connection, then drop those past their idle deadline."""
        for fd, _events in ready.poll(0):
            conn = self._conns.get(fd)
            if conn is not None:
                reason = self._read(conn, now)
                if reason is not None:
                    self._close(conn, reason)
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            self._close(conn, "slow" if conn.buf else "idle")

    def _read(self, conn: _Connection, now: float) -> str | None:
        """Take what a connection has; None to keep it, else the reason to close it."""
        limit = self._max_line + 1  # a full line plus its newline
        for _ in range(_MAX_READS):
            wanted = limit - len(conn.buf)
            try:
                data = conn.sock.recv(wanted)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError:  # e.g. ECONNRESET: the peer is gone
                return ""
            if not data:
                return "malformed" if conn.buf.strip() else ""
            conn.buf += data
            reason = self._lines(conn, now)
            if reason is not None:
                return reason
            if len(conn.buf) >= limit:
                return "oversized"
            if len(data) < wanted:
                return None  # drained for now; epoll reports it again when more comes
        return None

    def _lines(self, conn: _Connection, now: float) -> str | None:
        """Deliver the complete lines in a connection's buffer; a reason to close, or None."""
        buf = conn.buf
        while (newline := buf.find(b"\n")) >= 0:
            line = bytes(buf[:newline])
            del buf[: newline + 1]
            if len(line) > self._max_line:
                return "oversized"
            if not line.strip():
                continue  # blank lines are tolerated, but do not count as a heartbeat
            try:
                heartbeat = parse_heartbeat(line, peer_pid=conn.peer_pid, received_at=now)
            except ValueError as exc:
                logger.info("bad heartbeat from agent %r: %s", conn.agent_id, exc)
                return "malformed"
            if heartbeat.pid != conn.peer_pid:
                self._counts["pid_mismatches"] += 1
            self._counts["heartbeats"] += 1
            self._on_heartbeat(conn.agent_id, heartbeat)
            conn.deadline = now + self._idle_timeout_s
        return None
