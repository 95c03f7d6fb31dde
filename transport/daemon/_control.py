"""The daemon's bridge from the updater's ``AgentControl`` protocol to the supervisor.

:class:`UpdateControl` lets :class:`updater.UpdateManager` stop, start and watch an agent
through the supervisor's API, and hold it during an update's trial so that the restart
policy does not interfere (:meth:`supervisor.Supervisor.hold_restarts`): while held, an
exit is final and the updater decides (roll back, restart the old version). It satisfies
the protocol structurally; neither library imports the other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from supervisor import AgentState, CheckState, SpawnError, StopError, Supervisor

__all__ = ["UpdateControl"]

_FAILING = frozenset({CheckState.PENDING, CheckState.UNHEALTHY})


class UpdateControl:
    """Stop, start, watch and hold agents of a running :class:`Supervisor` for updates.

    Args:
        supervisor: The running supervisor.
    """

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    @contextlib.contextmanager
    def hold(self, agent_id: str) -> Iterator[None]:
        """No automatic restart of the agent while the context is entered (holds nest).

        Raises:
            UnknownAgentError: no such agent.
        """
        with self._supervisor.hold_restarts(agent_id):
            yield

    async def stop_agent(self, agent_id: str) -> None:
        """Stop the agent (whole tree, gracefully) and return once it is gone.

        Raises:
            StopError: it is not stopped afterwards.
        """
        outcome = await self._supervisor.stop(agent_id)
        if not outcome.ok:
            raise StopError(f"agent {agent_id!r} did not stop: {outcome.error}")

    async def start_agent(self, agent_id: str) -> None:
        """Start the agent from its (possibly new) binary; return once spawned.

        Raises:
            SpawnError: the process could not be started.
        """
        outcome = await self._supervisor.start(agent_id)
        if not outcome.ok:
            raise SpawnError(f"agent {agent_id!r} did not start: {outcome.error}")

    async def wait_ready(self, agent_id: str) -> None:
        """Return once the agent is running (up for ``start_seconds``, or reported ready)."""
        await self._supervisor.wait_state(agent_id, AgentState.RUNNING)

    def health_problem(self, agent_id: str) -> str | None:
        """The agent's failing health checks now, unhealthy or on their way; else None.

        A check that is still counting (a threshold exceeded for less than its duration,
        probe failures fewer than ``failures``) counts too: the trial's window is usually
        shorter than the time a check needs to turn unhealthy.
        """
        health = self._supervisor.status(agent_id).health
        if health is None:
            return None
        bad = [v.detail for v in health.checks.values() if v.state in _FAILING]
        return "; ".join(bad) or None

    async def wait_exit(self, agent_id: str) -> int | None:
        """Return once the held agent's process has exited, with its status.

        Returns:
            The exit status; negative for death by a signal; None when unknown.
        """
        info = await self._supervisor.wait_state(agent_id, AgentState.STOPPED, AgentState.FAILED)
        status = info.last_exit
        if status is None:
            return None
        if status.code is not None:
            return status.code
        return -status.signal if status.signal is not None else None

    def log_mark(self, agent_id: str) -> int:
        """A position in the agent's output that only grows (``updater.AgentLogMarks``)."""
        return self._supervisor.log_position(agent_id)

    def tail_since(self, agent_id: str, mark: int, lines: int) -> list[str]:
        """The last lines written after ``mark``: a failed version's own output."""
        return self._supervisor.tail_since(agent_id, mark, min(max(lines, 1), 1000))

    def tail(self, agent_id: str, lines: int) -> list[str]:
        """The agent's last log lines, oldest first."""
        return self._supervisor.tail(agent_id, min(max(lines, 1), 1000))
