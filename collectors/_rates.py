"""Rates from cumulative counters, and CPU percentages from two samples. Pure code.

Theory of operation
-------------------
The OS reports cumulative counters: bytes sent since boot, CPU seconds spent idle since
boot. A rate is the difference of two readings divided by the time between them, so the
whole module is arithmetic on (previous, current) pairs. Nothing here reads a clock: the
caller passes ``now`` (Trio's monotonic time) with each reading.

Counters misbehave in two ways, and neither may produce a negative rate:

* **Reset.** An interface is re-created, a driver reloads, a container is restored: the
  counter starts again from zero. The current value is then everything counted since the
  reset, which is the best lower bound of the true delta, so the delta is ``current``.
* **Wrap.** A fixed-width counter (32-bit on old NICs) overflows to zero. A decrease is
  taken as a wrap when the counter's width is known and the wrapped delta
  ``current + 2**width - previous`` is under half the range; a larger "wrap" is far likelier
  to be a reset. psutil already unwraps the counters it reports, so our own collectors pass
  no width and every decrease is a reset; plugins reading raw 32-bit counters pass one.

With these rules, deltas add up: the delta across a window equals the sum of the deltas
across any split of it, as long as no reset hides inside (a reset is only visible at the
finer split, which is then the better figure). The same holds for CPU percentages, whose
split windows combine weighted by CPU time. The tests state both as properties.

CPU usage is ``busy / total`` of the time that passed between two samples, where
``busy = total - idle - iowait``. With no previous sample we use the zero reading at boot,
so the first figure is the average since boot rather than the seed's blocking one-second
sample or psutil's meaningless first ``0.0``. Linux can report ``idle`` and ``iowait``
slightly going backwards; per-field deltas are clamped at zero and percentages to 0..100.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from ._sample import CpuTimes

__all__ = ["CpuPercent", "RateTracker", "counter_delta", "counter_rate", "cpu_percent"]


def counter_delta(previous: int, current: int, *, width_bits: int | None = None) -> int:
    """How much a cumulative counter advanced between two readings.

    Args:
        previous: The earlier reading (non-negative).
        current: The later reading (non-negative).
        width_bits: The counter's width if it wraps (e.g. 32), or None if it never does.

    Returns:
        The non-negative increase: ``current - previous`` normally, the wrapped difference
        after a plausible wrap, or ``current`` after a reset.

    Raises:
        ValueError: A reading is negative, or does not fit in ``width_bits``.
    """
    if previous < 0 or current < 0:
        raise ValueError(f"counter readings must be non-negative; got {previous}, {current}")
    if current >= previous:
        return current - previous
    if width_bits is not None:
        modulus = 1 << width_bits
        if previous >= modulus:
            raise ValueError(f"counter reading {previous} does not fit in {width_bits} bits")
        wrapped = current + modulus - previous
        if wrapped < modulus >> 1:
            return wrapped
    return current


def counter_rate(
    previous: int, current: int, elapsed_s: float, *, width_bits: int | None = None
) -> float | None:
    """The per-second rate of a cumulative counter between two readings.

    Args:
        previous: The earlier reading.
        current: The later reading.
        elapsed_s: Seconds between the readings (from a monotonic clock).
        width_bits: The counter's width if it wraps, or None.

    Returns:
        The non-negative rate, or None when no time passed (a rate is then undefined).

    Raises:
        ValueError: As :func:`counter_delta`.
    """
    delta = counter_delta(previous, current, width_bits=width_bits)
    if not elapsed_s > 0:
        return None
    return delta / elapsed_s


class RateTracker:
    """Remembers the last reading of many counters and turns new readings into rates.

    Each *subject* (a network interface, a disk) has named counters. :meth:`update` with a
    subject's new readings returns the per-second rate of each counter since that
    subject's previous update; the first update of a subject returns no rates.

    Args:
        width_bits: The counters' width if they wrap, or None (psutil's counters).
    """

    def __init__(self, *, width_bits: int | None = None) -> None:
        self._width_bits = width_bits
        self._last: dict[str, tuple[float, Mapping[str, int]]] = {}

    def update(self, subject: str, counters: Mapping[str, int], now: float) -> dict[str, float]:
        """Record a subject's readings and compute their rates.

        Args:
            subject: Whose counters these are, e.g. ``"eth0"``.
            counters: Counter names mapped to cumulative readings.
            now: When they were read, in monotonic seconds.

        Returns:
            ``"<counter>_per_s"`` mapped to the rate, for each counter that was also read
            last time; empty on the first reading or if the clock did not advance.
        """
        last = self._last.get(subject)
        self._last[subject] = (now, dict(counters))
        if last is None:
            return {}
        then, previous = last
        rates: dict[str, float] = {}
        for name, value in counters.items():
            if name not in previous:
                continue
            rate = counter_rate(previous[name], value, now - then, width_bits=self._width_bits)
            if rate is not None:
                rates[f"{name}_per_s"] = rate
        return rates

    def retain(self, subjects: set[str] | frozenset[str]) -> None:
        """Forget every subject not in ``subjects`` (an interface that went away).

        Args:
            subjects: The subjects still present.
        """
        for gone in self._last.keys() - subjects:
            del self._last[gone]


@dataclass(frozen=True, slots=True)
class CpuPercent:
    """Where CPU time went between two samples, in percent of all CPU time (0..100)."""

    usage: float
    user: float
    system: float
    idle: float
    iowait: float


_ZERO = CpuTimes()


def cpu_percent(previous: CpuTimes | None, current: CpuTimes) -> CpuPercent:
    """CPU usage between two cumulative samples, with no sleeping.

    Args:
        previous: The earlier sample, or None to measure since boot.
        current: The later sample.

    Returns:
        The percentages. If ``current`` has less total time than ``previous`` (the counters
        were reset), the figures are since boot; if no CPU time passed, all are 0.
    """
    base = previous if previous is not None and current.total >= previous.total else _ZERO
    delta = CpuTimes(
        *(max(0.0, getattr(current, f.name) - getattr(base, f.name)) for f in fields(CpuTimes))
    )
    total = delta.total
    if not total > 0:
        return CpuPercent(usage=0.0, user=0.0, system=0.0, idle=0.0, iowait=0.0)

    def percent(part: float) -> float:
        return min(100.0, max(0.0, 100.0 * part / total))

    return CpuPercent(
        usage=percent(total - delta.idle - delta.iowait),
        user=percent(delta.user),
        system=percent(delta.system),
        idle=percent(delta.idle),
        iowait=percent(delta.iowait),
    )
