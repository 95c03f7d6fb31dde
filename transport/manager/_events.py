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

Every public method may be called from any thread (the gRPC service's handlers and the
ingest's writer run on threads of their own): away from the Trio thread the work is
handed to it with ``TrioToken.run_sync_soon``, which never waits either. The token is
taken when the hub first runs in Trio (a subscription, :meth:`EventHub.run`, or a
publication there); before that nobody can be listening, and events are discarded.
Events are not persisted and not shared between processes: several Managers behind a
load balancer each see their own process's events, so a browser connected to one Manager
does not hear about a sync another one received (it still sees it at its next reload).

**Agent changes.** :meth:`EventHub.agents_reported` is called with each SyncAgentStates
once it is stored; it compares the agents' ids, statuses and pids with the last ones this
hub saw of the node (a dict, under a lock) and, when they differ and someone listens,
marks the node pending. :meth:`EventHub.run` (a task of the Manager) reads the pending
nodes' agents from the store in a worker thread, coalescing bursts, and publishes
``agents`` with them, so that no database read lands on the ingest's path.

Node status is tracked just enough to say when a node comes back: :meth:`nodes_offline`
remembers the nodes this process reported offline, and :meth:`node_seen` (called on each
heartbeat, cheap: a set lookup) publishes ``node`` ``online`` for one of them.

:func:`sse` formats one event for the wire (``event:`` and one ``data:`` line of compact
JSON, which never contains a newline), pure.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from transport.manager._errors import NotFoundError, StoreError
from transport.manager._http._json import agent_json

if TYPE_CHECKING:
    from transport import AgentStateRecord
    from transport.manager._model import Agent

logger = logging.getLogger("hostvisor.manager.events")

__all__ = ["DEFAULT_QUEUE_SIZE", "Event", "EventHub", "HubStatistics", "Subscription", "sse"]

_NAME = re.compile(r"[A-Za-z0-9_-]+")
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
        name: The event's name (ASCII letters, digits, ``_``, ``-``), or None for a comment.
        data: The JSON object (ignored for a comment).

    Returns:
        ``event: <name>\\ndata: <json>\\n\\n``, or ``: keep-alive\\n\\n``.

    Raises:
        ValueError: Another name, or data that is not JSON (NaN included).
    """
    if name is None:
        return b": keep-alive\n\n"
    if not _NAME.fullmatch(name):
        raise ValueError(f"an event name is letters, digits, '_' and '-'; got {name!r}")
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
        self._token: trio.lowlevel.TrioToken | None = None
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[tuple[str, str, int], ...]] = {}
        self._pending: set[str] = set()
        self._wake = trio.Event()

    @property
    def subscribers(self) -> int:
        """How many subscribers there are now."""
        return len(self._queues)

    def statistics(self) -> HubStatistics:
        """The hub's counts now."""
        return HubStatistics(self.subscribers, **self._counts)

    # -- threads ----------------------------------------------------------------------------

    def _here(self) -> bool:
        """Whether this thread is the hub's Trio thread (taking the token on first use)."""
        try:
            token = trio.lowlevel.current_trio_token()
        except RuntimeError:
            return False
        if self._token is None:
            self._token = token
        return token is self._token

    def _soon(self, function: Callable[..., object], *args: Any) -> None:
        """Run ``function(*args)`` in the Trio thread: now when called there, else soon."""
        if self._here():
            function(*args)
            return
        token = self._token
        if token is None:
            return  # never ran in Trio: nobody listens
        try:
            token.run_sync_soon(functools.partial(function, *args))
        except trio.RunFinishedError:
            pass

    # -- subscribing and publishing ---------------------------------------------------------

    @contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """A subscription for the block (events published from now on; Trio thread).

        Yields:
            The subscription.
        """
        self._here()
        send, receive = trio.open_memory_channel[Event](self.queue_size)
        self._queues.add(send)
        try:
            with receive:
                yield Subscription(receive)
        finally:
            self._queues.discard(send)
            send.close()

    def publish(self, name: str, data: Mapping[str, Any]) -> None:
        """Queue an event to every subscriber; never waits (any thread).

        A subscriber whose queue is full is dropped (its queue closed).

        Args:
            name: The event's name.
            data: Its JSON object (not copied: do not change it after).
        """
        self._soon(self._deliver, Event(name, data))

    def _deliver(self, event: Event) -> None:
        self._counts["published"] += 1
        for queue in list(self._queues):
            try:
                queue.send_nowait(event)
                self._counts["delivered"] += 1
            except trio.WouldBlock:
                self._queues.discard(queue)
                queue.close()
                self._counts["dropped"] += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._queues.discard(queue)

    # -- the console's events -------------------------------------------------------------

    def agents(self, node_id: str, agents: Sequence[Agent]) -> None:
        """Publish ``agents`` {node_id, agents} (each as ``GET /nodes/:id/agents`` shows it).

        Args:
            node_id: The node.
            agents: Its agents as stored now.
        """
        self.publish("agents", {"node_id": node_id, "agents": [agent_json(a) for a in agents]})

    def update(self, job_id: int) -> None:
        """Publish ``update`` {id}: a target of the update job changed.

        Args:
            job_id: The job.
        """
        self.publish("update", {"id": job_id})

    def node_status(self, node_id: str, status: str) -> None:
        """Publish ``node`` {node_id, status} (``online``, ``offline``, ``deleted``).

        Args:
            node_id: The node.
            status: Its status now.
        """
        self._soon(self._node_status, node_id, status)

    def _node_status(self, node_id: str, status: str) -> None:
        if status == "deleted":
            with self._lock:
                self._seen.pop(node_id, None)
        if status == "offline":
            self._offline.add(node_id)
        else:
            self._offline.discard(node_id)
        self._deliver(Event("node", {"node_id": node_id, "status": status}))

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

    # -- agent changes ----------------------------------------------------------------------

    def agents_reported(self, node_id: str, states: Sequence[AgentStateRecord]) -> bool:
        """A node's SyncAgentStates was stored: note whether its agents changed (any thread).

        Args:
            node_id: The node.
            states: The states it reported.

        Returns:
            Whether the agents' ids, statuses or pids differ from the last report this
            hub saw (the first report of a node counts as a change).
        """
        key = tuple(sorted((s.agent_id, s.status.value if s.status else "", s.pid) for s in states))
        with self._lock:
            changed = self._seen.get(node_id) != key
            self._seen[node_id] = key
        if changed:
            self.agents_changed(node_id)
        return changed

    def agents_changed(self, node_id: str) -> None:
        """Have :meth:`run` publish the node's stored agents (any thread; coalesced).

        Args:
            node_id: The node.
        """
        self._soon(self._mark_pending, node_id)

    def _mark_pending(self, node_id: str) -> None:
        if self._queues:  # nobody listens: nothing to read
            self._pending.add(node_id)
            self._wake.set()

    async def run(
        self,
        load_agents: Callable[[str], Sequence[Agent]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Publish the agents of changed nodes until cancelled (see the module).

        When cancelled (the Manager stops) it ends every subscription, so that the open
        event streams end and the HTTP server's graceful stop need not wait for them.

        Args:
            load_agents: Reads a node's stored agents (``Store.list_agents``; blocking, run
                in a worker thread).
            task_status: Started at once.
        """
        self._here()
        task_status.started()
        try:
            await self._publish_changes(load_agents)
        finally:
            for queue in list(self._queues):
                queue.close()
            self._queues.clear()

    async def _publish_changes(self, load_agents: Callable[[str], Sequence[Agent]]) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            pending, self._pending = sorted(self._pending), set()
            for node_id in pending:
                if not self._queues:
                    break
                try:
                    found = await trio.to_thread.run_sync(load_agents, node_id)
                except NotFoundError:
                    continue  # deleted meanwhile
                except StoreError as exc:
                    logger.info("agents of %s not published: %s", node_id, exc)
                    continue
                self.agents(node_id, found)
