"""The sd_notify receiver: systemd's notify protocol over a private datagram socket.

Theory of operation
-------------------
systemd gives a ``Type=notify`` service a ``NOTIFY_SOCKET``; the service sends datagrams
of newline-separated ``KEY=VALUE`` assignments (``READY=1``, ``WATCHDOG=1``,
``STATUS=...``, ``STOPPING=1``, ``RELOADING=1``, ``MAINPID=``, ``WATCHDOG_USEC=``,
``EXTEND_TIMEOUT_USEC=``). :class:`NotifyServer` speaks the receiving half, so agents
that already call ``sd_notify`` (libsystemd, Go's coreos/go-systemd, python-systemd,
``systemd-notify``) work unchanged under the supervisor.

One ``AF_UNIX``/``SOCK_DGRAM`` socket serves every agent. It is created like the
heartbeat socket (see :func:`supervisor._health._sockets.bind_private_socket`: file 0600
in a 0700 directory, stale file replaced). With ``SO_PASSCRED`` the kernel attaches the
sender's pid, uid and gid to every datagram (``SCM_CREDENTIALS``), so attribution never
trusts the payload: ``resolve(pid) -> agent_id | None`` decides, and a datagram from
another uid or an unknown pid is dropped and counted (``strangers``).

Each datagram is received whole with ``recvmsg`` into a ``max_datagram`` buffer (systemd
uses 4096 bytes too); a longer one arrives truncated and is dropped (``truncated``). The
ancillary buffer has room for the credentials only: file descriptors (systemd's
``FDSTORE=1``, not supported here) then do not fit, the kernel discards them instead of
installing them in our process, and the datagram is dropped (``with_fds``). Parsing is
the pure :func:`parse_notify`: UTF-8 without NUL bytes, blank lines skipped, boolean keys
must be exactly ``1``, numbers plain ASCII digits; an assignment the parser does not
understand (unknown key or invalid value) is kept in :attr:`NotifyMessage.other` rather
than failing the datagram.

``on_message(agent_id, message)`` is a synchronous callback, called in arrival order.
What to make of a message (READY ends the start wait, WATCHDOG is a heartbeat, STOPPING
is honoured, MAINPID is believed only inside the agent's tree) is the supervisor's call.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import trio

from ._sockets import PrivateSocket, remove_socket_file

__all__ = [
    "NotifyMessage",
    "NotifyServer",
    "NotifyStatistics",
    "notify_env",
    "parse_notify",
]

logger = logging.getLogger("supervisor.notify")

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_ANCBUF = socket.CMSG_SPACE(_UCRED.size)  # exactly one SCM_CREDENTIALS, no room for fds
_RETRY_S = 0.1  # after a transient recvmsg failure (out of memory)
_MAX_DIGITS = 20  # enough for any uint64
_BOOLEAN_KEYS = {"READY": "ready", "RELOADING": "reloading", "STOPPING": "stopping"}
_NUMBER_KEYS = {
    "MAINPID": ("main_pid", 1),
    "WATCHDOG_USEC": ("watchdog_usec", 1),
    "EXTEND_TIMEOUT_USEC": ("extend_timeout_usec", 0),
}


@dataclass(frozen=True, slots=True)
class NotifyMessage:
    """What one notify datagram said. Fields not in the datagram keep their defaults.

    Attributes:
        pid: The sender's pid, from the kernel (``SCM_CREDENTIALS``).
        received_at: Trio time (:func:`trio.current_time`) of arrival.
        ready: ``READY=1``: start-up is complete.
        reloading: ``RELOADING=1``: the agent is reloading its configuration.
        stopping: ``STOPPING=1``: the agent is shutting down of its own accord.
        watchdog: ``WATCHDOG=1``: a keep-alive.
        watchdog_trigger: ``WATCHDOG=trigger``: the agent asks to be treated as hung.
        status: ``STATUS=...``: free-form status text, or None.
        main_pid: ``MAINPID=``: the agent's claimed main process, or None.
        watchdog_usec: ``WATCHDOG_USEC=``: a new watchdog timeout, or None.
        extend_timeout_usec: ``EXTEND_TIMEOUT_USEC=``: asks for that much more time for
            the current start or stop, or None.
        other: Assignments not understood (unknown keys, invalid values), in order.
    """

    pid: int
    received_at: float
    ready: bool = False
    reloading: bool = False
    stopping: bool = False
    watchdog: bool = False
    watchdog_trigger: bool = False
    status: str | None = None
    main_pid: int | None = None
    watchdog_usec: int | None = None
    extend_timeout_usec: int | None = None
    other: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class NotifyStatistics:
    """Counters of a :class:`NotifyServer`, from :meth:`NotifyServer.statistics`.

    Attributes:
        datagrams: Datagrams received, whatever became of them.
        messages: Messages delivered to ``on_message``.
        strangers: Datagrams dropped because the sender was not an agent (unknown pid,
            another uid, or no credentials).
        truncated: Datagrams dropped for being longer than ``max_datagram``.
        with_fds: Datagrams dropped because they carried file descriptors.
        malformed: Datagrams dropped for not being UTF-8 text with assignments.
    """

    datagrams: int = 0
    messages: int = 0
    strangers: int = 0
    truncated: int = 0
    with_fds: int = 0
    malformed: int = 0


def _number(value: str, minimum: int) -> int | None:
    if not (value.isascii() and value.isdigit()) or len(value) > _MAX_DIGITS:
        return None
    number = int(value)
    return number if number >= minimum else None


def parse_notify(data: bytes, *, pid: int, received_at: float) -> NotifyMessage | None:
    """Parse one notify datagram.

    Args:
        data: The datagram's payload.
        pid: The sender's pid.
        received_at: Trio time of arrival.

    Returns:
        The message, or None if the datagram is not UTF-8, contains NUL bytes or holds
        no ``KEY=VALUE`` assignment at all.
    """
    if b"\0" in data:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    values: dict[str, Any] = {}
    other: list[tuple[str, str]] = []
    for line in text.split("\n"):
        if not line:
            continue
        key, eq, value = line.partition("=")
        if not eq or not key:
            continue
        if key in _BOOLEAN_KEYS and value == "1":
            values[_BOOLEAN_KEYS[key]] = True
        elif key == "WATCHDOG" and value in ("1", "trigger"):
            values["watchdog" if value == "1" else "watchdog_trigger"] = True
        elif key == "STATUS":
            values["status"] = value
        elif key in _NUMBER_KEYS and (number := _number(value, _NUMBER_KEYS[key][1])) is not None:
            values[_NUMBER_KEYS[key][0]] = number
        else:
            other.append((key, value))
    if not values and not other:
        return None
    return NotifyMessage(pid=pid, received_at=received_at, other=tuple(other), **values)


def notify_env(path: str | os.PathLike[str], watchdog_usec: int | None = None) -> dict[str, str]:
    """The environment variables that let an agent find the notify socket.

    ``NOTIFY_SOCKET`` is always set. ``WATCHDOG_USEC`` is set when ``watchdog_usec`` is
    positive (the agent should then send ``WATCHDOG=1`` at about half that interval).

    systemd also sets ``WATCHDOG_PID`` to the service's pid, so that descendants which
    inherit the environment do not think the watchdog is theirs. The pid is unknown
    before the process exists, and the environment is fixed at exec, so it is omitted:
    ``sd_watchdog_enabled()`` then answers for any pid. The agent's descendants therefore
    also see the watchdog as enabled; their ``WATCHDOG=1`` is harmless, because the
    supervisor attributes datagrams to the agent by the sender's pid anyway. An agent
    that wants to prevent this can unset the variables before spawning children (as
    ``sd_notify(unset_environment=1, ...)`` does).

    Args:
        path: The notify socket's path (as given to :class:`NotifyServer`).
        watchdog_usec: The watchdog timeout in microseconds; None or 0 disables it.

    Returns:
        The variables to add to the agent's environment.
    """
    env = {"NOTIFY_SOCKET": os.fspath(path)}
    if watchdog_usec:
        if watchdog_usec < 0:
            raise ValueError(f"watchdog_usec must not be negative, not {watchdog_usec}")
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    return env


class NotifyServer:
    """Receives sd_notify datagrams from agents on a private Unix datagram socket.

    Example::

        server = NotifyServer("/run/hostvisor/notify.sock", resolve=agent_of_pid,
                              on_message=lambda agent_id, msg: print(agent_id, msg))
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            env = notify_env(server.path, watchdog_usec=90_000_000)  # for each agent

    Args:
        path: The socket file's path (at most 107 bytes).
        resolve: Maps a sender pid to its agent id, or None for a stranger.
        on_message: Called with (agent_id, message) for each datagram; must not block.
        max_datagram: Longest accepted datagram in bytes.
        resolution_s: After each round of receiving, wait this long before the next: at
            most one wake-up per period however many agents send (a lone message is still
            handled at once; ``received_at`` may be up to this late).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        resolve: Callable[[int], str | None],
        on_message: Callable[[str, NotifyMessage], None],
        max_datagram: int = 4096,
        resolution_s: float = 1.0,
    ) -> None:
        if max_datagram < 1:
            raise ValueError(f"max_datagram must be positive, not {max_datagram}")
        self.path = os.fspath(path)
        self.socket = PrivateSocket(self.path, socket.SOCK_DGRAM)
        self._resolve = resolve
        self._on_message = on_message
        self._max_datagram = max_datagram
        self.resolution_s = resolution_s
        self._uid = os.geteuid()
        self._counts: Counter[str] = Counter()

    def statistics(self) -> NotifyStatistics:
        """A snapshot of the counters."""
        names = (f.name for f in fields(NotifyStatistics))
        return NotifyStatistics(**{name: self._counts[name] for name in names})

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started()`` once the socket receives.

        Raises:
            SocketSetupError: The socket could not be created (before ``started``).
        """
        sock, ours = self.socket.take()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            sock.setblocking(False)
            task_status.started()
            while True:
                await trio.lowlevel.wait_readable(sock)
                await self._drain(sock)
                await trio.sleep(self.resolution_s)
        finally:
            sock.close()
            remove_socket_file(self.path, ours)

    async def _drain(self, sock: socket.socket) -> None:
        """Receive every queued datagram (one wake-up serves a burst of them)."""
        while True:
            try:
                data, ancdata, flags, _ = sock.recvmsg(self._max_datagram, _ANCBUF)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOMEM, errno.ENOBUFS):
                    raise
                logger.warning("notify recvmsg failed: %s", exc)
                await trio.sleep(_RETRY_S)
                return
            self._receive(data, ancdata, flags)

    def _receive(self, data: bytes, ancdata: list[tuple[int, int, bytes]], flags: int) -> None:
        self._counts["datagrams"] += 1
        pid, uid = 0, -1
        for level, kind, payload in ancdata:
            if level != socket.SOL_SOCKET:
                continue
            if kind == socket.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
                pid, uid, _gid = _UCRED.unpack(payload[: _UCRED.size])
            elif kind == socket.SCM_RIGHTS:  # cannot happen with our buffer; never leak
                for fd in struct.unpack(f"{len(payload) // 4}i", payload[: len(payload) // 4 * 4]):
                    os.close(fd)
                flags |= socket.MSG_CTRUNC
        if flags & socket.MSG_TRUNC:
            self._counts["truncated"] += 1
            return
        if flags & socket.MSG_CTRUNC:
            self._counts["with_fds"] += 1
            return
        agent_id = self._resolve(pid) if uid == self._uid and pid > 0 else None
        if agent_id is None:
            self._counts["strangers"] += 1
            return
        message = parse_notify(data, pid=pid, received_at=trio.current_time())
        if message is None:
            self._counts["malformed"] += 1
            return
        self._counts["messages"] += 1
        self._on_message(agent_id, message)
