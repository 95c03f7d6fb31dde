"""Helpers for agents: tell the supervisor you are alive, ready or stopping.

Theory of operation
-------------------
The supervisor offers two channels to each agent it starts, through environment
variables:

* ``NOTIFY_SOCKET``: systemd's notify protocol (one datagram per call, ``KEY=VALUE``
  lines). :func:`notify` sends ``READY=1``, ``STATUS=...``, ``STOPPING=1`` and
  ``WATCHDOG=1``; it does the same as ``sd_notify(3)``, so it also works under systemd.
  When ``WATCHDOG_USEC`` is set, send ``watchdog=True`` at least every half of it.
* ``HOSTVISOR_HEARTBEAT_SOCKET``: a stream socket taking newline-delimited JSON
  heartbeats (``pid``, ``timestamp``, ``version``, ``status``, ``cpu``, ``memory``).
  :class:`Heartbeater` keeps one connection and reconnects when the supervisor closed it
  (after a restart of the supervisor, or when the connection was idle too long).

The supervisor identifies the sender by the kernel's credentials (its pid), not by
anything in the message, so these helpers need no token. Nothing here raises on a
delivery failure: a missing or restarting supervisor must never take an agent down.
Each call returns whether the message was handed to the socket.

This module uses only the standard library and no event loop; it can be copied into an
agent that does not install hostvisor. Example::

    from supervisor.agent import Heartbeater, notify

    notify(ready=True, status="serving")
    with Heartbeater() as beats:
        while serving():
            beats.send(status="ok", version="1.2.3")
            time.sleep(10)
    notify(stopping=True)
"""

from __future__ import annotations

import json
import os
import socket
import threading
from datetime import UTC, datetime
from types import TracebackType

__all__ = [
    "ENV_HEARTBEAT_SOCKET",
    "ENV_NOTIFY_SOCKET",
    "Heartbeater",
    "notify",
    "send_heartbeat",
]

#: Environment variable naming the heartbeat socket (set by the supervisor).
ENV_HEARTBEAT_SOCKET = "HOSTVISOR_HEARTBEAT_SOCKET"
#: Environment variable naming the notify socket (set by the supervisor, or systemd).
ENV_NOTIFY_SOCKET = "NOTIFY_SOCKET"

_SEND_TIMEOUT_S = 5.0  # never let a stalled supervisor block the agent for long


def _address(path: str) -> str:
    # sd_notify convention: a leading "@" names a socket in the abstract namespace.
    return "\0" + path[1:] if path.startswith("@") else path


def notify(
    *,
    ready: bool = False,
    status: str | None = None,
    stopping: bool = False,
    watchdog: bool = False,
) -> bool:
    """Send an sd_notify message to ``$NOTIFY_SOCKET``, if it is set.

    Example::

        notify(ready=True, status="listening on :9100")
        notify(watchdog=True)      # every WATCHDOG_USEC / 2 microseconds
        notify(stopping=True)

    Args:
        ready: Send ``READY=1``: start-up is complete.
        status: Send ``STATUS=...``, a one-line status text (newlines become spaces).
        stopping: Send ``STOPPING=1``: the agent is shutting down.
        watchdog: Send ``WATCHDOG=1``: a keep-alive.

    Returns:
        True if the datagram was sent; False if ``NOTIFY_SOCKET`` is unset, there was
        nothing to send, or sending failed.
    """
    path = os.environ.get(ENV_NOTIFY_SOCKET)
    lines = []
    if ready:
        lines.append("READY=1")
    if status is not None:
        lines.append("STATUS=" + " ".join(status.splitlines()))
    if stopping:
        lines.append("STOPPING=1")
    if watchdog:
        lines.append("WATCHDOG=1")
    if not path or not lines:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(_SEND_TIMEOUT_S)
            sock.sendto("\n".join(lines).encode(), _address(path))
    except OSError:
        return False
    return True


def _now_rfc3339() -> str:
    # The seed's agents are Go: time.Time marshals as RFC 3339 with a "Z" suffix.
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Heartbeater:
    """Sends JSON heartbeats over one kept-open connection, reconnecting as needed.

    Thread-safe. After ``fork`` the child opens its own connection.

    Example::

        with Heartbeater() as beats:          # path from $HOSTVISOR_HEARTBEAT_SOCKET
            beats.send(status="ok", version="1.2.3", cpu=3.5, memory=52_000_000)

    Args:
        socket_path: The heartbeat socket; None reads ``$HOSTVISOR_HEARTBEAT_SOCKET``
            (when neither is set, :meth:`send` returns False).
    """

    def __init__(self, socket_path: str | os.PathLike[str] | None = None) -> None:
        if socket_path is None:
            socket_path = os.environ.get(ENV_HEARTBEAT_SOCKET) or None
        self.socket_path = None if socket_path is None else os.fspath(socket_path)
        self._sock: socket.socket | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def send(
        self, *, status: str = "ok", version: str = "", cpu: float = 0.0, memory: int = 0
    ) -> bool:
        """Send one heartbeat; reconnect and retry once if the connection failed.

        Args:
            status: The agent's status word.
            version: The agent's version.
            cpu: The agent's CPU percent, if it measures it.
            memory: The agent's memory use in bytes, if it measures it.

        Returns:
            True if the heartbeat was written to the socket, False otherwise.
        """
        if self.socket_path is None:
            return False
        record = {
            "pid": os.getpid(),
            "timestamp": _now_rfc3339(),
            "version": version,
            "status": status,
            "cpu": float(cpu),
            "memory": int(memory),
        }
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            if self._pid != os.getpid():  # forked: the connection belongs to the parent
                self._sock, self._pid = None, os.getpid()
            for _attempt in range(2):
                try:
                    if self._sock is None:
                        self._sock = self._connect(self.socket_path)
                    self._sock.sendall(line)
                except OSError:
                    self._close_locked()
                    continue
                return True
            return False

    @staticmethod
    def _connect(path: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(_SEND_TIMEOUT_S)
            sock.connect(_address(path))
        except BaseException:
            sock.close()
            raise
        return sock

    def _close_locked(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        """Close the connection (a later :meth:`send` opens a new one)."""
        with self._lock:
            self._close_locked()

    def __enter__(self) -> Heartbeater:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_shared: dict[str, Heartbeater] = {}
_shared_lock = threading.Lock()


def send_heartbeat(
    socket_path: str | os.PathLike[str] | None,
    *,
    status: str = "ok",
    version: str = "",
    cpu: float = 0.0,
    memory: int = 0,
) -> bool:
    """Send one heartbeat over a connection shared by every call for the same path.

    Example::

        send_heartbeat(None, status="ok", version="1.2.3")   # None: $HOSTVISOR_HEARTBEAT_SOCKET

    Args:
        socket_path: The heartbeat socket; None reads ``$HOSTVISOR_HEARTBEAT_SOCKET``.
        status: The agent's status word.
        version: The agent's version.
        cpu: The agent's CPU percent, if it measures it.
        memory: The agent's memory use in bytes, if it measures it.

    Returns:
        True if the heartbeat was written to the socket, False otherwise.
    """
    if socket_path is None:
        socket_path = os.environ.get(ENV_HEARTBEAT_SOCKET)
        if not socket_path:
            return False
    path = os.fspath(socket_path)
    with _shared_lock:
        beater = _shared.get(path)
        if beater is None:
            beater = _shared[path] = Heartbeater(path)
    return beater.send(status=status, version=version, cpu=cpu, memory=memory)
