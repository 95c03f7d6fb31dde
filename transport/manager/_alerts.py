"""The dashboard's alerts: which readings, offline nodes and failed agents deserve one. Pure.

Theory of operation
-------------------
The store finds the candidates in the database (readings at or above their threshold,
nodes that count as offline, agents whose status is ``failed``: see
:meth:`~transport.manager._store._dashboard.DashboardMixin.dashboard`), and this module
decides what each one is worth, with no IO, so that the rules are property-tested:

* **Resource readings** (the newest ``usage_percent`` of a node's ``cpu``, ``memory`` or
  ``disk`` metric, online nodes only): below the threshold nothing; at or above it a
  *warning*; at or above the *critical level* a *critical* alert. The critical level is
  ``max(threshold + 5, 95)`` capped at 100: with the default thresholds (90 %) an alert
  is a warning from 90 % and critical from 95 %; a threshold of 97 is critical from 100 %;
  a threshold of 100 is critical at once (the warning band is empty).
* **Offline nodes** are critical (the Manager has heard nothing for the offline period);
  ``since`` is the last heartbeat (None for a node never seen).
* **Failed agents** are critical (the daemon gave up restarting them, or a start failed);
  ``since`` is when the Manager stored the state.

:func:`alerts` sorts the result: critical before warning, then offline, agent_failed,
cpu, memory, disk, then the highest value first, then by node and agent, so that the
first alerts shown are the worst and the order is stable between two refreshes.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "CRITICAL_FLOOR",
    "CRITICAL_MARGIN",
    "Alert",
    "FailedAgent",
    "Kind",
    "OfflineNode",
    "Reading",
    "Severity",
    "Thresholds",
    "alerts",
    "critical_level",
    "severity",
]

CRITICAL_MARGIN = 5.0
"""A reading is critical this many points above its threshold (or from :data:`CRITICAL_FLOOR`)."""
CRITICAL_FLOOR = 95.0
"""A reading is never critical below this (unless its threshold is higher)."""


class Severity(enum.StrEnum):
    """How bad an alert is (the JSON's ``severity``)."""

    CRITICAL = "critical"
    WARNING = "warning"


class Kind(enum.StrEnum):
    """What an alert is about (the JSON's ``kind``)."""

    OFFLINE = "offline"
    AGENT_FAILED = "agent_failed"
    CPU = "cpu"
    MEMORY = "memory"
    DISK = "disk"


_RESOURCES = (Kind.CPU, Kind.MEMORY, Kind.DISK)
_ORDER = {kind: index for index, kind in enumerate(Kind)}


@dataclass(frozen=True, slots=True)
class Thresholds:
    """``alerts`` of manager.yaml: the percentages at which a reading warns.

    Attributes:
        cpu_percent: CPU usage, 0 < x <= 100.
        memory_percent: Memory usage.
        disk_percent: Disk usage (the fullest file system the daemon reports).

    Raises:
        ValueError: A threshold outside (0, 100].
    """

    cpu_percent: float = 90.0
    memory_percent: float = 90.0
    disk_percent: float = 90.0

    def __post_init__(self) -> None:
        for name in ("cpu_percent", "memory_percent", "disk_percent"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value <= 100):
                raise ValueError(f"{name}: must be a number in (0, 100]; got {value!r}")

    def of(self, kind: Kind) -> float:
        """The threshold of a resource kind (cpu, memory or disk).

        Args:
            kind: The kind.

        Returns:
            The threshold.

        Raises:
            ValueError: ``kind`` is not a resource.
        """
        if kind not in _RESOURCES:
            raise ValueError(f"{kind} has no threshold")
        return float(getattr(self, f"{kind.value}_percent"))


@dataclass(frozen=True, slots=True)
class Reading:
    """A node's newest usage of one resource (an alert candidate).

    Attributes:
        node_id: The node.
        hostname: Its host name.
        kind: cpu, memory or disk.
        value: ``usage_percent``.
        since: When it was measured (unix seconds), or None.
    """

    node_id: str
    hostname: str
    kind: Kind
    value: float
    since: float | None = None


@dataclass(frozen=True, slots=True)
class OfflineNode:
    """A node that counts as offline.

    Attributes:
        node_id: The node.
        hostname: Its host name.
        last_seen: Its last heartbeat (unix seconds), or None when never seen.
    """

    node_id: str
    hostname: str
    last_seen: float | None = None


@dataclass(frozen=True, slots=True)
class FailedAgent:
    """An agent whose stored status is ``failed``.

    Attributes:
        node_id: Its node.
        hostname: The node's host name.
        agent_id: The agent.
        since: When that state was stored (unix seconds), or None.
    """

    node_id: str
    hostname: str
    agent_id: str
    since: float | None = None


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert of the dashboard.

    Attributes:
        severity: critical or warning.
        kind: What it is about.
        node_id: The node.
        hostname: Its host name.
        agent_id: The agent, for ``agent_failed``; else None.
        value: The reading, for a resource; else None.
        threshold: The threshold crossed, for a resource; else None.
        message: One line for a person.
        since: Unix seconds (see the module), or None.
    """

    severity: Severity
    kind: Kind
    node_id: str
    hostname: str
    agent_id: str | None
    value: float | None
    threshold: float | None
    message: str
    since: float | None


def critical_level(threshold: float) -> float:
    """The reading at which a resource alert becomes critical.

    Args:
        threshold: The warning threshold, in (0, 100].

    Returns:
        ``min(100, max(threshold + 5, 95))``, never below ``threshold``.
    """
    return max(threshold, min(100.0, max(threshold + CRITICAL_MARGIN, CRITICAL_FLOOR)))


def severity(value: float, threshold: float) -> Severity | None:
    """How bad a reading is against its threshold.

    Args:
        value: The reading (a percentage; NaN is no reading).
        threshold: The warning threshold.

    Returns:
        None below the threshold (or NaN); warning from it; critical from
        :func:`critical_level`.
    """
    if math.isnan(value) or value < threshold:
        return None
    return Severity.CRITICAL if value >= critical_level(threshold) else Severity.WARNING


def _name(node_id: str, hostname: str) -> str:
    return hostname if hostname and hostname != node_id else node_id


def _reading_alert(reading: Reading, thresholds: Thresholds) -> Alert | None:
    threshold = thresholds.of(reading.kind)
    level = severity(reading.value, threshold)
    if level is None:
        return None
    what = {"cpu": "CPU", "memory": "memory", "disk": "disk"}[reading.kind.value]
    return Alert(
        severity=level,
        kind=reading.kind,
        node_id=reading.node_id,
        hostname=reading.hostname,
        agent_id=None,
        value=reading.value,
        threshold=threshold,
        message=(
            f"{_name(reading.node_id, reading.hostname)}: {what} at {reading.value:.1f}%"
            f" (threshold {threshold:g}%)"
        ),
        since=reading.since,
    )


def _critical(
    kind: Kind, node_id: str, hostname: str, agent_id: str | None, what: str, since: float | None
) -> Alert:
    """A critical alert that has no reading (offline, agent_failed)."""
    message = f"{_name(node_id, hostname)}: {what}"
    return Alert(Severity.CRITICAL, kind, node_id, hostname, agent_id, None, None, message, since)


def _sort_key(alert: Alert) -> tuple[int, int, float, str, str, str, float]:
    value = alert.value if alert.value is not None else 0.0
    return (
        0 if alert.severity is Severity.CRITICAL else 1,
        _ORDER[alert.kind],
        -value,
        alert.node_id,
        alert.agent_id or "",
        alert.hostname,
        alert.since if alert.since is not None else -math.inf,
    )


def alerts(
    thresholds: Thresholds,
    *,
    readings: Iterable[Reading] = (),
    offline: Iterable[OfflineNode] = (),
    failed: Iterable[FailedAgent] = (),
) -> list[Alert]:
    """The alerts of the candidates, worst first (see the module).

    Args:
        thresholds: The thresholds.
        readings: Resource readings of online nodes (those below their threshold are
            ignored; a reading of a kind that is not a resource raises).
        offline: Nodes that count as offline.
        failed: Failed agents.

    Returns:
        One alert per offline node, per failed agent and per reading at or above its
        threshold, sorted.

    Raises:
        ValueError: A reading whose kind is not cpu, memory or disk.
    """
    found: list[Alert] = []
    for reading in readings:
        alert = _reading_alert(reading, thresholds)
        if alert is not None:
            found.append(alert)
    for node in offline:
        what = "offline"
        found.append(
            _critical(Kind.OFFLINE, node.node_id, node.hostname, None, what, node.last_seen)
        )
    for agent in failed:
        what = f"agent {agent.agent_id} failed"
        found.append(
            _critical(
                Kind.AGENT_FAILED, agent.node_id, agent.hostname, agent.agent_id, what, agent.since
            )
        )
    found.sort(key=_sort_key)
    return found
