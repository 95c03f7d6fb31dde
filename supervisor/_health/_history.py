"""Bounded per-agent resource history (pure): what GetAgentMetrics(agent, seconds) reads.

Samples (time, CPU percent of the process tree, resident bytes) are kept in a ring of at
most ``max_samples`` entries no older than ``max_age_s``; a window query is two binary
searches. Time is always an argument.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
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


def _at(sample: ResourceSample) -> float:
    return sample.at


class ResourceHistory:
    """Recent resource samples in bounded memory.

    A sample is kept while it is among the last ``max_samples`` and younger than
    ``max_age_s`` relative to the newest one (about 100 bytes each).

    Args:
        max_age_s: Samples at or before ``newest - max_age_s`` are dropped.
        max_samples: At most this many samples are kept.

    Raises:
        ValueError: A non-positive age or count.
    """

    def __init__(self, max_age_s: float = 3600.0, max_samples: int = 720) -> None:
        if not (math.isfinite(max_age_s) and max_age_s > 0) or max_samples < 1:
            raise ValueError(
                f"need max_age_s > 0 and max_samples >= 1, got {max_age_s!r}, {max_samples!r}"
            )
        self.max_age_s = max_age_s
        self._samples: deque[ResourceSample] = deque(maxlen=max_samples)

    def __len__(self) -> int:
        return len(self._samples)

    def __iter__(self) -> Iterator[ResourceSample]:
        return iter(self._samples)

    def latest(self) -> ResourceSample | None:
        """The newest sample, if any."""
        return self._samples[-1] if self._samples else None

    def record(
        self, now: float, cpu_percent: float, rss_bytes: int, *extra: int
    ) -> ResourceSample:
        """Add a sample taken at ``now``, dropping what is now too old.

        ``extra`` are the further fields of :class:`ResourceSample`, in order.

        Raises:
            ValueError: ``now`` is earlier than the newest sample.
        """
        samples = self._samples
        if samples and now < samples[-1].at:
            raise ValueError(f"sample at {now!r} is older than the newest, {samples[-1].at!r}")
        sample = ResourceSample(now, cpu_percent, rss_bytes, *extra)
        samples.append(sample)
        cutoff = now - self.max_age_s
        while samples[0].at <= cutoff:
            samples.popleft()
        return sample

    def between(self, start: float, end: float) -> list[ResourceSample]:
        """The samples taken after ``start`` and at or before ``end``, oldest first.

        The interval is half-open, so adjacent intervals never share a sample.
        """
        lo = bisect.bisect_right(self._samples, start, key=_at)
        hi = bisect.bisect_right(self._samples, end, key=_at)
        return list(itertools.islice(self._samples, lo, max(lo, hi)))

    def window(self, now: float, seconds: float) -> list[ResourceSample]:
        """The samples of the last ``seconds`` before ``now`` (capped at ``max_age_s``).

        Raises:
            ValueError: A negative ``seconds``.
        """
        if not seconds >= 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        return self.between(now - min(seconds, self.max_age_s), now)
