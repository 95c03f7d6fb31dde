"""What the resilience tests observe beside the harness: the daemons' spools, the Manager's
database, the agents' processes, and the REST API polled from a thread.

**What a daemon produced.** While the Manager is down, every report a daemon makes waits
in its spool (``{work_dir}/spool``, one file per report holding the serialized request:
:mod:`transport.daemon._spool`), and nothing leaves it but by delivery or by the spool's
own bounds (evicted, expired, superseded). :class:`SpoolWatch` lists the spools every
0.1 s from a thread and keeps every entry it ever saw, so a test knows exactly which
reports were made during an outage, with their timestamps, and can look for each of them
in the Manager's database afterwards. A metric's key there is ``(node, type, timestamp)``
with the wire's whole seconds; the exact reading time travels as the ``@timestamp`` value,
which tells a stored row from another report of the same second.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from collectors._metric_data import TIMESTAMP_KEY
from supervisor._proc import scan_marked
from supervisor._process import ENV_AGENT_ID, ENV_OWNER, ENV_RUN_ID, owner_marker
from transport import manager_pb2
from transport.daemon._spool import SPOOL_DIR, parse_entry_name
from transport.manager._store import Store

__all__ = [
    "POLL_S",
    "Delivery",
    "Rows",
    "check_delivery",
    "MetricKey",
    "Poller",
    "SpoolWatch",
    "Spooled",
    "agent_runs",
    "evicted_in_log",
    "produced_metrics",
    "read_spool",
    "read_store",
    "repeating",
    "stored_metrics",
]

T = TypeVar("T")

POLL_S = 0.1
"""How often the watchers look."""
_EVICTED = re.compile(r"D2003 the report spool is full \((\d+) bytes\): dropped (\d+) oldest")

MetricKey = tuple[str, int]
"""A metric's key at the Manager, beside its node: ``(type, timestamp)``."""
Rows = Callable[[str], Sequence[tuple[int, int, float]]]
"""A node's stored rows of one metric type: ``(row id, timestamp, exact time)``."""


@dataclass(frozen=True, slots=True)
class Spooled:
    """One report seen in a daemon's spool.

    Attributes:
        seq: Its place in the daemon's delivery order.
        created: When the daemon made it (wall clock).
        kind: ``metrics`` or ``states``.
        payload: The serialized request.
    """

    seq: int
    created: float
    kind: str
    payload: bytes

    @property
    def size(self) -> int:
        """Its size on disk (what the spool's ``max_bytes`` counts)."""
        return len(self.payload)

    def metrics(self) -> list[tuple[MetricKey, float]]:
        """Each metric of a ``metrics`` report: its key and exact reading time."""
        if self.kind != "metrics":
            return []
        request = manager_pb2.ReportMetricsRequest.FromString(self.payload)
        return [
            ((data.type, data.timestamp), data.values.get(TIMESTAMP_KEY, float(data.timestamp)))
            for data in request.metrics
        ]


def read_spool(work_dir: Path) -> list[Spooled]:
    """The entries in a daemon's spool now, oldest first (a file delivered meanwhile is
    skipped; entries are renamed into place whole, so any file read is complete)."""
    directory = work_dir / SPOOL_DIR
    found: list[Spooled] = []
    try:
        names = [entry.name for entry in directory.iterdir()]
    except FileNotFoundError:
        return found
    for name in names:
        parsed = parse_entry_name(name)
        if parsed is None:
            continue
        try:
            payload = (directory / name).read_bytes()
        except FileNotFoundError:
            continue
        seq, created_ms, kind = parsed
        found.append(Spooled(seq, created_ms / 1000, kind.value, payload))
    return sorted(found, key=lambda entry: entry.seq)


def produced_metrics(entries: Sequence[Spooled]) -> dict[MetricKey, float]:
    """The metric keys of some reports and the exact time of the first report of each
    (two readings in one second share a key: the Manager keeps the first that arrives,
    and the daemon delivers in order)."""
    produced: dict[MetricKey, float] = {}
    for entry in sorted(entries, key=lambda e: e.seq):
        for key, exact in entry.metrics():
            produced.setdefault(key, exact)
    return produced


@dataclass
class SpoolWatch:
    """Every entry that appears in some daemons' spools while the watch runs.

    Args:
        work_dirs: Each daemon's work directory by node id.

    Attributes:
        seen: By node id, every entry seen, by sequence number.
        most_bytes: By node id, the most bytes seen in the spool at one look.
        largest: By node id, the largest entry seen.
    """

    work_dirs: Mapping[str, Path]
    seen: dict[str, dict[int, Spooled]] = field(default_factory=dict)
    most_bytes: dict[str, int] = field(default_factory=dict)
    largest: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def look(self) -> None:
        """List every spool once and remember what is there."""
        for node, work_dir in self.work_dirs.items():
            entries = read_spool(work_dir)
            with self._lock:
                seen = self.seen.setdefault(node, {})
                for entry in entries:
                    seen.setdefault(entry.seq, entry)
                total = sum(entry.size for entry in entries)
                self.most_bytes[node] = max(self.most_bytes.get(node, 0), total)
                biggest = max((entry.size for entry in entries), default=0)
                self.largest[node] = max(self.largest.get(node, 0), biggest)

    def entries(self, node: str, kind: str | None = None) -> list[Spooled]:
        """What was seen of one node's spool (of one kind), oldest first."""
        with self._lock:
            found = list(self.seen.get(node, {}).values())
        return sorted((e for e in found if kind is None or e.kind == kind), key=lambda e: e.seq)

    @contextmanager
    def running(self) -> Iterator[SpoolWatch]:
        """Look every :data:`POLL_S` from a thread while the block runs, and once more at
        its end."""
        with repeating(self.look, "spool-watch"):
            yield self
        self.look()


@dataclass
class Poller(Generic[T]):
    """Calls ``read`` every :data:`POLL_S` from a thread while :meth:`running` lasts and
    keeps every answer (or the exception it raised) with the wall-clock time of the call.

    Args:
        read: What to call.
    """

    read: Callable[[], T]
    answers: list[tuple[float, T]] = field(default_factory=list)
    failures: list[tuple[float, BaseException]] = field(default_factory=list)

    def _once(self) -> None:
        when = time.time()
        try:
            answer = self.read()
        except Exception as exc:  # kept for the test to judge
            self.failures.append((when, exc))
        else:
            self.answers.append((when, answer))

    @contextmanager
    def running(self) -> Iterator[Poller[T]]:
        """Poll from a thread while the block runs."""
        with repeating(self._once, "poller"):
            yield self


@contextmanager
def repeating(step: Callable[[], None], name: str) -> Iterator[None]:
    """Call ``step`` at once and then every :data:`POLL_S` from a thread while the block
    runs; the thread has ended when the block is left."""
    stop = threading.Event()

    def run() -> None:
        while True:
            step()
            if stop.wait(POLL_S):
                return

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)


@contextmanager
def read_store(db: Path) -> Iterator[Store]:
    """The Manager's SQLite database, opened beside the running Manager to be read only
    (no migration; the Manager's own writes go on in WAL mode)."""
    store = Store.open(f"sqlite:///{db}", migrate=False, pool_size=1)
    try:
        yield store
    finally:
        store.close()


def stored_metrics(store: Store, node_id: str, type: str) -> list[tuple[int, int, float]]:
    """A node's stored rows of one type as ``(row id, timestamp, exact time)``, by
    timestamp."""
    rows = store.metric_rows(node_id, type, start=0, end=2**62)
    return [
        (row.id, row.timestamp, row.values.get(TIMESTAMP_KEY, float(row.timestamp))) for row in rows
    ]


def agent_runs(work_dir: Path) -> dict[str, dict[str, list[int]]]:
    """The live processes of a daemon's agents: by agent id, by spawn (the run marker
    every process of one start of an agent inherits), their pids. One spawn per agent
    means no second copy runs, whatever children the agent has at the moment."""
    found: dict[str, dict[str, list[int]]] = {}
    marked = scan_marked((ENV_OWNER, ENV_AGENT_ID, ENV_RUN_ID), owner_marker(str(work_dir)))
    for pid, (_, agent_id, run_id) in sorted(marked.items()):
        found.setdefault(agent_id, {}).setdefault(run_id, []).append(pid)
    return found


def evicted_in_log(text: str) -> int:
    """How many reports a daemon's log says the full spool dropped."""
    return sum(int(match[2]) for match in _EVICTED.finditer(text))


# --------------------------------------------------------------------------- delivery


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of the metric reports one daemon spooled.

    Attributes:
        arrived: The reports the Manager stored: some reading of each is stored as the
            report carried it, and every other one is the same second's earlier reading.
        duplicates: The reports whose every reading shares its second with an arrived
            earlier reading: the Manager ignored them as duplicates (a collection round
            late by most of an interval meets the next one in the same second).
        lost: The reports the Manager never got.
    """

    arrived: list[Spooled]
    duplicates: list[Spooled]
    lost: list[Spooled]


def check_delivery(node_id: str, spooled: Sequence[Spooled], rows: Rows) -> Delivery:
    """Find each spooled metric report at the Manager and check what holds whatever the
    spool's bound: a report arrives whole or not at all; the lost ones are older than
    every one that arrived (the spool drops the oldest); each stored metric is the first
    arrived reading of its second (delivery in order); the stored rows of each type,
    between the first and the last second that arrived, are exactly the arrived ones (no
    gap, nothing else); and every row of the node arrived in timestamp order (row ids
    grow with timestamps).

    A reading is recognised by its exact time (``@timestamp``). The rows of the first
    second of each type may hold an earlier report's reading that the spool never held
    (delivered before the outage began).
    """
    reports = [e for e in sorted(spooled, key=lambda e: e.seq) if e.kind == "metrics"]
    assert reports, f"{node_id}: no metric report was seen in the spool"
    kinds = sorted({key[0] for e in reports for key, _ in e.metrics()})
    table = {kind: list(rows(kind)) for kind in kinds}
    stored: dict[MetricKey, tuple[int, float]] = {
        (kind, ts): (row_id, exact) for kind, found in table.items() for row_id, ts, exact in found
    }
    arrived: list[Spooled] = []
    duplicates: list[Spooled] = []
    lost: list[Spooled] = []
    for report in reports:
        readings = report.metrics()
        if any(key in stored and stored[key][1] == exact for key, exact in readings):
            arrived.append(report)
        elif all(key in stored for key, _ in readings):
            duplicates.append(report)
        else:
            lost.append(report)
    assert arrived, f"{node_id}: none of {len(reports)} spooled reports arrived"
    assert not lost or lost[-1].seq < arrived[0].seq, (
        f"{node_id}: lost reports {[e.seq for e in lost]} are not all older than the"
        f" arrived {[e.seq for e in arrived]}"
    )
    first = produced_metrics(arrived)
    for report in arrived:
        missing = [key for key, _ in report.metrics() if key not in stored]
        assert not missing, f"{node_id}: report {report.seq} arrived in part, without {missing}"
    for kind in sorted({kind for kind, _ in first}):
        times = sorted(ts for k, ts in first if k == kind)
        window = {ts for _, ts, _ in table[kind] if times[0] <= ts <= times[-1]}
        assert window == set(times), (
            f"{node_id} {kind}: stored {sorted(window)} but the daemon made {times}"
        )
        for ts in times[1:]:  # the first second may hold an earlier, unseen reading
            assert stored[(kind, ts)][1] == first[(kind, ts)], (
                f"{node_id} {kind} at {ts}: stored reading {stored[(kind, ts)][1]}, but the"
                f" first made and delivered is {first[(kind, ts)]}"
            )
        ids = [row_id for row_id, _, _ in sorted(table[kind], key=lambda r: r[1])]
        assert ids == sorted(ids), f"{node_id} {kind}: rows arrived out of order: {table[kind]}"
    return Delivery(arrived, duplicates, lost)
