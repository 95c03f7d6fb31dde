"""Health-check decisions for supervised agents, as pure state machines (sans-IO).

Theory of operation
-------------------
The IO shell gathers facts (a heartbeat line arrived, psutil measured the process tree,
an HTTP probe answered or failed) and feeds them, each with Trio's monotonic ``now``,
into the small trackers below. They decide; they never read a clock, a socket or
``/proc``, so every timing rule is testable with plain floats.

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
* :class:`ResourceHistory`: the last samples in bounded memory, for the seed's
  ``GetAgentMetrics(agent_id, duration_seconds)``.
* :class:`AgentHealth` owns one of each per agent and turns them into a verdict. Its
  :meth:`AgentHealth.check` returns a recovery reason exactly once per unhealthy
  *episode* (from the moment some check turns unhealthy until every check is fine
  again or a new process starts); the shell hands that reason to
  :meth:`AgentMachine.unhealthy <supervisor._machine.AgentMachine.unhealthy>`, whose
  restart policy, backoff and retry budget decide what happens. A process exit is
  already the machine's business, so the ``process`` check is shown but never asks
  for recovery.

Messages name the check, the value and how long the condition has lasted, e.g.
``memory: rss 612.3 MiB over 500.0 MiB since 61.0s ago``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from ._history import ResourceHistory, ResourceSample
from ._spec import HealthCheckSpec

__all__ = [
    "AgentHealth",
    "Check",
    "CheckState",
    "FailureCounter",
    "HealthSnapshot",
    "HeartbeatTracker",
    "ResourceAlert",
    "ResourceHistory",
    "ResourceSample",
    "ThresholdTracker",
    "Verdict",
    "format_bytes",
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


class Check(enum.Enum):
    """The checks :class:`AgentHealth` aggregates, in display order."""

    PROCESS = "process"
    HEARTBEAT = "heartbeat"
    CPU = "cpu"
    MEMORY = "memory"
    HTTP = "http"
    TCP = "tcp"


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


def _percent(v: float) -> str:
    return f"{v:.1f}%"


def _number(v: float) -> str:
    return f"{v:g}"


def _ago(now: float, since: float) -> str:
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
        limit, age = fmt(self.threshold), _ago(now, self.over_since)
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
        quiet = _ago(now, since)
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
            text = f"{runs} since {_ago(now, self.first_failure_at)} ago"
        detail = f"{self.label}: {text}, last: {self.last_error}"
        return Verdict(self.state, detail, self.first_failure_at)


@dataclass(frozen=True, slots=True)
class ResourceAlert:
    """The seed's ResourceAlert: a resource threshold episode has begun.

    Attributes:
        agent_id: The agent.
        type: ``cpu`` (percent of the process tree) or ``memory`` (RSS bytes).
        value: The sample that made the episode count.
        threshold: The configured threshold.
        at: Monotonic time of that sample (the shell converts to wall clock if needed).
        since: Monotonic time the value first went over the threshold.
    """

    agent_id: str
    type: Literal["cpu", "memory"]
    value: float
    threshold: float
    at: float
    since: float

    def describe(self) -> str:
        """A one-line message, e.g. ``agent web: cpu 87.5% over 50.0% for 60.0s``."""
        fmt = _percent if self.type == "cpu" else format_bytes
        return (
            f"agent {self.agent_id}: {self.type} {fmt(self.value)} over {fmt(self.threshold)}"
            f" for {_ago(self.at, self.since)}"
        )


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """An agent's health for the status snapshot.

    Attributes:
        healthy: False when any check is unhealthy (a process that is not running
            included), None before the first start or after a deliberate stop.
        checks: Every check's verdict, disabled ones included, in :class:`Check` order.
        last_error: The latest unhealthy checks' messages, joined by ``; ``.
        status_text: The agent's own status line (sd_notify ``STATUS=``, heartbeat status).
    """

    healthy: bool | None
    checks: Mapping[Check, Verdict]
    last_error: str | None
    status_text: str | None

    def summary(self) -> str:
        """One line for status output, e.g. ``unhealthy: heartbeat: none for 95.0s (...)``."""
        if self.healthy is None:
            text = "health unknown"
        elif self.healthy:
            text = "healthy"
        else:
            text = "unhealthy: " + "; ".join(v.detail for v in self.checks.values() if v.unhealthy)
        return f"{text} [{self.status_text}]" if self.status_text else text


class AgentHealth:
    """Every health check of one agent, and when to ask for recovery.

    Args:
        agent_id: The agent, for alerts.
        spec: The agent's health-check settings.
        clear_fraction: Hysteresis of the CPU and memory thresholds.
        history: Where samples go (default: one hour, at most 720 samples).
    """

    def __init__(
        self,
        agent_id: str,
        spec: HealthCheckSpec,
        *,
        clear_fraction: float = 0.9,
        history: ResourceHistory | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.history = history if history is not None else ResourceHistory()
        self.last_error: str | None = None
        self.status_text: str | None = None
        self._clear = clear_fraction
        self._running = False
        self._episode = False
        self._stopping = False
        self._trigger: Verdict | None = None
        self._process = Verdict(CheckState.UNKNOWN, "process: not started")
        self._build(spec)

    def _build(self, spec: HealthCheckSpec) -> None:
        self.spec = spec
        duration, clear = spec.threshold_duration_s, self._clear
        self.heartbeat_tracker = HeartbeatTracker(spec.heartbeat_timeout_s)
        self.cpu = ThresholdTracker(
            spec.cpu_threshold, duration, clear_fraction=clear, label="cpu", fmt=_percent
        )
        self.memory = ThresholdTracker(
            float(spec.memory_threshold),
            duration,
            clear_fraction=clear,
            label="memory",
            quantity="rss",
            fmt=format_bytes,
        )
        http, tcp = spec.http_endpoint is not None, spec.tcp_endpoint is not None
        self.http = FailureCounter(spec.failures, label="http") if http else None
        self.tcp = FailureCounter(spec.failures, label="tcp") if tcp else None

    def reconfigure(self, now: float, spec: HealthCheckSpec) -> None:
        """Apply changed settings to a live agent; every check starts afresh at ``now``.

        A heartbeat check already armed by the agent's beats stays armed.
        """
        armed = self.heartbeat_tracker.armed
        self._build(spec)
        if self._running:
            self.heartbeat_tracker.started(now, armed=armed or spec.heartbeat_required)

    # -- facts ------------------------------------------------------------------

    def process_started(self, now: float) -> None:
        """A new process runs: all checks start afresh and a new episode may begin."""
        self._running, self._episode, self._stopping = True, False, False
        self._process = Verdict(CheckState.HEALTHY, "process: running", now)
        self._forget()
        self.heartbeat_tracker.started(now, armed=self.spec.heartbeat_required)

    def process_exited(self, now: float, reason: str = "exited") -> None:
        """The process ended unexpectedly (the machine decides about restarting)."""
        self._running = False
        self._process = Verdict(CheckState.UNHEALTHY, f"process: {reason}", now)
        self._forget()

    def reset(self) -> None:
        """The agent was stopped on purpose: health is unknown, not bad."""
        self._running = False
        self._process = Verdict(CheckState.UNKNOWN, "process: not running")
        self._forget()

    def _forget(self) -> None:
        self._trigger = None
        self.heartbeat_tracker.stopped()
        self.cpu.reset()
        self.memory.reset()
        for counter in (self.http, self.tcp):
            if counter is not None:
                counter.reset()

    def heartbeat(self, now: float) -> None:
        """A heartbeat (or sd_notify ``WATCHDOG=1``) arrived from the agent."""
        if self._running:
            self.heartbeat_tracker.beat(now)

    def stopping(self, now: float) -> None:
        """The agent said it is shutting down (sd_notify ``STOPPING=1``).

        No recovery is asked for from now on: the exit that follows is the restart
        policy's business, as any exit is. Ignored while no process runs.
        """
        if self._running:
            self._stopping = True
            self._process = Verdict(CheckState.HEALTHY, "process: stopping (STOPPING=1)", now)

    def trigger(self, now: float) -> None:
        """The agent asked to be treated as hung (sd_notify ``WATCHDOG=trigger``).

        The heartbeat check is unhealthy from now until the next process starts.
        """
        if self._running:
            detail = f"{self.heartbeat_tracker.label}: the agent triggered its watchdog"
            self._trigger = Verdict(CheckState.UNHEALTHY, detail, now)

    @property
    def in_episode(self) -> bool:
        """Whether recovery was asked for and the checks have not all recovered since."""
        return self._episode

    def set_status_text(self, text: str | None) -> None:
        """Keep the agent's own status line (sd_notify ``STATUS=``)."""
        self.status_text = text

    def resources(self, now: float, cpu_percent: float, rss_bytes: int) -> list[ResourceAlert]:
        """Take one resource sample of the process tree; ignored while none runs.

        Returns:
            An alert for each threshold that became unhealthy with this sample.
        """
        if not self._running:
            return []
        self.history.record(now, cpu_percent, rss_bytes)
        alerts: list[ResourceAlert] = []
        kinds: tuple[tuple[Literal["cpu", "memory"], ThresholdTracker, float], ...] = (
            ("cpu", self.cpu, cpu_percent),
            ("memory", self.memory, float(rss_bytes)),
        )
        for kind, tracker, value in kinds:
            before = tracker.state
            state = tracker.update(now, value)
            if state is CheckState.UNHEALTHY and before is not CheckState.UNHEALTHY:
                since = tracker.over_since if tracker.over_since is not None else now
                alerts.append(
                    ResourceAlert(self.agent_id, kind, value, tracker.threshold, now, since)
                )
        return alerts

    def probe(self, now: float, check: Check, error: str | None) -> None:
        """Record an HTTP or TCP probe: ``error`` is None on success.

        Ignored while no process runs or when that check is not configured (a reload
        may disable it while a probe is in flight).

        Raises:
            ValueError: ``check`` is not :attr:`Check.HTTP` or :attr:`Check.TCP`.
        """
        if check not in (Check.HTTP, Check.TCP):
            raise ValueError(f"{check.value} is not a probe check")
        counter = self.http if check is Check.HTTP else self.tcp
        if counter is not None and self._running:
            counter.record(now, error)

    # -- decisions --------------------------------------------------------------

    def _failing(self, now: float) -> list[str]:
        """The messages of the unhealthy checks, the process excepted.

        Called after every fact, so only the failing checks' messages are rendered.
        """
        bad = []
        hb = self.heartbeat_tracker
        if self._trigger is not None:
            bad.append(self._trigger.detail)
        elif hb.overdue(now):
            bad.append(hb.check(now).detail)  # marks the timeout as reported
        for tracker in (self.cpu, self.memory, self.http, self.tcp):
            if tracker is not None and tracker.state is CheckState.UNHEALTHY:
                bad.append(tracker.verdict(now).detail)
        return bad

    def _verdicts(self, now: float) -> dict[Check, Verdict]:
        hb = self.heartbeat_tracker
        verdicts = {
            Check.PROCESS: self._process,
            Check.HEARTBEAT: self._trigger or hb.verdict(now),
            Check.CPU: self.cpu.verdict(now),
            Check.MEMORY: self.memory.verdict(now),
        }
        for check, counter in ((Check.HTTP, self.http), (Check.TCP, self.tcp)):
            off = Verdict(CheckState.DISABLED, f"{check.value}: disabled")
            verdicts[check] = counter.verdict(now) if counter is not None else off
        return verdicts

    def check(self, now: float) -> str | None:
        """Evaluate every check at ``now``; call after feeding facts and at deadlines.

        Returns:
            The reason to pass to ``AgentMachine.unhealthy`` when an unhealthy episode
            begins; None otherwise, including for the rest of the same episode.
        """
        bad = self._failing(now)
        if not bad:
            self._episode = False
            return None
        self.last_error = "; ".join(bad)
        if self._episode or not self._running or self._stopping:
            return None
        self._episode = True
        return self.last_error

    def next_deadline(self) -> float | None:
        """When :meth:`check` must run even if no fact arrives (a heartbeat timeout)."""
        if not self._running or self._stopping:
            return None
        return self.heartbeat_tracker.next_deadline()

    def snapshot(self, now: float) -> HealthSnapshot:
        """The health part of the status snapshot, rendered for ``now``."""
        verdicts = self._verdicts(now)
        healthy: bool | None
        if any(v.unhealthy for v in verdicts.values()):
            healthy = False
        elif self._process.state is CheckState.UNKNOWN:
            healthy = None
        else:
            healthy = True
        return HealthSnapshot(healthy, verdicts, self.last_error, self.status_text)
