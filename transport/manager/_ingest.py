"""Group commit of heartbeats and metric reports, and the gRPC service's counters. IO.

Theory of operation
-------------------
A fleet's daemons send a heartbeat and a metric report every interval; one database
transaction each would spend the Manager's time committing. :class:`Ingest` queues them
instead and writes a whole batch at a time through a **writer**: a sync function that takes
a :class:`Batch` and returns a :class:`BatchResult` (:func:`store_writer` makes one of the
Store; tests pass their own). Its owner task, :meth:`Ingest.run`, takes what is queued (up
to ``max_batch`` items, after waiting ``linger_s`` for more when fewer are queued), runs
the writer in a worker thread (under a :class:`trio.CapacityLimiter` shared with the other
Store calls), and hands each caller its own item's result. While one batch is written the
next one fills, so under load batches grow by themselves and a commit serves many calls.

Each caller awaits the commit of its batch: an answer of ``success`` means the rows are
stored. When the writer fails, every caller of that batch gets an :class:`IngestError`
(``transient`` when the database failed, a :class:`~transport.manager.StoreError`, so that
the daemon retries); nothing is half-acknowledged.

**Bounded.** The queue holds at most ``max_queued`` weight (a heartbeat weighs 1, a report
1 plus its number of values): beyond, :meth:`Ingest.heartbeat` and :meth:`Ingest.report`
raise :class:`OverloadedError` at once (the service answers ``RESOURCE_EXHAUSTED``; the
daemon keeps the report and retries with backoff) instead of queueing without limit.

**Cancellation.** A caller cancelled while its item waits (its client gave up) takes the
item out of the next batch; one cancelled while its batch is written leaves it written
(the daemon sends it again and the Store ignores the duplicate). When :meth:`Ingest.run`
is cancelled, the batch being written finishes (a worker thread cannot be interrupted)
and its callers get their results; queued and later callers get :class:`ShuttingDownError`.

**Counters.** :meth:`Ingest.statistics` is read by the Prometheus endpoint: batches and
their sizes, rows written, and the service's calls by method and refusals by status (the
service counts those through :meth:`Ingest.count_call` and :meth:`Ingest.count_refused`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import trio

from transport._convert import MetricPoint

from ._errors import ManagerError, StoreError

if TYPE_CHECKING:
    from transport._errors import StatusCode

__all__ = [
    "BATCH_BUCKETS",
    "METHODS",
    "Batch",
    "BatchResult",
    "Ingest",
    "IngestError",
    "IngestStatistics",
    "IngestStore",
    "OverloadedError",
    "ShuttingDownError",
    "StoreRunner",
    "Writer",
    "store_writer",
]

logger = logging.getLogger("hostvisor.manager.ingest")

T = TypeVar("T")
S = TypeVar("S")

METHODS = ("RegisterNode", "Heartbeat", "ReportMetrics", "SyncAgentStates")
"""The methods the service counts calls of."""
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Upper bounds of the batch size histogram (a last bucket, +Inf, holds the rest)."""


class IngestError(ManagerError):
    """A batch could not be written; every caller of the batch gets one.

    Attributes:
        transient: The database failed (a :class:`~transport.manager.StoreError`): trying
            again later may succeed. False: a defect (logged with its traceback).
    """

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class OverloadedError(ManagerError):
    """The queue is full: the call is refused at once rather than queued without limit."""


class ShuttingDownError(ManagerError):
    """The ingest service has stopped (or stops before the item was written)."""


# --------------------------------------------------------------------------- the seam


@dataclass(frozen=True, slots=True)
class Batch:
    """What one transaction writes.

    Attributes:
        heartbeats: ``(node_id, when)`` per heartbeat, in arrival order (unix seconds).
        reports: ``(node_id, points)`` per metric report, in arrival order.
        now: When the batch was taken (unix seconds): the reports' ``created_at``.
    """

    heartbeats: tuple[tuple[str, float], ...]
    reports: tuple[tuple[str, tuple[MetricPoint, ...]], ...]
    now: float


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What a writer answers, item by item in :class:`Batch` order.

    Attributes:
        created: Per heartbeat: whether its node was unknown (and created from it).
        inserted: Per report: the rows inserted (duplicates are not), or None when the
            node is unknown (nothing is stored).
    """

    created: tuple[bool, ...]
    inserted: tuple[int | None, ...]


Writer = Callable[[Batch], BatchResult]
"""Writes a batch (in a worker thread); raises to fail every item of it."""


class IngestStore(Protocol):
    """The Store's part that :func:`store_writer` uses."""

    def ingest(
        self,
        heartbeats: Sequence[tuple[str, float]],
        reports: Sequence[tuple[str, Sequence[MetricPoint]]],
        *,
        now: float,
    ) -> tuple[list[bool], list[int | None]]:
        """Heartbeats then reports, in one transaction: per heartbeat whether its node was
        created, per report the rows inserted or None (unknown node)."""


def store_writer(store: IngestStore) -> Writer:
    """The writer of a Store: each batch in one transaction, heartbeats first (a node a
    heartbeat creates is known to the reports of the same batch), then the reports.

    Args:
        store: The Store.

    Returns:
        The writer.
    """

    def write(batch: Batch) -> BatchResult:
        created, inserted = store.ingest(batch.heartbeats, batch.reports, now=batch.now)
        return BatchResult(tuple(created), tuple(inserted))

    return write


class StoreRunner(Generic[S]):
    """Runs sync Store calls in worker threads, at most ``limiter``'s total at once.

    Args:
        store: The Store (thread-safe).
        limiter: Bounds the threads in the Store; share it with every Store user.
    """

    def __init__(self, store: S, limiter: trio.CapacityLimiter) -> None:
        self.store = store
        self.limiter = limiter

    async def __call__(self, fn: Callable[[S], T]) -> T:
        """``fn(store)`` in a worker thread (waited for even when cancelled).

        Raises:
            Exception: What ``fn`` raises.
        """
        return await trio.to_thread.run_sync(fn, self.store, limiter=self.limiter)


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True, slots=True)
class IngestStatistics:
    """The gRPC service's counters since start (Prometheus reads them).

    Attributes:
        calls: Calls by method (:data:`METHODS`), refused ones included.
        refused: Refused calls by status name (``INVALID_ARGUMENT``, ``NOT_FOUND``,
            ``PERMISSION_DENIED``, ``RESOURCE_EXHAUSTED``, ``UNAVAILABLE``, ``INTERNAL``).
        registrations: Nodes registered (RegisterNode stored).
        heartbeats: Heartbeats stored.
        nodes_created: Unknown nodes created from a heartbeat.
        metric_rows: Metric rows inserted.
        metric_duplicates: Metric rows ignored as duplicates.
        agent_states: Agent states stored by SyncAgentStates.
        batches: Batches written (or failed).
        batch_items: Items in those batches (the histogram's sum).
        batch_sizes: The batch size histogram, cumulative: ``(upper bound, batches with
            at most that many items)``; the last bound is ``inf``.
        batch_failures: Batches the writer failed.
        write_seconds: Time spent writing batches (Trio's clock).
        queued: Items waiting now.
        queued_weight: Their weight (see the module documentation).
    """

    calls: Mapping[str, int]
    refused: Mapping[str, int]
    registrations: int
    heartbeats: int
    nodes_created: int
    metric_rows: int
    metric_duplicates: int
    agent_states: int
    batches: int
    batch_items: int
    batch_sizes: tuple[tuple[float, int], ...]
    batch_failures: int
    write_seconds: float
    queued: int
    queued_weight: int


@dataclass
class _Counters:
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METHODS, 0))
    refused: dict[str, int] = field(default_factory=dict)
    registrations: int = 0
    heartbeats: int = 0
    nodes_created: int = 0
    metric_rows: int = 0
    metric_duplicates: int = 0
    agent_states: int = 0
    batches: int = 0
    batch_items: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BATCH_BUCKETS) + 1))
    batch_failures: int = 0
    write_seconds: float = 0.0

    def batch(self, size: int) -> None:
        self.batches += 1
        self.batch_items += size
        index = next((i for i, bound in enumerate(BATCH_BUCKETS) if size <= bound), -1)
        self.buckets[index] += 1


# --------------------------------------------------------------------------- the service


@dataclass(eq=False, slots=True)
class _Pending:
    """One queued item and, once written, its result."""

    node_id: str
    when: float
    points: tuple[MetricPoint, ...] | None  # None: a heartbeat
    weight: int
    done: trio.Event = field(default_factory=trio.Event)
    abandoned: bool = False
    result: bool | int | None = None
    error: ManagerError | None = None


class Ingest:
    """The group-commit service (see the module documentation).

    Args:
        writer: Writes a batch (:func:`store_writer`).
        limiter: Bounds the worker threads (share the Store's); None: a limiter of one.
        max_batch: The most items in one batch.
        linger_s: How long a batch may wait for more items while fewer than
            ``max_batch`` are queued (0: write at once).
        max_queued: The most weight that may wait (see the module documentation).
        wall: The wall clock (unix seconds).

    Raises:
        ValueError: A limit below 1, or a negative ``linger_s``.
    """

    def __init__(
        self,
        writer: Writer,
        *,
        limiter: trio.CapacityLimiter | None = None,
        max_batch: int = 512,
        linger_s: float = 0.002,
        max_queued: int = 500_000,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if max_batch < 1 or max_queued < 1:
            raise ValueError("Ingest: max_batch and max_queued must be at least 1")
        if not linger_s >= 0:
            raise ValueError(f"Ingest: linger_s must be >= 0; got {linger_s!r}")
        self._writer = writer
        self._limiter = limiter or trio.CapacityLimiter(1)
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.max_queued = max_queued
        self._wall = wall
        self._queue: deque[_Pending] = deque()
        self._weight = 0
        self._wake = trio.Event()
        self._full = trio.Event()
        self._closed = False
        self._running = False
        self._counters = _Counters()

    # --- callers ----------------------------------------------------------------------------

    async def heartbeat(self, node_id: str) -> bool:
        """Mark the node online (created when unknown) in the next batch.

        Args:
            node_id: The node (validated).

        Returns:
            Whether the node was unknown and has been created from this heartbeat.

        Raises:
            OverloadedError: The queue is full.
            IngestError: The batch could not be written.
            ShuttingDownError: The service stopped.
        """
        result = await self._submit(_Pending(node_id, self._wall(), None, 1))
        return bool(result)

    async def report(self, node_id: str, points: Sequence[MetricPoint]) -> int | None:
        """Store a node's metric points in the next batch.

        Args:
            node_id: The node (validated).
            points: Its points (validated).

        Returns:
            The rows inserted (duplicates are ignored), or None when the node is unknown.

        Raises:
            OverloadedError: The queue is full.
            IngestError: The batch could not be written.
            ShuttingDownError: The service stopped.
        """
        frozen = tuple(points)
        weight = 1 + sum(len(p.values) for p in frozen)
        result = await self._submit(_Pending(node_id, self._wall(), frozen, weight))
        return None if result is None else int(result)

    async def _submit(self, item: _Pending) -> bool | int | None:
        if self._closed:
            raise ShuttingDownError("the Manager is shutting down")
        if self._weight + item.weight > self.max_queued:
            raise OverloadedError(
                f"the Manager is overloaded ({len(self._queue)} writes waiting); retry later"
            )
        self._queue.append(item)
        self._weight += item.weight
        self._wake.set()
        if len(self._queue) >= self.max_batch:
            self._full.set()
        try:
            await item.done.wait()
        except trio.Cancelled:
            item.abandoned = True  # still queued: left out of its batch
            raise
        if item.error is not None:
            raise item.error
        return item.result

    # --- counters the service keeps here --------------------------------------------------

    def count_call(self, method: str) -> None:
        """Count a call of ``method`` (one of :data:`METHODS`)."""
        self._counters.calls[method] = self._counters.calls.get(method, 0) + 1

    def count_refused(self, status: StatusCode) -> None:
        """Count a call answered with a non-OK ``status``."""
        refused = self._counters.refused
        refused[status.name] = refused.get(status.name, 0) + 1

    def count_registration(self) -> None:
        """Count a stored RegisterNode."""
        self._counters.registrations += 1

    def count_agent_states(self, rows: int) -> None:
        """Count the agent states a SyncAgentStates stored."""
        self._counters.agent_states += rows

    def statistics(self) -> IngestStatistics:
        """A frozen snapshot of the counters."""
        c = self._counters
        cumulative: list[tuple[float, int]] = []
        total = 0
        for bound, count in zip((*BATCH_BUCKETS, float("inf")), c.buckets, strict=True):
            total += count
            cumulative.append((float(bound), total))
        return IngestStatistics(
            calls=MappingProxyType(dict(c.calls)),
            refused=MappingProxyType(dict(c.refused)),
            registrations=c.registrations,
            heartbeats=c.heartbeats,
            nodes_created=c.nodes_created,
            metric_rows=c.metric_rows,
            metric_duplicates=c.metric_duplicates,
            agent_states=c.agent_states,
            batches=c.batches,
            batch_items=c.batch_items,
            batch_sizes=tuple(cumulative),
            batch_failures=c.batch_failures,
            write_seconds=c.write_seconds,
            queued=len(self._queue),
            queued_weight=self._weight,
        )

    # --- the owner task ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write batches until cancelled; then refuse what waits and what comes.

        Start with ``await nursery.start(ingest.run)``, before the gRPC server.

        Raises:
            RuntimeError: It runs already, or ran before.
        """
        if self._closed or self._running:
            raise RuntimeError("Ingest.run: it runs already, or ran before")
        self._running = True
        task_status.started()
        try:
            while True:
                await self._wait_for_items()
                batch = self._take()
                if batch:
                    await self._write(batch)
        finally:
            self._closed = True
            self._fail_queued()

    async def _wait_for_items(self) -> None:
        while not self._queue:
            self._wake = trio.Event()
            await self._wake.wait()
        if len(self._queue) < self.max_batch and self.linger_s > 0:
            self._full = trio.Event()
            with trio.move_on_after(self.linger_s):
                await self._full.wait()

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        while self._queue and len(batch) < self.max_batch:
            item = self._queue.popleft()
            self._weight -= item.weight
            if not item.abandoned:
                batch.append(item)
        return batch

    async def _write(self, items: list[_Pending]) -> None:
        beats = [i for i in items if i.points is None]
        reports = [i for i in items if i.points is not None]
        batch = Batch(
            heartbeats=tuple((i.node_id, i.when) for i in beats),
            reports=tuple((i.node_id, i.points) for i in reports if i.points is not None),
            now=self._wall(),
        )
        c = self._counters
        c.batch(len(items))
        started = trio.current_time()
        try:
            result = await trio.to_thread.run_sync(self._writer, batch, limiter=self._limiter)
            if len(result.created) != len(beats) or len(result.inserted) != len(reports):
                raise RuntimeError(f"the writer answered {result!r} for {len(items)} items")
        except Exception as exc:
            c.batch_failures += 1
            transient = isinstance(exc, StoreError)
            if transient:
                logger.warning("a batch of %d writes failed: %s", len(items), exc)
            else:
                logger.error("a batch of %d writes failed", len(items), exc_info=exc)
            for item in items:
                item.error = IngestError(
                    f"the Manager could not store it: {exc}", transient=transient
                )
                item.done.set()
            return
        except BaseException:  # cancelled before the thread started: nothing was written
            for item in items:
                item.error = ShuttingDownError("the Manager is shutting down")
                item.done.set()
            raise
        finally:
            c.write_seconds += trio.current_time() - started
        for item, created in zip(beats, result.created, strict=True):
            c.heartbeats += 1
            c.nodes_created += created
            item.result = created
            item.done.set()
        for item, inserted in zip(reports, result.inserted, strict=True):
            if inserted is not None and item.points is not None:
                c.metric_rows += inserted
                c.metric_duplicates += len(item.points) - inserted
            item.result = inserted
            item.done.set()

    def _fail_queued(self) -> None:
        while self._queue:
            item = self._queue.popleft()
            item.error = ShuttingDownError("the Manager is shutting down")
            item.done.set()
        self._weight = 0
