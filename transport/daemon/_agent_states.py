"""The agent states the daemon syncs to the Manager, from the supervisor's snapshots. PURE.

``SyncAgentStates`` carries, per agent, its status, pid, type, version and last heartbeat.
The supervisor's snapshot (``Supervisor.statuses()``) has the first three; the others are
completed here:

* **version**: the agent's own report when the snapshot carries one (a ``version``
  attribute), else the version the updater recorded as installed, else empty (the
  Manager then keeps what it has).
* **last heartbeat** (wall-clock seconds): the agent's own last heartbeat when the
  snapshot carries it (a ``last_heartbeat`` attribute); otherwise the last moment the
  daemon saw the agent running and not unhealthy (its process checks and heartbeat check
  pass), which is what the original daemon's health checker reports. An agent that stops
  or turns unhealthy keeps the last such moment (:data:`Seen` carries it from one sync to
  the next), and one never seen alive sends 0 (the Manager keeps its stored value).

:func:`agent_version_summary` writes the agents' versions as ``RegisterNode``'s single
``agent_version`` string.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from transport._convert import AgentStateRecord, AgentStatus

if TYPE_CHECKING:
    from supervisor import AgentInfo

__all__ = ["Seen", "agent_states", "agent_version_summary"]

Seen = Mapping[str, float]
"""Each agent's last heartbeat so far (wall-clock seconds), by agent id."""

_INT32_MAX = 2**31 - 1


def _reported(info: object, name: str) -> object:
    return getattr(info, name, None)  # attributes a newer supervisor may report


def _version(info: AgentInfo, installed: Mapping[str, str]) -> str:
    reported = _reported(info, "version")
    if isinstance(reported, str) and reported:
        return reported
    return installed.get(info.id, "")


def _heartbeat(info: AgentInfo, seen: Seen, now: float) -> float | None:
    reported = _reported(info, "last_heartbeat")
    if isinstance(reported, int | float) and not isinstance(reported, bool) and reported >= 1:
        return float(reported)
    if info.status.value == AgentStatus.RUNNING.value and info.healthy is not False:
        return now
    return seen.get(info.id)


def agent_states(
    infos: Sequence[AgentInfo],
    *,
    versions: Mapping[str, str],
    seen: Seen,
    now: float,
) -> tuple[list[AgentStateRecord], dict[str, float]]:
    """The wire records of every agent, and what to remember until the next sync.

    Args:
        infos: The supervisor's snapshot of every agent.
        versions: Installed versions by agent id (from the updater; may be empty).
        seen: What the previous call returned (empty at first).
        now: The wall clock (seconds).

    Returns:
        One record per agent, in snapshot order, and each agent's last heartbeat so far
        (agents no longer present are forgotten).
    """
    records: list[AgentStateRecord] = []
    remembered: dict[str, float] = {}
    for info in infos:
        beat = _heartbeat(info, seen, now)
        if beat is not None and math.isfinite(beat) and beat >= 1:
            remembered[info.id] = beat
        else:
            beat = None
        records.append(
            AgentStateRecord(
                agent_id=info.id,
                status=AgentStatus(info.status.value),
                pid=info.pid if 0 < info.pid <= _INT32_MAX else 0,
                last_heartbeat=int(beat) if beat is not None else None,
                type=info.type.value,
                version=_version(info, versions),
            )
        )
    return records, remembered


def agent_version_summary(versions: Iterable[tuple[str, str]]) -> str:
    """``RegisterNode.agent_version`` for the agents' versions.

    Args:
        versions: ``(agent id, version)`` pairs; empty versions are skipped.

    Returns:
        ``""`` when no version is known; the version itself when every agent has the same
        one; otherwise ``id=version`` pairs by id, comma-separated.
    """
    known = sorted((agent, version) for agent, version in versions if version)
    if not known:
        return ""
    distinct = {version for _, version in known}
    if len(distinct) == 1:
        return distinct.pop()
    return ",".join(f"{agent}={version}" for agent, version in known)
