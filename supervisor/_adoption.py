"""Adoption at start: which live process is an agent's, and what to stop.

The supervisor's records (its :class:`~supervisor.AgentStore`) and the processes found by
their markers (:func:`supervisor._leftovers.find_agents`) are weighed here: exactly one
process is adopted per agent, never one started from a file that changed since, and every
other live process of the agent, or of an agent no longer configured, is stopped.
"""

from __future__ import annotations

import logging
import signal

from ._leftovers import Found, stop_processes
from ._persist import AgentRecord
from ._process import Child, ProcessIdentity, adopt, file_identity, identify
from ._spec import AgentSpec

__all__ = ["choose", "spawned_with", "stop_unconfigured", "stop_unconfigured_record"]

logger = logging.getLogger("supervisor")


def choose(
    record: AgentRecord | None, found: Found | None, spec: AgentSpec, *, trust_records: bool
) -> tuple[Child | None, list[int]]:
    """The one process to adopt, and every other live process of the agent, to stop.

    With a store that journals spawns, the records name the agent's latest process
    exactly: only that one may be adopted. Otherwise the recorded one if it lives, else
    the newest run's main process found by its markers.

    A process started from a file that is no longer the agent's ``binary_path`` (an
    update or a rollback replaced it meanwhile) is never adopted.
    """
    candidates: list[ProcessIdentity] = []
    if found is not None and not trust_records:
        candidates = list(reversed(found.leaders))  # newest first
    recorded = record.process if record is not None else None
    if recorded is not None:
        if not any(recorded.matches(i) for i in candidates) and record and record.run_id:
            candidates.append(recorded)  # spawned before the owner marker existed
        candidates.sort(key=lambda identity: not recorded.matches(identity))
    current_binary = file_identity(spec.binary_path)
    child: Child | None = None
    for identity in candidates:
        spawned_from = found.binary_of(identity.pid) if found is not None else ""
        if spawned_from and spawned_from != current_binary:
            logger.warning(
                "agent %s: pid %d was started from a %s that has changed since; not adopting it",
                spec.id,
                identity.pid,
                spec.binary_path,
            )
            continue
        run_id = found.run_of(identity.pid) if found is not None else ""
        child = adopt(identity, run_id or (record.run_id if record is not None else ""))
        if child is not None:
            break
    if found is not None:
        strays = found.outside(child.run_id) if child is not None else list(found.markers)
    else:
        strays = [i.pid for i in candidates if child is None and _same_start(i)]
    return child, strays


def spawned_with(record: AgentRecord | None, found: Found | None, child: Child) -> str:
    """The digest of the spec an adopted process was started with ("" if unknown)."""
    marked = found.spec_of(child.pid) if found is not None else ""
    return marked or (record.digest if record is not None else "")


async def stop_unconfigured(agent_id: str, found: Found) -> None:
    """Stop every process of an agent that is no longer configured."""
    logger.info(
        "agent %s is no longer configured; stopping its process(es) %s",
        agent_id,
        ", ".join(map(str, found.markers)),
    )
    await stop_processes(list(found.markers), stop_signal=signal.SIGTERM, timeout_s=30.0)


async def stop_unconfigured_record(agent_id: str, record: AgentRecord) -> None:
    """Stop the recorded process of an agent no longer configured (one spawned before
    processes carried the owner marker, so no scan finds it)."""
    assert record.process is not None
    child = adopt(record.process, record.run_id)
    if child is None:
        return
    logger.info("agent %s is no longer configured; stopping its pid %d", agent_id, child.pid)
    child.close()
    await stop_processes([child.pid], stop_signal=signal.SIGTERM, timeout_s=30.0)


def _same_start(identity: ProcessIdentity) -> bool:
    """Whether the recorded process still lives (same PID and start time; any executable)."""
    current = identify(identity.pid)
    return current is not None and identity.matches(
        ProcessIdentity(current.pid, current.create_time, identity.exe)
    )
