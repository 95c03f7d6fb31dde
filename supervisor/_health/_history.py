"""Bounded per-agent resource history (pure): what GetAgentMetrics(agent, seconds) reads.

Samples (time, CPU percent of the process tree, resident bytes, and four counters) are
kept, at most ``max_samples`` of them no older than ``max_age_s``, in three flat arrays
(times and CPU as doubles, the integers as 64-bit numbers): 56 bytes a sample, where a
named tuple of boxed numbers takes about 270; an hour of samples every 30 s is then
under 7 KB per agent. A window query is two binary searches. Time is always an argument.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["ResourceHistory", "ResourceSample"]


class ResourceSample(NamedTuple):
    """One measurement of an agent's whole process tree.

    Attributes:
        at: When (Trio time here; wall-clock seconds from ``Supervisor.metrics``).
        cpu_percent: CPU since the previous sample, percent of one core.
        rss_bytes: Resident memory.
        memory_vms: Virtual memory, bytes.
        disk_read_bytes: Bytes read from storage so far (a counter).
        disk_write_bytes: Bytes written to storage so far (a counter).
        open_files: Open file descriptors.
    """

    at: float
    cpu_percent: float
    rss_bytes: int
    memory_vms: int = 0
    disk_read_bytes: int = 0
    disk_write_bytes: int = 0
    open_files: int = 0


#: The integer fields of a sample, kept side by side in one array.
_INTS = len(ResourceSample._fields) - 2


class ResourceHistory:
    """Recent resource samples in bounded memory.

    A sample is kept while it is among the last ``max_samples`` and younger than
    ``max_age_s`` relative to the newest one (56 bytes each).

    Args:
        max_age_s: Samples at or before ``newest - max_age_s`` are dropped.
        max_samples: At most this many samples are kept.

    Raises:
        ValueError: A non-positive age or count.
    """

    __slots__ = ("_at", "_cpu", "_ints", "max_age_s", "max_samples")

    def __init__(self, max_age_s: float = 3600.0, max_samples: int = 720) -> None:
        if not (math.isfinite(max_age_s) and max_age_s > 0) or max_samples < 1:
            raise ValueError(
                f"need max_age_s > 0 and max_samples >= 1, got {max_age_s!r}, {max_samples!r}"
            )
        self.max_age_s = max_age_s
        self.max_samples = max_samples
        self._at = array("d")
        self._cpu = array("d")
        self._ints = array("q")  # _INTS per sample

    def __len__(self) -> int:
        return len(self._at)

    def __iter__(self) -> Iterator[ResourceSample]:
        return iter(self._slice(0, len(self._at)))

    def _sample(self, index: int) -> ResourceSample:
        ints = self._ints[index * _INTS : (index + 1) * _INTS]
        return ResourceSample(self._at[index], self._cpu[index], *ints)

    def _slice(self, lo: int, hi: int) -> list[ResourceSample]:
        return [self._sample(index) for index in range(lo, hi)]

    def latest(self) -> ResourceSample | None:
        """The newest sample, if any."""
        return self._sample(len(self._at) - 1) if self._at else None

    def record(self, now: float, cpu_percent: float, rss_bytes: int, *extra: int) -> ResourceSample:
        """Add a sample taken at ``now``, dropping what is now too old.

        ``extra`` are the further fields of :class:`ResourceSample`, in order.

        Raises:
            ValueError: ``now`` is earlier than the newest sample.
        """
        times = self._at
        if times and now < times[-1]:
            raise ValueError(f"sample at {now!r} is older than the newest, {times[-1]!r}")
        sample = ResourceSample(now, cpu_percent, rss_bytes, *extra)
        times.append(now)
        self._cpu.append(cpu_percent)
        self._ints.extend(sample[2:])
        # Too many, or too old: the oldest go (a few hundred bytes moved, at most).
        drop = max(len(times) - self.max_samples, bisect.bisect_right(times, now - self.max_age_s))
        if drop > 0:
            del times[:drop]
            del self._cpu[:drop]
            del self._ints[: drop * _INTS]
        return self._sample(len(times) - 1)

    def between(self, start: float, end: float) -> list[ResourceSample]:
        """The samples taken after ``start`` and at or before ``end``, oldest first.

        The interval is half-open, so adjacent intervals never share a sample.
        """
        lo = bisect.bisect_right(self._at, start)
        hi = bisect.bisect_right(self._at, end)
        return self._slice(lo, max(lo, hi))

    def window(self, now: float, seconds: float) -> list[ResourceSample]:
        """The samples of the last ``seconds`` before ``now`` (capped at ``max_age_s``).

        Raises:
            ValueError: A negative ``seconds``.
        """
        if not seconds >= 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        return self.between(now - min(seconds, self.max_age_s), now)
