"""The reports waiting to go to the Manager, in the order they were made. IO (Trio).

Theory of operation
-------------------
Every report (a metrics batch or a full agent-state sync) gets a sequence number from one
counter when it is made, and is delivered in that order. It waits in one of two places:

* **memory**, while the Manager is reachable: the normal path costs no disk write;
* **the spool** (:class:`~transport.daemon._spool.ReportSpool`), on disk, once delivery is
  not possible: reports made while the link is down go there directly, and the sender
  moves what waits in memory there (:meth:`Outbox.spill`) when it finds the link down, when
  memory holds more than :data:`MAX_MEMORY` reports, and at shutdown.

:meth:`Outbox.head` is the waiting report with the smallest sequence number wherever it
is, so the order holds across both places, across outages, and across daemon restarts (the
counter continues after the spool's largest number). A state sync replaces an older state
sync still waiting in memory (the newer carries the full list); the spool does the same by
its policy. Only the sender task calls :meth:`head`, :meth:`done` and :meth:`spill`; any
task may :meth:`put`. Spool IO runs in a worker thread, one operation at a time.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from functools import partial

import trio

from ._spool import ReportSpool, SpoolEntry
from ._spool_policy import EntryKind

__all__ = ["MAX_MEMORY", "Outbox", "Pending", "Report"]

logger = logging.getLogger("hostvisor.manager")

MAX_MEMORY = 32
"""Reports kept in memory before the sender moves them to the spool."""


@dataclass(frozen=True, slots=True)
class Report:
    """One request to deliver.

    Attributes:
        seq: Its place in the delivery order.
        kind: Metrics or agent states.
        payload: The serialized request.
        created: When it was made (wall clock).
    """

    seq: int
    kind: EntryKind
    payload: bytes
    created: float


@dataclass(frozen=True, slots=True)
class Pending:
    """The report at the head of the outbox.

    Attributes:
        report: The report.
        entry: Its spool entry when it comes from the spool; None when from memory.
    """

    report: Report
    entry: SpoolEntry | None = None


class Outbox:
    """Reports in delivery order, in memory or spooled (see the module documentation).

    Args:
        spool: The spool (not yet opened).
    """

    def __init__(self, spool: ReportSpool) -> None:
        self.spool = spool
        self.spooling = True
        """Whether new reports go to the spool directly (the link is down)."""
        self.superseded = 0
        """State syncs replaced in memory by a newer one."""
        self.unwritable = 0
        """Reports lost because the spool could not be written."""
        self._memory: collections.deque[Report] = collections.deque()
        self._lock = trio.Lock()
        self._next_seq = 1
        self._changed = trio.Event()

    async def open(self, *, now: float) -> None:
        """Index the spool a previous run left; new reports are numbered after its own.

        Raises:
            OSError: The spool directory is unusable.
        """
        async with self._lock:
            await trio.to_thread.run_sync(lambda: self.spool.open(now=now))
            self._next_seq = max(self._next_seq, self.spool.next_seq)

    def __len__(self) -> int:
        return len(self._memory) + len(self.spool)

    @property
    def in_memory(self) -> int:
        """Reports waiting in memory."""
        return len(self._memory)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_nonempty(self) -> None:
        """Wait until a report waits."""
        while not len(self):
            await self._changed.wait()

    async def put(self, kind: EntryKind, payload: bytes, *, created: float) -> Report:
        """Queue a report behind every report made before it.

        Args:
            kind: What it holds.
            payload: The serialized request.
            created: When it was made (wall clock).

        Returns:
            The report with its sequence number.
        """
        report = Report(self._next_seq, kind, payload, created)
        self._next_seq += 1
        if kind is EntryKind.STATES:
            before = len(self._memory)
            self._memory = collections.deque(
                r for r in self._memory if r.kind is not EntryKind.STATES
            )
            self.superseded += before - len(self._memory)
        if self.spooling:
            await self._to_spool([report])
        else:
            self._memory.append(report)
        self._wake()
        return report

    async def head(self) -> Pending | None:
        """The waiting report with the smallest sequence number, or None."""
        async with self._lock:
            while True:
                entry = self.spool.head()
                memory = self._memory[0] if self._memory else None
                if entry is None or (memory is not None and memory.seq < entry.seq):
                    return Pending(memory) if memory is not None else None
                payload = await trio.to_thread.run_sync(self.spool.read, entry)
                if payload is not None:  # else it was dropped: look again
                    info = entry.info
                    return Pending(Report(info.seq, info.kind, payload, info.created), entry)

    async def done(self, pending: Pending) -> None:
        """Forget a report: delivered, or dropped for good."""
        if pending.entry is not None:
            async with self._lock:
                await trio.to_thread.run_sync(self.spool.remove, pending.entry)
        elif self._memory and self._memory[0] is pending.report:
            self._memory.popleft()
        else:  # replaced meanwhile by a newer state sync, or spilled
            self._memory = collections.deque(r for r in self._memory if r is not pending.report)

    async def spill(self) -> None:
        """Move every report waiting in memory to the spool (durable), in order."""
        if self._memory:
            reports = list(self._memory)
            self._memory.clear()
            await self._to_spool(reports)

    async def _to_spool(self, reports: list[Report]) -> None:
        async with self._lock:
            for report in reports:
                try:
                    append = partial(
                        self.spool.append,
                        report.seq,
                        report.kind,
                        report.payload,
                        created=report.created,
                    )
                    await trio.to_thread.run_sync(append)
                except OSError as exc:
                    self.unwritable += 1
                    logger.error("D2003 a report could not be spooled (lost): %s", exc)
