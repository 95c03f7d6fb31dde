"""The event stream: state and health changes that any number of consumers can follow.

Besides lifecycle changes (``old`` differs from ``new``), health events keep the state
(``old == new``) and name what happened in ``event``: ``unhealthy`` (a check asks for
recovery; ``reason`` says which, with the value and since when), ``healthy`` (every check
is fine again) and ``resource_alert`` (a CPU or memory threshold was exceeded for its
duration; ``alert`` carries the seed's ResourceAlert).

Publishing never blocks the supervisor. Each subscriber has its own bounded buffer; a
subscriber that falls behind loses the oldest events, and the next event it receives
says how many it missed (``dropped``), so it can re-read the status snapshot.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from dataclasses import dataclass
from types import TracebackType

import trio

from ._health import ResourceAlert
from ._lifecycle import AgentState
from ._machine import ExitStatus

__all__ = ["AgentEvent", "EventHub", "EventSubscription"]


@dataclass(frozen=True, slots=True)
class AgentEvent:
    """An agent changed state, or its health changed (then ``old is new``).

    Attributes:
        agent_id: Which agent.
        old: Its previous state.
        new: Its new state.
        reason: Why, in English (e.g. ``killed by signal 9 (SIGKILL); restart in 0s``).
        event: The lifecycle event that caused it (``exited``, ``start``, ...).
        time: Wall-clock time (seconds since the epoch).
        pid: The agent's process id after the change (0 when none).
        last_exit: The last exit status, if the agent has exited before.
        dropped: Events this subscriber missed just before this one (it fell behind).
        at: The same moment on Trio's monotonic clock (for measuring intervals).
        alert: For ``resource_alert`` events, the alert.
    """

    agent_id: str
    old: AgentState
    new: AgentState
    reason: str
    event: str
    time: float
    pid: int = 0
    last_exit: ExitStatus | None = None
    dropped: int = 0
    at: float = 0.0
    alert: ResourceAlert | None = None


class EventSubscription:
    """One consumer's view of the stream: a (async) context manager and async iterator."""

    def __init__(self, hub: EventHub, max_buffer: int) -> None:
        self._hub = hub
        self._buffer: collections.deque[AgentEvent] = collections.deque()
        self._max = max_buffer
        self._dropped = 0
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False

    def _push(self, event: AgentEvent) -> None:
        if len(self._buffer) >= self._max:
            self._buffer.popleft()
            self._dropped += 1
        self._buffer.append(event)
        self._lot.unpark_all()

    def _close(self) -> None:
        self._closed = True
        self._lot.unpark_all()

    async def receive(self) -> AgentEvent:
        """Wait for the next event.

        Raises:
            trio.EndOfChannel: the subscription or the supervisor was closed.
        """
        while not self._buffer:
            if self._closed:
                raise trio.EndOfChannel
            await self._lot.park()
        event = self._buffer.popleft()
        if self._dropped:
            event = dataclasses.replace(event, dropped=self._dropped)
            self._dropped = 0
        return event

    def receive_nowait(self) -> AgentEvent:
        """The next event if one is buffered.

        Raises:
            trio.WouldBlock: none is.
        """
        if not self._buffer:
            raise trio.WouldBlock
        return self._buffer.popleft()

    def close(self) -> None:
        """Stop receiving events."""
        self._hub._subscribers.discard(self)
        self._close()

    def __aiter__(self) -> EventSubscription:
        return self

    async def __anext__(self) -> AgentEvent:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def __enter__(self) -> EventSubscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> EventSubscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class EventHub:
    """Fans events out to subscribers; :meth:`publish` never blocks."""

    def __init__(self) -> None:
        self._subscribers: set[EventSubscription] = set()

    def subscribe(self, max_buffer: int = 1024) -> EventSubscription:
        """Start following the stream from now on.

        Args:
            max_buffer: Events kept for this subscriber before the oldest are dropped.
        """
        if not 1 <= max_buffer < math.inf:
            raise ValueError(f"max_buffer must be a positive integer; got {max_buffer!r}")
        subscription = EventSubscription(self, max_buffer)
        self._subscribers.add(subscription)
        return subscription

    def publish(self, event: AgentEvent) -> None:
        """Deliver an event to every subscriber."""
        for subscription in self._subscribers:
            subscription._push(event)

    def close(self) -> None:
        """End every subscription (the supervisor is shutting down)."""
        for subscription in list(self._subscribers):
            subscription._close()
        self._subscribers.clear()
