"""Group commit of every write of the gRPC service, in a writer thread, and its counters. IO.

Theory of operation
-------------------
A fleet's daemons register, send a heartbeat and a metric report every interval and their
agents' states every half interval; one database transaction each would spend the
Manager's time committing. :class:`Ingest` queues all four kinds of write instead and
writes a whole batch in one transaction through a **writer**: a sync function that takes a
:class:`Batch` and returns a :class:`BatchResult` (:func:`store_writer` makes one of the
Store; tests pass their own).

The callers are the gRPC handlers, synchronous functions on the gRPC server's thread
(:mod:`transport._grpc_thread`): ``submit_*`` queues an item and returns a
``concurrent.futures.Future`` of its own result at once; the handler returns that future
(mapped to a response) and the server answers when it completes. The writer runs in one
**writer thread** owned by :meth:`Ingest.run`: it takes what is queued (up to
``max_batch`` items, no sooner than ``interval_s`` after it took the last batch unless a
whole batch waits: :mod:`._ingest_policy`), writes it, and completes each item's future.
While one batch is written and while the interval runs the next one fills, so under load
one commit serves many calls. Within a batch the
registrations come first, then heartbeats, reports and syncs (a node registered, or created
by a heartbeat, is known to the reports and syncs of the same batch).

An answer of ``success`` means the rows are committed. When the writer fails a batch of
several items, each item is written again alone, so that one node's bad item fails only
its own call (after three items in a row fail with a database error, the database is
taken to be down and the rest fail with that error without more attempts). A failed item
gets an :class:`IngestError` (``transient`` when the database failed, a
:class:`~transport.manager.StoreError`, so that the daemon retries).

**Bounded.** The queue holds at most ``max_queued`` weight (an item weighs 1, plus the
number of values of a report or the states of a sync): beyond, ``submit_*`` raises
:class:`OverloadedError` at once (the service answers ``RESOURCE_EXHAUSTED``; the daemon
keeps the report and retries with backoff) instead of queueing without limit.

**Cancellation.** A caller whose call is cancelled (its client gave up) cancels its
future: an item not yet taken is left out of its batch (``set_running_or_notify_cancel``);
one taken is written (the daemon sends it again and the Store ignores the duplicate).
When :meth:`Ingest.run` is cancelled, the batch being written finishes (a thread cannot
be interrupted), queued and later items get :class:`ShuttingDownError`, and the thread is
joined before ``run`` returns.

**Counters.** :meth:`Ingest.statistics` is read by the Prometheus endpoint: batches and
their sizes, rows written, and the service's calls by method and refusals by status (the
service counts those through :meth:`Ingest.count_call` and :meth:`Ingest.count_refused`).
They are updated from the writer thread and the gRPC thread under one lock.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import trio

from transport._convert import AgentStateRecord, MetricPoint, NodeRegistration

from ._errors import ManagerError, StoreError
from ._ingest_policy import batch_delay

if TYPE_CHECKING:
    from transport._errors import StatusCode

    from ._model import Node

__all__ = [
    "BATCH_BUCKETS",
    "BATCH_INTERVAL_S",
    "METHODS",
    "Batch",
    "BatchResult",
    "Ingest",
    "IngestError",
    "IngestStatistics",
    "IngestStore",
    "OverloadedError",
    "ShuttingDownError",
    "Writer",
    "store_writer",
    "wait_future",
]

logger = logging.getLogger("hostvisor.manager.ingest")

T = TypeVar("T")

METHODS = ("RegisterNode", "Heartbeat", "ReportMetrics", "SyncAgentStates")
"""The methods the service counts calls of."""
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Upper bounds of the batch size histogram (a last bucket, +Inf, holds the rest)."""
BATCH_INTERVAL_S = 0.010
"""The least time between the starts of two batches, by default (see :mod:`._ingest_policy`)."""
_FAILED_ALONE_MAX = 3
"""Items that fail alone in a row with a database error before the rest are failed."""


class IngestError(ManagerError):
    """An item could not be written.

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

Registration = tuple[NodeRegistration, "int | None", float]
"""A RegisterNode: the registration, the announced gRPC port, and when."""
Sync = tuple[str, tuple[AgentStateRecord, ...], float]
"""A full SyncAgentStates: the node, its agents' states, and when."""


@dataclass(frozen=True, slots=True)
class Batch:
    """What one transaction writes.

    Attributes:
        heartbeats: ``(node_id, when)`` per heartbeat, in arrival order (unix seconds).
        reports: ``(node_id, points)`` per metric report, in arrival order.
        now: When the batch was taken (unix seconds): the reports' ``created_at``.
        registrations: ``(registration, grpc_port, when)`` per RegisterNode.
        syncs: ``(node_id, states, when)`` per (full) SyncAgentStates, in arrival order.
    """

    heartbeats: tuple[tuple[str, float], ...]
    reports: tuple[tuple[str, tuple[MetricPoint, ...]], ...]
    now: float
    registrations: tuple[Registration, ...] = ()
    syncs: tuple[Sync, ...] = ()

    def __len__(self) -> int:
        return len(self.heartbeats) + len(self.reports) + len(self.registrations) + len(self.syncs)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What a writer answers, item by item in :class:`Batch` order.

    Attributes:
        created: Per heartbeat: whether its node was unknown (and created from it).
        inserted: Per report: the rows inserted (duplicates are not), or None when the
            node is unknown (nothing is stored).
        registered: Per registration: the node as stored.
        synced: Per sync: the agents written, or None when the node is unknown.
    """

    created: tuple[bool, ...]
    inserted: tuple[int | None, ...]
    registered: tuple[Node, ...] = ()
    synced: tuple[int | None, ...] = ()


Writer = Callable[[Batch], BatchResult]
"""Writes a batch (in the writer thread); raises to fail every item of it."""


class IngestStore(Protocol):
    """The Store's part that :func:`store_writer` uses."""

    def write_batch(
        self,
        registrations: Sequence[Registration],
        heartbeats: Sequence[tuple[str, float]],
        reports: Sequence[tuple[str, Sequence[MetricPoint]]],
        syncs: Sequence[Sync],
        *,
        now: float,
    ) -> tuple[list[Node], list[bool], list[int | None], list[int | None]]:
        """Registrations, heartbeats, reports and syncs in one transaction."""


def store_writer(store: IngestStore) -> Writer:
    """The writer of a Store: each batch in one transaction (``Store.write_batch``).

    Args:
        store: The Store.

    Returns:
        The writer.
    """

    def write(batch: Batch) -> BatchResult:
        registered, created, inserted, synced = store.write_batch(
            batch.registrations, batch.heartbeats, batch.reports, batch.syncs, now=batch.now
        )
        return BatchResult(tuple(created), tuple(inserted), tuple(registered), tuple(synced))

    return write


async def wait_future(future: concurrent.futures.Future[T]) -> T:
    """Wait in Trio for a future completed by another thread; cancelling the wait
    cancels the future (an item not yet taken by the writer is left out).

    Raises:
        Exception: The future's exception.
    """
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def wake(_: object) -> None:
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:  # pragma: no cover - nobody waits any more
            pass

    future.add_done_callback(wake)
    try:
        await done.wait()
    except trio.Cancelled:
        future.cancel()
        raise
    return future.result()


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
        write_seconds: Time spent writing batches.
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

_REGISTER, _HEARTBEAT, _REPORT, _SYNC = range(4)


@dataclass(eq=False, slots=True)
class _Pending:
    """One queued item and the future of its result."""

    kind: int
    payload: Any  # per kind: Registration, (node_id, when), (node_id, points), Sync
    weight: int
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)


class Ingest:
    """The group-commit service (see the module documentation).

    Args:
        writer: Writes a batch (:func:`store_writer`).
        max_batch: The most items in one batch.
        interval_s: The least time between the starts of two batches while fewer than
            ``max_batch`` items are queued (0: write at once; see :mod:`._ingest_policy`).
        max_queued: The most weight that may wait (see the module documentation).
        wall: The wall clock (unix seconds).

    Raises:
        ValueError: A limit below 1, or a negative ``interval_s``.
    """

    def __init__(
        self,
        writer: Writer,
        *,
        max_batch: int = 512,
        interval_s: float = BATCH_INTERVAL_S,
        max_queued: int = 500_000,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if max_batch < 1 or max_queued < 1:
            raise ValueError("Ingest: max_batch and max_queued must be at least 1")
        if not interval_s >= 0:
            raise ValueError(f"Ingest: interval_s must be >= 0; got {interval_s!r}")
        self._writer = writer
        self.max_batch = max_batch
        self.interval_s = interval_s
        self._last_start: float | None = None
        self.max_queued = max_queued
        self._wall = wall
        self._queue: deque[_Pending] = deque()
        self._weight = 0
        self._ready = threading.Condition(threading.Lock())
        self._closed = False
        self._running = False
        self._counters = _Counters()
        self._counting = threading.Lock()

    # --- callers (any thread) ---------------------------------------------------------------

    def submit_registration(
        self, reg: NodeRegistration, grpc_port: int | None
    ) -> concurrent.futures.Future[Node]:
        """Create or update a node in the next batch.

        Args:
            reg: The registration (validated).
            grpc_port: The port the daemon announced, or None.

        Returns:
            The future of the node as stored.

        Raises:
            OverloadedError: The queue is full.
            ShuttingDownError: The service stopped.
        """
        return self._submit(_Pending(_REGISTER, (reg, grpc_port, self._wall()), 1))

    def submit_heartbeat(self, node_id: str) -> concurrent.futures.Future[bool]:
        """Mark the node online (created when unknown) in the next batch.

        Args:
            node_id: The node (validated).

        Returns:
            The future of whether the node was unknown and has been created.

        Raises:
            OverloadedError: The queue is full.
            ShuttingDownError: The service stopped.
        """
        return self._submit(_Pending(_HEARTBEAT, (node_id, self._wall()), 1))

    def submit_report(
        self, node_id: str, points: Sequence[MetricPoint]
    ) -> concurrent.futures.Future[int | None]:
        """Store a node's metric points in the next batch.

        Args:
            node_id: The node (validated).
            points: Its points (validated).

        Returns:
            The future of the rows inserted (duplicates are ignored), or of None when the
            node is unknown.

        Raises:
            OverloadedError: The queue is full.
            ShuttingDownError: The service stopped.
        """
        frozen = tuple(points)
        weight = 1 + sum(len(p.values) for p in frozen)
        return self._submit(_Pending(_REPORT, (node_id, frozen), weight))

    def submit_sync(
        self, node_id: str, states: Sequence[AgentStateRecord]
    ) -> concurrent.futures.Future[int | None]:
        """Apply a node's full agent list in the next batch.

        Args:
            node_id: The node (validated).
            states: Its agents' states (validated).

        Returns:
            The future of the agents written, or of None when the node is unknown.

        Raises:
            OverloadedError: The queue is full.
            ShuttingDownError: The service stopped.
        """
        frozen = tuple(states)
        return self._submit(_Pending(_SYNC, (node_id, frozen, self._wall()), 1 + len(frozen)))

    async def heartbeat(self, node_id: str) -> bool:
        """:meth:`submit_heartbeat`, awaited in Trio.

        Raises:
            OverloadedError: The queue is full.
            IngestError: The item could not be written.
            ShuttingDownError: The service stopped.
        """
        created: bool = await wait_future(self.submit_heartbeat(node_id))
        return created

    async def report(self, node_id: str, points: Sequence[MetricPoint]) -> int | None:
        """:meth:`submit_report`, awaited in Trio.

        Raises:
            OverloadedError: The queue is full.
            IngestError: The item could not be written.
            ShuttingDownError: The service stopped.
        """
        return await wait_future(self.submit_report(node_id, points))

    def _submit(self, item: _Pending) -> concurrent.futures.Future[Any]:
        with self._ready:
            if self._closed:
                raise ShuttingDownError("the Manager is shutting down")
            if self._weight + item.weight > self.max_queued:
                raise OverloadedError(
                    f"the Manager is overloaded ({len(self._queue)} writes waiting); retry later"
                )
            self._queue.append(item)
            self._weight += item.weight
            if len(self._queue) == 1 or len(self._queue) >= self.max_batch:
                self._ready.notify()
        return item.future

    # --- counters the service keeps here --------------------------------------------------

    def count_call(self, method: str) -> None:
        """Count a call of ``method`` (one of :data:`METHODS`)."""
        with self._counting:
            self._counters.calls[method] = self._counters.calls.get(method, 0) + 1

    def count_refused(self, status: StatusCode) -> None:
        """Count a call answered with a non-OK ``status``."""
        with self._counting:
            refused = self._counters.refused
            refused[status.name] = refused.get(status.name, 0) + 1

    def count_registration(self) -> None:
        """Count a stored RegisterNode (the writer counts its own; for other callers)."""
        with self._counting:
            self._counters.registrations += 1

    def count_agent_states(self, rows: int) -> None:
        """Count agent states stored (the writer counts its own; for other callers)."""
        with self._counting:
            self._counters.agent_states += rows

    def statistics(self) -> IngestStatistics:
        """A frozen snapshot of the counters."""
        with self._counting:
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
        """Run the writer thread until cancelled; then refuse what waits and what comes.

        Start with ``await nursery.start(ingest.run)``, before the gRPC server. Returns
        (or raises ``Cancelled``) only once the writer thread has ended.

        Raises:
            RuntimeError: It runs already, or ran before.
        """
        if self._closed or self._running:
            raise RuntimeError("Ingest.run: it runs already, or ran before")
        self._running = True

        async def close_when_cancelled() -> None:
            try:
                await trio.sleep_forever()
            finally:
                self._close()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(close_when_cancelled)
                task_status.started()
                try:  # a Trio worker thread: waited for even when cancelled
                    await trio.to_thread.run_sync(self._write_until_closed)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._close()
            self._fail_queued()

    def _close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def _write_until_closed(self) -> None:
        """The writer thread's loop."""
        while True:
            items = self._take()
            if items is None:
                return
            if items:
                self._write(items)

    def _take(self) -> list[_Pending] | None:
        """The next batch (items cancelled meanwhile left out); None once closed."""
        ready = self._ready
        with ready:
            while not self._queue and not self._closed:
                ready.wait()
            if self._closed:
                return None
            delay = batch_delay(
                time.monotonic(),
                last_start=self._last_start,
                queued=len(self._queue),
                max_batch=self.max_batch,
                interval_s=self.interval_s,
            )
            if delay > 0:
                ready.wait_for(self._full_or_closed, delay)
                if self._full_or_closed() and len(self._queue) < self.max_batch:
                    return None  # closed while waiting
            self._last_start = time.monotonic()
            batch: list[_Pending] = []
            while self._queue and len(batch) < self.max_batch:
                item = self._queue.popleft()
                self._weight -= item.weight
                batch.append(item)
        return [item for item in batch if item.future.set_running_or_notify_cancel()]

    def _full_or_closed(self) -> bool:
        return self._closed or len(self._queue) >= self.max_batch

    def _write(self, items: list[_Pending]) -> None:
        started = time.monotonic()
        try:
            results = self._write_batch(items)
        except Exception as exc:
            with self._counting:
                self._counters.batch(len(items))
                self._counters.batch_failures += 1
                self._counters.write_seconds += time.monotonic() - started
            self._log_failure(len(items), exc)
            if len(items) == 1:
                items[0].future.set_exception(_ingest_error(exc))
            else:
                self._write_alone(items)
            return
        with self._counting:
            self._counters.batch(len(items))
            self._counters.write_seconds += time.monotonic() - started
            for item, result in zip(items, results, strict=True):
                self._count(item, result)
        for item, result in zip(items, results, strict=True):
            item.future.set_result(result)

    def _write_alone(self, items: list[_Pending]) -> None:
        """Write each item of a failed batch in its own transaction (see the module
        documentation); after too many database errors in a row, fail the rest."""
        failed_in_a_row = 0
        for index, item in enumerate(items):
            try:
                (result,) = self._write_batch([item])
            except Exception as exc:
                item.future.set_exception(_ingest_error(exc))
                failed_in_a_row = failed_in_a_row + 1 if isinstance(exc, StoreError) else 0
                if failed_in_a_row >= _FAILED_ALONE_MAX:
                    for rest in items[index + 1 :]:
                        rest.future.set_exception(_ingest_error(exc))
                    return
                continue
            failed_in_a_row = 0
            with self._counting:
                self._count(item, result)
            item.future.set_result(result)

    def _write_batch(self, items: list[_Pending]) -> list[Any]:
        """Write ``items`` in one batch; their results in ``items`` order."""
        by_kind: list[list[_Pending]] = [[], [], [], []]
        for item in items:
            by_kind[item.kind].append(item)
        registrations, beats, reports, syncs = by_kind
        batch = Batch(
            heartbeats=tuple(i.payload for i in beats),
            reports=tuple(i.payload for i in reports),
            now=self._wall(),
            registrations=tuple(i.payload for i in registrations),
            syncs=tuple(i.payload for i in syncs),
        )
        result = self._writer(batch)
        answers = (result.registered, result.created, result.inserted, result.synced)
        if any(len(a) != len(k) for a, k in zip(answers, by_kind, strict=True)):
            raise RuntimeError(f"the writer answered {result!r} for {len(items)} items")
        found: dict[int, Any] = {}
        for kind_items, kind_answers in zip(by_kind, answers, strict=True):
            for item, answer in zip(kind_items, kind_answers, strict=True):
                found[id(item)] = answer
        return [found[id(item)] for item in items]

    def _count(self, item: _Pending, result: Any) -> None:
        """Count a written item (under ``_counting``)."""
        c = self._counters
        if item.kind == _REGISTER:
            c.registrations += 1
        elif item.kind == _HEARTBEAT:
            c.heartbeats += 1
            c.nodes_created += bool(result)
        elif item.kind == _REPORT and result is not None:
            c.metric_rows += result
            c.metric_duplicates += len(item.payload[1]) - result
        elif item.kind == _SYNC and result is not None:
            c.agent_states += result

    @staticmethod
    def _log_failure(size: int, exc: Exception) -> None:
        if isinstance(exc, StoreError):
            logger.warning("a batch of %d writes failed: %s", size, exc)
        else:
            logger.error("a batch of %d writes failed", size, exc_info=exc)

    def _fail_queued(self) -> None:
        with self._ready:
            queued = list(self._queue)
            self._queue.clear()
            self._weight = 0
        for item in queued:
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(ShuttingDownError("the Manager is shutting down"))


def _ingest_error(exc: Exception) -> IngestError:
    transient = isinstance(exc, StoreError)
    return IngestError(f"the Manager could not store it: {exc}", transient=transient)
