"""One agent's health: every check together, and when to ask for recovery (pure, sans-IO).

Theory of operation
-------------------
:class:`AgentHealth` owns one tracker per check (see :mod:`supervisor._health._trackers`:
a heartbeat tracker, CPU and memory threshold trackers, a failure counter per HTTP or TCP
probe) and a :class:`~supervisor._health._history.ResourceHistory` of the samples, for
the seed's ``GetAgentMetrics(agent_id, duration_seconds)``. The IO shell feeds it facts,
each with Trio's monotonic ``now``; it never reads a clock, a socket or ``/proc``.

Its :meth:`AgentHealth.check` returns a recovery reason exactly once per unhealthy
*episode* (from the moment some check turns unhealthy until every check is fine again or
a new process starts); the shell hands that reason to
:meth:`AgentMachine.unhealthy <supervisor._machine.AgentMachine.unhealthy>`, whose
restart policy, backoff and retry budget decide what happens. A process exit is already
the machine's business, so the ``process`` check is shown but never asks for recovery.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from supervisor._spec import HealthCheckSpec

from ._history import ResourceHistory
from ._trackers import (
    CheckState,
    FailureCounter,
    HeartbeatTracker,
    ThresholdTracker,
    Verdict,
    format_age,
    format_bytes,
    format_percent,
)

__all__ = ["AgentHealth", "Check", "HealthSnapshot", "ResourceAlert"]


class Check(enum.Enum):
    """The checks :class:`AgentHealth` aggregates, in display order."""

    PROCESS = "process"
    HEARTBEAT = "heartbeat"
    CPU = "cpu"
    MEMORY = "memory"
    HTTP = "http"
    TCP = "tcp"


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
        fmt = format_percent if self.type == "cpu" else format_bytes
        return (
            f"agent {self.agent_id}: {self.type} {fmt(self.value)} over {fmt(self.threshold)}"
            f" for {format_age(self.at, self.since)}"
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
        last_heartbeat: When the current process's latest heartbeat came (the monitor's
            clock); None if none did.
        version: The version its heartbeats report (None if they say none).
    """

    healthy: bool | None
    checks: Mapping[Check, Verdict]
    last_error: str | None
    status_text: str | None
    last_heartbeat: float | None = None
    version: str | None = None

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

    __slots__ = (
        "_clear",
        "_episode",
        "_process",
        "_running",
        "_stopping",
        "_trigger",
        "agent_id",
        "cpu",
        "heartbeat_tracker",
        "history",
        "http",
        "last_error",
        "memory",
        "spec",
        "status_text",
        "tcp",
        "version",
    )

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
        #: The version the agent's heartbeats report (kept across its restarts).
        self.version: str | None = None
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
            spec.cpu_threshold, duration, clear_fraction=clear, label="cpu", fmt=format_percent
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
        """The process ended unexpectedly (the machine decides about restarting).

        The exit ends the current episode: the exit itself is the machine's business.
        """
        self._running, self._episode = False, False
        self._process = Verdict(CheckState.UNHEALTHY, f"process: {reason}", now)
        self._forget()

    def reset(self) -> None:
        """The agent was stopped on purpose: health is unknown, not bad; no episode goes on."""
        self._running, self._episode = False, False
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

    def resources(
        self, now: float, cpu_percent: float, rss_bytes: int, *extra: int
    ) -> list[ResourceAlert]:
        """Take one resource sample of the process tree; ignored while none runs.

        ``extra`` goes to the history as it is (see :class:`ResourceSample`).

        Returns:
            An alert for each threshold that became unhealthy with this sample.
        """
        if not self._running:
            return []
        self.history.record(now, cpu_percent, rss_bytes, *extra)
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
        if hb.overdue(now):
            # Marks the timeout as reported even when a trigger is shown instead: else
            # next_deadline() would stay in the past and the monitor would wake at once,
            # again and again, until the process is gone.
            silence = hb.check(now).detail
            bad.append(self._trigger.detail if self._trigger is not None else silence)
        elif self._trigger is not None:
            bad.append(self._trigger.detail)
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
        return HealthSnapshot(
            healthy,
            verdicts,
            self.last_error,
            self.status_text,
            self.heartbeat_tracker.last_beat,
            self.version,
        )
