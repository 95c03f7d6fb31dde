"""What a runner tells the health monitor, and what the monitor offers the runners.

The monitor owns every agent's health (its trackers, CPU meter and resource history); a
runner owns its process. They meet here: the runner publishes a small
:class:`ProcessView` whenever its process or state changes, and the facts of its
process's life (started, exited, checks reconfigured); the monitor answers through the
runner's inbox (``post``) with ``Ready`` and ``Unhealthy`` requests. Neither reaches
into the other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ._lifecycle import AgentState
from ._spec import AgentSpec, HealthCheckSpec

if TYPE_CHECKING:
    from ._requests import Request

__all__ = ["ProcessObserver", "ProcessView"]


@dataclass(frozen=True, slots=True)
class ProcessView:
    """An agent as the monitor sees it.

    Attributes:
        agent_id: The agent.
        pid: Its process (0: none).
        generation: Which of the agent's processes this is: a measurement or probe
            answer taken for an older generation is stale and dropped.
        state: Its lifecycle state.
        checks: Its health checks.
        post: The agent's inbox (raises ``SupervisorClosedError`` once it is closed).
    """

    agent_id: str
    pid: int
    generation: int
    state: AgentState
    checks: HealthCheckSpec
    post: Callable[[Request], None]


class ProcessObserver(Protocol):
    """What runners tell the health monitor (see :mod:`supervisor._health._monitor`)."""

    def env(self, spec: AgentSpec) -> Mapping[str, str]:
        """Variables added to the agent's environment (notify and heartbeat sockets)."""
        ...

    def update(self, view: ProcessView) -> None:
        """The agent's process, state or checks changed."""
        ...

    def process_started(self, view: ProcessView, now: float, *, spawned: bool) -> None:
        """A process was spawned (``spawned``) or adopted for the agent."""
        ...

    def process_exited(self, view: ProcessView, now: float, detail: str, *, stopped: bool) -> None:
        """The agent's process exited (``stopped``: because it was asked to)."""
        ...

    def forget(self, view: ProcessView) -> None:
        """The runner that published ``view`` is gone (removed, or the supervisor ends)."""
        ...
