"""The Manager's in-process event hub: what the console's live views (SSE) listen to.

Theory of operation
-------------------
The gRPC service (a sync that changed agents, a registration, a heartbeat that brings a
node back), the REST routes (operate, sync, delete) and the jobs (nodes gone offline)
:meth:`EventHub.publish` small events: a name (``agents``, ``node``, ``update``) and a
JSON object. Each subscriber (one per open ``GET /api/v1/events``) has its own bounded
queue (a Trio memory channel of :attr:`EventHub.queue_size`). Publishing never waits:
``send_nowait`` into each queue, and a subscriber whose queue is full is **dropped**: its
queue is closed, so it reads what was queued and then the end (its HTTP stream ends and
the browser's EventSource reconnects and reloads what it shows). A slow browser therefore
costs nothing to the ingest, and the memory held is bounded by
``subscribers x queue_size``.

``publish`` must be called from the Trio thread (the jobs, which run their work in worker
threads, publish once back in Trio). Events are not persisted and not shared between
processes: several Managers behind a load balancer each see their own process's events,
so a browser connected to one Manager does not hear about a sync another one received (it
still sees it at its next reload).

Node status is tracked just enough to say when a node comes back: :meth:`nodes_offline`
remembers the nodes this process reported offline, and :meth:`node_seen` (called on each
heartbeat, cheap: a set lookup) publishes ``node`` ``online`` for one of them.

:func:`sse` formats one event for the wire (``event:`` and one ``data:`` line of compact
JSON, which never contains a newline), pure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import trio

__all__ = ["DEFAULT_QUEUE_SIZE", "Event", "EventHub", "HubStatistics", "Subscription", "sse"]

DEFAULT_QUEUE_SIZE = 256
"""Events a subscriber may lag behind before it is dropped."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event.

    Attributes:
        name: ``agents``, ``node`` or ``update`` (the SSE ``event:``).
        data: The JSON object (the SSE ``data:``).
    """

    name: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class HubStatistics:
    """Counts since the hub was made.

    Attributes:
        subscribers: Subscribers now.
        published: Events published.
        delivered: Events queued to subscribers (one per subscriber per event).
        dropped: Subscribers dropped for lagging behind.
    """

    subscribers: int
    published: int
    delivered: int
    dropped: int


def sse(name: str | None, data: Mapping[str, Any] | None = None) -> bytes:
    """One Server-Sent Event, or a comment (a keep-alive) when ``name`` is None.

    Args:
        name: The event's name (no line breaks), or None for a comment.
        data: The JSON object (ignored for a comment).

    Returns:
        ``event: <name>\\ndata: <json>\\n\\n``, or ``: keep-alive\\n\\n``.

    Raises:
        ValueError: A name with a line break, or data that is not JSON.
    """
    if name is None:
        return b": keep-alive\n\n"
    if "\n" in name or "\r" in name or not name:
        raise ValueError(f"an event name is one non-empty line; got {name!r}")
    text = json.dumps(dict(data or {}), separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return f"event: {name}\ndata: {text}\n\n".encode()


class Subscription:
    """One subscriber's queue (made by :meth:`EventHub.subscribe`)."""

    def __init__(self, receive: trio.MemoryReceiveChannel[Event]) -> None:
        self._receive = receive

    async def receive(self, timeout_s: float = math.inf) -> Event | None:
        """The next event.

        Args:
            timeout_s: How long to wait.

        Returns:
            The event, or None when ``timeout_s`` passed without one.

        Raises:
            trio.EndOfChannel: The subscriber was dropped (it lagged behind), or the hub
                closed; everything queued before was received.
        """
        with trio.move_on_after(timeout_s):
            return await self._receive.receive()
        return None


class EventHub:
    """Fans events out to subscribers without ever waiting (see the module).

    Args:
        queue_size: Events a subscriber may lag behind before it is dropped (>= 1).

    Raises:
        ValueError: ``queue_size`` below 1.
    """

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1; got {queue_size}")
        self.queue_size = queue_size
        self._queues: set[trio.MemorySendChannel[Event]] = set()
        self._offline: set[str] = set()
        self._counts = {"published": 0, "delivered": 0, "dropped": 0}

    @property
    def subscribers(self) -> int:
        """How many subscribers there are now."""
        return len(self._queues)

    def statistics(self) -> HubStatistics:
        """The hub's counts now."""
        return HubStatistics(self.subscribers, **self._counts)

    @contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """A subscription for the block (events published from now on).

        Yields:
            The subscription.
        """
        send, receive = trio.open_memory_channel[Event](self.queue_size)
        self._queues.add(send)
        try:
            with receive:
                yield Subscription(receive)
        finally:
            self._queues.discard(send)
            send.close()

    def publish(self, name: str, data: Mapping[str, Any]) -> int:
        """Queue an event to every subscriber; never waits (call from the Trio thread).

        A subscriber whose queue is full is dropped (its queue closed).

        Args:
            name: The event's name.
            data: Its JSON object (not copied: do not change it after).

        Returns:
            How many subscribers it was queued to.
        """
        self._counts["published"] += 1
        event = Event(name, data)
        delivered = 0
        for queue in list(self._queues):
            try:
                queue.send_nowait(event)
                delivered += 1
            except trio.WouldBlock:
                self._drop(queue)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._queues.discard(queue)
        self._counts["delivered"] += delivered
        return delivered

    def _drop(self, queue: trio.MemorySendChannel[Event]) -> None:
        self._queues.discard(queue)
        queue.close()
        self._counts["dropped"] += 1

    # -- node status ----------------------------------------------------------------------

    def node_status(self, node_id: str, status: str) -> None:
        """Publish ``node`` {node_id, status} (``online``, ``offline``, ``deleted``).

        Args:
            node_id: The node.
            status: Its status now.
        """
        if status == "offline":
            self._offline.add(node_id)
        else:
            self._offline.discard(node_id)
        self.publish("node", {"node_id": node_id, "status": status})

    def nodes_offline(self, node_ids: Iterable[str]) -> None:
        """Publish ``node`` offline for each node (what the offline job marked).

        Args:
            node_ids: The nodes.
        """
        for node_id in node_ids:
            self.node_status(node_id, "offline")

    def node_seen(self, node_id: str) -> None:
        """A heartbeat of ``node_id``: publish ``node`` online if this hub reported it
        offline (a set lookup otherwise).

        Args:
            node_id: The node.
        """
        if node_id in self._offline:
            self.node_status(node_id, "online")
