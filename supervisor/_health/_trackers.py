"""Health-check trackers: one signal each, as pure state machines (sans-IO).

Theory of operation
-------------------
The IO shell gathers facts (a heartbeat line arrived, ``/proc`` gave the process tree's
CPU and memory, an HTTP probe answered or failed) and feeds them, each with Trio's
monotonic ``now``, into the small trackers below. They decide; they never read a clock, a
socket or ``/proc``, so every timing rule is testable with plain floats.

* :class:`ThresholdTracker`: a value (CPU percent, RSS bytes) over its threshold on
  every sample for ``duration_s`` is unhealthy. It is healthy again only once a sample
  is under ``threshold * clear_fraction``: between that line and the threshold the
  verdict keeps whatever it was (hysteresis), so a value hovering at the line does not
  flap. A dip under the threshold *before* the duration is reached restarts the count,
  because the rule is "continuously over". A threshold of 0 disables the check.
* :class:`HeartbeatTracker`: silence for ``timeout_s`` since the last beat (or since the
  process started, when the check is armed from the start) is unhealthy. An agent that
  never beats is not judged by default: the first beat arms the check.
  :meth:`HeartbeatTracker.next_deadline` tells the shell when that can next happen, so it
  sleeps exactly that long instead of polling.
* :class:`FailureCounter`: N probe failures in a row are unhealthy; one success heals.

:class:`~supervisor._health._agent_health.AgentHealth` owns one of each per agent and
decides when to ask for recovery.

Messages name the check, the value and how long the condition has lasted, e.g.
``memory: rss 612.3 MiB over 500.0 MiB since 61.0s ago``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_PROBE_FAILURES",
    "CheckState",
    "FailureCounter",
    "HeartbeatTracker",
    "ThresholdTracker",
    "Verdict",
    "format_age",
    "format_bytes",
    "format_percent",
]

#: Probe failures in a row that make an HTTP or TCP check unhealthy.
DEFAULT_PROBE_FAILURES = 3


class CheckState(enum.Enum):
    """Where one check stands."""

    DISABLED = "disabled"  # not configured
    UNKNOWN = "unknown"  # no observation yet (or no process to observe)
    HEALTHY = "healthy"
    PENDING = "pending"  # something is wrong, but not for long enough to count
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One check's state at one moment.

    Attributes:
        state: Where the check stands.
        detail: Human-readable text naming the check, e.g. ``cpu: 12.0%``.
        since: When the current bad condition (or the running process) began, else None.
    """

    state: CheckState
    detail: str
    since: float | None = None

    @property
    def unhealthy(self) -> bool:
        """Whether the check asks for recovery."""
        return self.state is CheckState.UNHEALTHY


def format_bytes(n: float) -> str:
    """Format a byte count with binary units, e.g. ``612.3 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_percent(v: float) -> str:
    """A percentage for messages, e.g. ``87.5%``."""
    return f"{v:.1f}%"


def _number(v: float) -> str:
    return f"{v:g}"


def format_age(now: float, since: float) -> str:
    """Seconds from ``since`` to ``now`` for messages, e.g. ``61.0s`` (never negative)."""
    return f"{max(0.0, now - since):.1f}s"


def _check_duration(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


class ThresholdTracker:
    """A value that may stay over its threshold only briefly, with hysteresis.

    Args:
        threshold: The limit; a sample strictly above it is "over". 0 disables.
        duration_s: How long samples must stay over before the verdict is unhealthy.
        clear_fraction: An unhealthy verdict clears once a sample is strictly below
            ``threshold * clear_fraction`` (in ``(0, 1]``).
        label: The check's name in messages.
        quantity: Words before the value in messages, e.g. ``rss``.
        fmt: Formats a value or the threshold for messages.

    Raises:
        ValueError: A negative or non-finite threshold or duration, or a clear fraction
            outside ``(0, 1]``.
    """

    __slots__ = (
        "_fmt",
        "_prefix",
        "clear_fraction",
        "duration_s",
        "label",
        "over_since",
        "state",
        "threshold",
        "value",
    )

    def __init__(
        self,
        threshold: float,
        duration_s: float,
        *,
        clear_fraction: float = 0.9,
        label: str = "value",
        quantity: str = "",
        fmt: Callable[[float], str] = _number,
    ) -> None:
        _check_duration("threshold", threshold)
        _check_duration("duration_s", duration_s)
        if not 0 < clear_fraction <= 1:
            raise ValueError(f"clear_fraction must be in (0, 1], got {clear_fraction!r}")
        self.threshold = threshold
        self.duration_s = duration_s
        self.clear_fraction = clear_fraction
        self.label = label
        self._prefix = f"{label}: {quantity} " if quantity else f"{label}: "
        self._fmt = fmt
        self.value: float | None = None
        self.over_since: float | None = None
        self.state = CheckState.UNKNOWN
        self.reset()

    @property
    def enabled(self) -> bool:
        """Whether the check is configured (threshold above 0)."""
        return self.threshold > 0

    @property
    def clear_line(self) -> float:
        """An unhealthy verdict clears only below this value."""
        return self.threshold * self.clear_fraction

    def reset(self) -> None:
        """Forget every sample (a new process starts, or none runs)."""
        self.value = None
        self.over_since = None
        self.state = CheckState.UNKNOWN if self.enabled else CheckState.DISABLED

    def observe(self, now: float, value: float) -> Verdict:
        """Take one sample and return the verdict after it.

        Args:
            now: Monotonic time of the sample; never earlier than the previous one.
            value: The measured value.

        Returns:
            The verdict, as :meth:`verdict` would give it at ``now``.
        """
        self.update(now, value)
        return self.verdict(now)

    def update(self, now: float, value: float) -> CheckState:
        """:meth:`observe` without rendering the message (the monitor's hot path)."""
        if not self.enabled:
            return self.state
        self.value = value
        if value > self.threshold:
            if self.over_since is None:
                self.over_since = now
            if self.state is not CheckState.UNHEALTHY:
                long_enough = now - self.over_since >= self.duration_s
                self.state = CheckState.UNHEALTHY if long_enough else CheckState.PENDING
        elif self.state is CheckState.UNHEALTHY and not value < self.clear_line:
            pass  # in the hysteresis band: an unhealthy verdict holds
        else:
            self.over_since = None
            self.state = CheckState.HEALTHY
        return self.state

    def verdict(self, now: float) -> Verdict:
        """The current verdict, with its message rendered for ``now``."""
        state, fmt = self.state, self._fmt
        if state is CheckState.DISABLED:
            return Verdict(state, f"{self.label}: disabled")
        if self.value is None:
            return Verdict(state, f"{self.label}: no sample yet")
        value = f"{self._prefix}{fmt(self.value)}"
        if self.over_since is None:
            return Verdict(state, value)
        limit, age = fmt(self.threshold), format_age(now, self.over_since)
        if state is CheckState.PENDING:
            detail = f"{value} over {limit} for {age} (unhealthy after {self.duration_s:g}s)"
        elif self.value > self.threshold:
            detail = f"{value} over {limit} since {age} ago"
        else:
            clear = fmt(self.clear_line)
            detail = f"{value}, over {limit} since {age} ago, clears below {clear}"
        return Verdict(state, detail, self.over_since)


class HeartbeatTracker:
    """Silence from an agent that should send heartbeats.

    Args:
        timeout_s: Silence this long (since the last beat, or since the start) is
            unhealthy; 0 disables.
        label: The check's name in messages.

    Raises:
        ValueError: A negative or non-finite timeout.
    """

    __slots__ = (
        "_reported",
        "armed",
        "label",
        "last_beat",
        "started_at",
        "timeout_s",
    )

    def __init__(self, timeout_s: float, *, label: str = "heartbeat") -> None:
        _check_duration("timeout_s", timeout_s)
        self.timeout_s = timeout_s
        self.label = label
        self.started_at: float | None = None
        self.last_beat: float | None = None
        self.armed = False
        self._reported = False

    @property
    def enabled(self) -> bool:
        """Whether the check is configured (timeout above 0)."""
        return self.timeout_s > 0

    @property
    def silent_since(self) -> float | None:
        """The last beat, or the start when armed and none came yet; else None."""
        if self.last_beat is not None:
            return self.last_beat
        return self.started_at if self.armed else None

    def started(self, now: float, *, armed: bool = True) -> None:
        """A process started.

        Args:
            now: When it started.
            armed: It has ``timeout_s`` to send its first beat. When False, the check
                waits for a first beat before it can time out.
        """
        self.started_at, self.last_beat, self._reported = now, None, False
        self.armed = armed

    def stopped(self) -> None:
        """The process is gone: nothing is expected until :meth:`started`."""
        self.started_at, self.last_beat, self._reported = None, None, False
        self.armed = False

    def beat(self, now: float) -> None:
        """A heartbeat arrived (it arms the check). Ignored while no process is started."""
        if self.started_at is None:
            return
        self.last_beat = now if self.last_beat is None else max(self.last_beat, now)
        self.armed, self._reported = True, False

    def set_timeout(self, timeout_s: float) -> None:
        """Change the timeout for the running process (sd_notify ``WATCHDOG_USEC=``).

        Raises:
            ValueError: A negative or non-finite timeout.
        """
        _check_duration("timeout_s", timeout_s)
        self.timeout_s, self._reported = timeout_s, False

    def next_deadline(self) -> float | None:
        """When :meth:`check` will next turn unhealthy without a beat, else None.

        None when disabled, not started, or once :meth:`check` has reported the current
        silence (the next deadline comes with the next beat).
        """
        since = self.silent_since
        if not self.enabled or since is None or self._reported:
            return None
        return since + self.timeout_s

    def overdue(self, now: float) -> bool:
        """Whether the verdict at ``now`` is unhealthy (cheap: no message is built)."""
        since = self.silent_since
        return self.enabled and since is not None and now >= since + self.timeout_s

    def verdict(self, now: float) -> Verdict:
        """The verdict at ``now``, without marking a timeout as reported."""
        if not self.enabled:
            return Verdict(CheckState.DISABLED, f"{self.label}: disabled")
        since = self.silent_since
        if self.started_at is None:
            return Verdict(CheckState.UNKNOWN, f"{self.label}: no process")
        if since is None:
            return Verdict(CheckState.UNKNOWN, f"{self.label}: waiting for the first beat")
        quiet = format_age(now, since)
        # The same sum as next_deadline(), so waking exactly at the deadline sees it.
        if now >= since + self.timeout_s:
            what = (
                f"none since start {quiet} ago" if self.last_beat is None else f"none for {quiet}"
            )
            detail = f"{self.label}: {what} (timeout {self.timeout_s:g}s)"
            return Verdict(CheckState.UNHEALTHY, detail, since)
        if self.last_beat is None:
            return Verdict(CheckState.HEALTHY, f"{self.label}: none yet, started {quiet} ago")
        return Verdict(CheckState.HEALTHY, f"{self.label}: last {quiet} ago")

    def check(self, now: float) -> Verdict:
        """The verdict at ``now``; a timeout seen here is not reported by the deadline again."""
        verdict = self.verdict(now)
        if verdict.unhealthy:
            self._reported = True
        return verdict


class FailureCounter:
    """Consecutive failures of a probe (HTTP, TCP).

    Args:
        threshold: Failures in a row that make the check unhealthy (at least 1).
        label: The check's name in messages.

    Raises:
        ValueError: A threshold below 1.
    """

    __slots__ = (
        "count",
        "first_failure_at",
        "label",
        "last_error",
        "state",
        "threshold",
    )

    def __init__(self, threshold: int = DEFAULT_PROBE_FAILURES, *, label: str = "probe") -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be at least 1, got {threshold!r}")
        self.threshold = threshold
        self.label = label
        self.count = 0
        self.first_failure_at: float | None = None
        self.last_error: str | None = None  # kept after a success, for display
        self.state = CheckState.UNKNOWN

    def reset(self) -> None:
        """Forget the run of failures (a new process starts); the last error is kept."""
        self.count, self.first_failure_at, self.state = 0, None, CheckState.UNKNOWN

    def record(self, now: float, error: str | None) -> Verdict:
        """Record one probe: ``error`` is None on success, else what went wrong."""
        if error is None:
            self.count, self.first_failure_at, self.state = 0, None, CheckState.HEALTHY
        else:
            self.count += 1
            if self.first_failure_at is None:
                self.first_failure_at = now
            self.last_error = error
            failing = self.count >= self.threshold
            self.state = CheckState.UNHEALTHY if failing else CheckState.PENDING
        return self.verdict(now)

    def verdict(self, now: float) -> Verdict:
        """The current verdict, with its message rendered for ``now``."""
        if self.state is CheckState.UNKNOWN:
            return Verdict(self.state, f"{self.label}: not probed yet")
        if self.first_failure_at is None:
            return Verdict(self.state, f"{self.label}: ok")
        runs = f"{self.count} failure{'s' if self.count != 1 else ''} in a row"
        if self.state is CheckState.PENDING:
            text = f"{runs} (unhealthy after {self.threshold})"
        else:
            text = f"{runs} since {format_age(now, self.first_failure_at)} ago"
        detail = f"{self.label}: {text}, last: {self.last_error}"
        return Verdict(self.state, detail, self.first_failure_at)
