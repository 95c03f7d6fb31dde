"""Which reports the Manager client's spool keeps, and which it lets go. PURE.

Theory of operation
-------------------
Reports that cannot be delivered (the Manager is unreachable) wait in a spool on disk,
oldest first, and are delivered in that order once the Manager is back. The spool must not
fill the disk during a long outage, so it is bounded twice (``manager.spool``):

* ``max_bytes``: the sum of the entries' sizes. When a new entry would pass it, the oldest
  entries are dropped until it fits.
* ``max_age``: an entry older than this (by the wall clock of its creation) is dropped;
  the Manager's own retention and the usefulness of stale host metrics both end there.

One more rule keeps the spool small without losing information: a state sync carries the
*full* list of agents, so a newer one makes every older state sync in the spool useless
(``superseded``, counted apart from ``evicted``). Metric reports are never merged.

:func:`admit` decides, for the entries on disk and one entry about to be added, what to
delete; :func:`expire` does the same without a new entry (at start-up and before each
delivery). Both return a :class:`SpoolDecision` and do nothing themselves: the spool's IO
layer (:mod:`transport.daemon._spool`) carries it out. Time is an argument (wall-clock
seconds, since entries must age across daemon restarts).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["EntryInfo", "EntryKind", "SpoolDecision", "SpoolLimits", "admit", "expire"]


class EntryKind(enum.Enum):
    """What a spool entry holds (the value is its file-name suffix)."""

    METRICS = "metrics"
    """A ReportMetricsRequest."""
    STATES = "states"
    """A SyncAgentStatesRequest (the full list: a newer one supersedes an older one)."""


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """What the policy knows of one spool entry.

    Attributes:
        seq: Its sequence number; entries are ordered by it, oldest first.
        created: When it was made (wall-clock seconds).
        size: Its size on disk in bytes (>= 0).
        kind: What it holds.
    """

    seq: int
    created: float
    size: int
    kind: EntryKind


@dataclass(frozen=True, slots=True)
class SpoolLimits:
    """The spool's bounds (``manager.spool``).

    Attributes:
        max_bytes: The most bytes the entries may hold together (> 0).
        max_age_s: The oldest an entry may get, in seconds (> 0).

    Raises:
        ValueError: A bound that is not positive and finite.
    """

    max_bytes: int
    max_age_s: float

    def __post_init__(self) -> None:
        if isinstance(self.max_bytes, bool) or not isinstance(self.max_bytes, int):
            raise ValueError(f"SpoolLimits.max_bytes: expected an integer; got {self.max_bytes!r}")
        if self.max_bytes <= 0:
            raise ValueError(f"SpoolLimits.max_bytes: expected > 0; got {self.max_bytes!r}")
        if not (math.isfinite(self.max_age_s) and self.max_age_s > 0):
            raise ValueError(f"SpoolLimits.max_age_s: expected > 0; got {self.max_age_s!r}")


@dataclass(frozen=True, slots=True)
class SpoolDecision:
    """What to delete, and whether the new entry goes in.

    Attributes:
        expired: Entries older than ``max_age`` (seq numbers, oldest first).
        superseded: State syncs replaced by a newer one.
        evicted: The oldest entries dropped to make room under ``max_bytes``.
        accept: Whether the new entry is written.
        kept: The entries that remain, oldest first (without the new one).
    """

    expired: tuple[int, ...] = ()
    superseded: tuple[int, ...] = ()
    evicted: tuple[int, ...] = ()
    accept: bool = True
    kept: tuple[EntryInfo, ...] = ()

    @property
    def delete(self) -> tuple[int, ...]:
        """Every entry to delete, expired, superseded and evicted alike."""
        return self.expired + self.superseded + self.evicted

    @property
    def dropped(self) -> int:
        """How many entries are lost (expired or evicted; a superseded one is not lost)."""
        return len(self.expired) + len(self.evicted)


def expire(entries: Sequence[EntryInfo], limits: SpoolLimits, *, now: float) -> SpoolDecision:
    """The entries too old to keep.

    Args:
        entries: The spool's entries, oldest first.
        limits: The bounds.
        now: The wall clock (seconds).

    Returns:
        A decision that deletes only expired entries (``accept`` means nothing here).
    """
    oldest = now - limits.max_age_s
    expired = tuple(e.seq for e in entries if e.created < oldest)
    kept = tuple(e for e in entries if e.created >= oldest)
    return SpoolDecision(expired=expired, kept=kept)


def admit(
    entries: Sequence[EntryInfo], incoming: EntryInfo, limits: SpoolLimits, *, now: float
) -> SpoolDecision:
    """Decide what to delete so that ``incoming`` fits, and whether it goes in at all.

    ``incoming`` takes its place among the entries by ``seq`` (usually the newest, but a
    report that waited in memory may be older than entries spooled meanwhile). Then, in
    order: expired entries go; every state sync but the newest is superseded; the oldest
    entries are evicted until the rest fit under ``max_bytes``. ``incoming`` itself may be
    among the deleted (an old report in a full spool, an entry larger than ``max_bytes``
    by itself, a state sync older than one already spooled): then it is not accepted.

    Args:
        entries: The spool's entries, oldest first.
        incoming: The entry to add (its ``seq`` is not among ``entries``').
        limits: The bounds.
        now: The wall clock (seconds).

    Returns:
        The decision (its seq tuples may include ``incoming.seq``). Afterwards the kept
        entries, plus the new one if accepted, hold at most ``max_bytes`` and none is
        older than ``max_age``; at most one of them is a state sync; their order is the
        order of their ``seq``.
    """
    every = sorted([*entries, incoming], key=lambda e: e.seq)
    aged = expire(every, limits, now=now)
    kept = list(aged.kept)
    refused: tuple[int, ...] = ()
    if incoming.size > limits.max_bytes and incoming in kept:  # it can never fit
        kept.remove(incoming)
        refused = (incoming.seq,)
    states = [e.seq for e in kept if e.kind is EntryKind.STATES]
    superseded = tuple(states[:-1])
    kept = [e for e in kept if e.seq not in superseded]
    total = sum(e.size for e in kept)
    cut = 0
    while total > limits.max_bytes:
        total -= kept[cut].size
        cut += 1
    evicted = tuple(sorted(refused + tuple(e.seq for e in kept[:cut])))
    kept = kept[cut:]
    accept = any(e.seq == incoming.seq for e in kept)
    remaining = tuple(e for e in kept if e.seq != incoming.seq)
    return SpoolDecision(aged.expired, superseded, evicted, accept, remaining)
