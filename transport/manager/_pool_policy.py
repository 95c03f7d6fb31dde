"""The daemon pool's decisions, without IO: where to dial, which channels to close, what
an error means. PURE.

The pool (:mod:`transport.manager._pool`) keeps one channel per daemon target and asks
these functions, with a snapshot of its channels (:class:`Slot`) and the time on its
clock, what to do. Rules written down here and nowhere else:

* **Never close a channel a call is using.** Only slots with ``in_use == 0`` are ever
  chosen, by the cap (:func:`over_cap`) or by idleness (:func:`idle_expired`). A channel
  that must go while in use (an evicted one) is closed by the pool when its last call
  ends; until then it still counts against the cap, so the cap may be exceeded for as
  long as every channel is busy (calls are never made to wait for a free channel).
* **Least recently used first.** Among idle slots, the one with the oldest ``last_used``
  is closed first; ties go to the earlier slot in the sequence given.
* **What an update's result says** (:func:`update_status`): the daemon's UpdateResult as a
  state the Manager stores and one line for people.
* **What a status means** (:func:`disposition`): ``UNAVAILABLE`` and ``DEADLINE_EXCEEDED``
  mean the daemon could not be reached (or not in time), and the channel is evicted so
  that the next call dials afresh instead of waiting out grpc's reconnect backoff on a
  connection that may be half-open. Every other status is the daemon's answer and passes
  through as it is.
"""

from __future__ import annotations

import enum
import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from transport._errors import StatusCode
from transport._pb.hostvisor.v1 import hostvisor_pb2

__all__ = [
    "DEFAULT_DAEMON_PORT",
    "Disposition",
    "Slot",
    "UpdateStatus",
    "disposition",
    "idle_expired",
    "next_idle_deadline",
    "over_cap",
    "target_of",
    "update_status",
]

DEFAULT_DAEMON_PORT = 9091
"""The daemon's gRPC port when a node announced none (the original's)."""


@dataclass(frozen=True, slots=True)
class Slot:
    """What the decisions need to know of one open channel.

    Attributes:
        target: The channel's target (``host:port``), its identity in the pool.
        in_use: How many calls are using it now.
        last_used: When a call last started or ended on it (the pool's clock, seconds).
    """

    target: str
    in_use: int
    last_used: float


class Disposition(enum.Enum):
    """What the pool does with a call's non-OK status."""

    PASS = "pass"
    """The daemon answered: the error goes to the caller as it is."""
    UNREACHABLE = "unreachable"
    """The daemon was not reached (or not in time): the channel is evicted and the caller
    gets :class:`~transport.manager.DaemonUnreachableError`."""


_UNREACHABLE = frozenset({StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED})


def disposition(status: StatusCode) -> Disposition:
    """What a call's non-OK status means for the pool.

    Args:
        status: The status the call ended with.

    Returns:
        :attr:`Disposition.UNREACHABLE` for ``UNAVAILABLE`` and ``DEADLINE_EXCEEDED``,
        :attr:`Disposition.PASS` for every other status.
    """
    return Disposition.UNREACHABLE if status in _UNREACHABLE else Disposition.PASS


def _idle_by_age(slots: Sequence[Slot]) -> list[Slot]:
    """The idle slots, least recently used first (stable: ties keep their order)."""
    return sorted((slot for slot in slots if slot.in_use == 0), key=lambda slot: slot.last_used)


def over_cap(slots: Sequence[Slot], *, open_total: int, cap: int) -> list[str]:
    """The channels to close so that at most ``cap`` stay open.

    Args:
        slots: The channels that may be closed (the pool's current ones).
        open_total: Every open channel, also those already on their way out (evicted but
            still in use), which count against the cap but are not in ``slots``.
        cap: The most channels that may be open.

    Returns:
        Targets of idle slots, least recently used first: as many as needed to get down
        to ``cap``, or every idle slot when that is not enough.
    """
    excess = open_total - cap
    if excess <= 0:
        return []
    return [slot.target for slot in _idle_by_age(slots)[:excess]]


def idle_expired(slots: Sequence[Slot], *, now: float, idle_s: float) -> list[str]:
    """The channels no call has used for ``idle_s`` seconds.

    Args:
        slots: The pool's channels.
        now: The time on the pool's clock.
        idle_s: How long a channel may stay unused.

    Returns:
        Targets of idle slots whose ``last_used + idle_s <= now``, least recently used
        first.
    """
    return [slot.target for slot in _idle_by_age(slots) if slot.last_used + idle_s <= now]


def next_idle_deadline(slots: Sequence[Slot], *, idle_s: float) -> float:
    """When the next channel becomes idle for ``idle_s`` (``math.inf``: none is idle).

    Args:
        slots: The pool's channels.
        idle_s: How long a channel may stay unused.

    Returns:
        The earliest ``last_used + idle_s`` among idle slots.
    """
    return min((slot.last_used + idle_s for slot in slots if slot.in_use == 0), default=math.inf)


def target_of(ip: str, port: int | None, *, default_port: int = DEFAULT_DAEMON_PORT) -> str:
    """The gRPC target of a node's daemon.

    Args:
        ip: The node's address (IPv4, IPv6 with or without brackets, or a host name).
        port: The port the daemon announced; None or 0: ``default_port``.
        default_port: The port of daemons that announced none.

    Returns:
        ``ip:port``, with an IPv6 address in brackets (``[::1]:9091``).

    Raises:
        ValueError: ``ip`` is empty or holds blanks; a port outside 1 to 65535.
    """
    host = ip.strip()
    if not host or host != ip or any(c.isspace() for c in host):
        raise ValueError(f"the node has no usable address ({ip!r})")
    chosen = port or default_port
    if not 1 <= chosen <= 65535:
        raise ValueError(f"port {chosen} is outside 1 to 65535")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        is_v6 = isinstance(ipaddress.ip_address(bare), ipaddress.IPv6Address)
    except ValueError:
        is_v6 = False
    return f"[{bare}]:{chosen}" if is_v6 else f"{bare}:{chosen}"


class UpdateStatus(NamedTuple):
    """What a daemon says of an update it accepted (GetUpdateResult).

    Attributes:
        state: ``pending``, ``running``, ``succeeded``, ``failed``, ``rolled_back`` (or
            ``unknown`` for a state this Manager does not know).
        message: For people: what a success installed, why a failure or rollback
            happened; empty while pending or running.
    """

    state: str
    message: str


_UPDATE_STATES = {
    hostvisor_pb2.UPDATE_STATE_PENDING: "pending",
    hostvisor_pb2.UPDATE_STATE_RUNNING: "running",
    hostvisor_pb2.UPDATE_STATE_SUCCEEDED: "succeeded",
    hostvisor_pb2.UPDATE_STATE_FAILED: "failed",
    hostvisor_pb2.UPDATE_STATE_ROLLED_BACK: "rolled_back",
}


def update_status(result: hostvisor_pb2.UpdateResult) -> UpdateStatus:
    """GetUpdateResult's answer as a state and a message.

    Args:
        result: The daemon's answer.

    Returns:
        The state; the message: ``installed {new_version}`` (and that the daemon restarts
        for a self-update) for a success, ``{code} {reason}: {error}`` and what a rollback
        restored for a failure or rollback, empty otherwise.
    """
    state = _UPDATE_STATES.get(result.state, "unknown")
    if state == "succeeded":
        message = f"installed {result.new_version}" if result.new_version else "installed"
        if result.restart_required:
            message += "; the daemon restarts to run it"
    elif state in ("failed", "rolled_back"):
        cause = " ".join(part for part in (result.code, result.reason) if part)
        message = ": ".join(part for part in (cause, result.error) if part) or state
        if result.restored_version:
            message += f" (restored {result.restored_version})"
    else:
        message = ""
    return UpdateStatus(state, message)
