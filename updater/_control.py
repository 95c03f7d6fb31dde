"""What the updater needs from the supervision core to update an agent.

The updater never imports the ``supervisor`` package; the daemon hands it an object that
satisfies :class:`AgentControl` (structural typing: no subclassing needed).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

__all__ = ["AgentControl", "AgentLogMarks"]


class AgentControl(Protocol):
    """Stop, start and watch one supervised agent, by id.

    The update flow is: ``stop_agent``; switch the binary; ``start_agent``; then, for the
    trial window, ``wait_ready`` and ``wait_exit`` race: the agent passes if it became
    ready, did not exit before the window ended, and has no ``health_problem`` then. On
    failure the updater reads ``tail``, calls ``stop_agent``, restores the previous binary
    and calls ``start_agent`` again.

    While the updater holds an agent (:meth:`hold`, from its ``stop_agent`` to the end of
    the trial), the supervisor must not restart it on its own.
    """

    def hold(self, agent_id: str) -> AbstractContextManager[None]:
        """Keep the supervisor's hands off the agent while the context is entered: an exit
        of its process is final (no automatic restart), so the updater's trial sees it and
        decides. The updater releases the hold before starting a restored version, which
        is then supervised as usual again."""
        ...

    async def stop_agent(self, agent_id: str) -> None:
        """Stop the agent and return once its process has exited.

        Raises:
            Exception: Any error means the agent could not be stopped; the update is
                abandoned before anything is switched (reason ``stop_failed``).
        """
        ...

    async def start_agent(self, agent_id: str) -> None:
        """Start the agent's process from its (possibly new) binary and return once spawned.

        Raises:
            Exception: The spawn failed (treated like an immediate exit: ``start_failed``).
        """
        ...

    async def wait_ready(self, agent_id: str) -> None:
        """Return once the process from the latest ``start_agent`` is ready (and healthy, if
        the agent has health checks). If that process exits first, never return: the
        updater learns of the exit from :meth:`wait_exit`. The updater cancels this call."""
        ...

    async def wait_exit(self, agent_id: str) -> int | None:
        """Return when the process from the latest ``start_agent`` has exited (at once if
        it already has), with its exit status (negative: killed by that signal; None:
        unknown). The updater cancels this call when the trial ends."""
        ...

    def health_problem(self, agent_id: str) -> str | None:
        """Why the agent's health checks fail (or are failing) right now; None when they
        pass or it has none. Asked when the trial window ends: a problem fails the trial."""
        ...

    def tail(self, agent_id: str, lines: int) -> list[str]:
        """The agent's last ``lines`` log lines (stdout and stderr), oldest first.

        Used for a failed version's ``log_tail`` only if the control does not also
        implement :class:`AgentLogMarks` (then earlier runs' lines may be included)."""
        ...


@runtime_checkable
class AgentLogMarks(Protocol):
    """Optional addition to :class:`AgentControl`: positions in an agent's log, so that the
    ``log_tail`` of a failed version holds only lines its own run wrote.

    The updater takes a mark just before it starts the new version and, if the trial fails,
    asks for the lines written after it. A control without these methods still works: the
    updater then falls back to :meth:`AgentControl.tail`.
    """

    def log_mark(self, agent_id: str) -> int:
        """A position in the agent's output (stdout and stderr together) that only grows,
        across restarts of the agent, for the daemon's lifetime: a line count, a byte
        count, whatever :meth:`tail_since` understands."""
        ...

    def tail_since(self, agent_id: str, mark: int, lines: int) -> list[str]:
        """The last ``lines`` of the lines logged after ``mark``, oldest first (fewer if
        fewer were written, or the log no longer holds them)."""
        ...
