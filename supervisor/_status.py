"""Snapshots handed to users: an agent's status and an operation's outcome."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ._health import HealthSnapshot, HeartbeatStatistics, NotifyStatistics
from ._lifecycle import AgentState
from ._machine import ExitStatus
from ._spec import AgentType

__all__ = ["AgentInfo", "HealthStatistics", "Outcome", "SupervisorStatistics"]


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """The status of one agent: the seed's AgentInfo (004 4.1.1) plus supervision details.

    Times are wall-clock seconds since the epoch, or None.

    Attributes:
        id: The agent id.
        type: The agent type.
        name: Display name.
        binary_path: The executable.
        config_file: The agent's configuration file, if any.
        work_dir: The working directory.
        socket_path: The seed's socket path, if any.
        enabled: Whether the configuration enables it.
        pid: The process id, 0 when none.
        status: The lifecycle state.
        restart_count: Restarts since the agent was registered.
        last_restart: When it was last restarted.
        started_at: When the current process started.
        created_at: When the agent was registered.
        updated_at: When its state last changed.
        last_exit: How its last process ended.
        last_error: Why it last failed or was restarted.
        next_restart_at: When a scheduled restart will happen.
        consecutive_restarts: Automatic restarts in a row (the retry budget used).
        log_file: Where its stdout and stderr go.
        healthy: False when any health check (the process included) is unhealthy, None
            before the first start or after a deliberate stop (``health.healthy``).
        health: Every check's state, the last health error and the agent's own status
            text (sd_notify ``STATUS=`` or the heartbeat's ``status``).
        last_heartbeat: Wall-clock time of the agent's latest heartbeat (a heartbeat line
            or sd_notify ``WATCHDOG=1``) from its current process; None if none came.
        version: The version the agent's heartbeats report; None if they say none.
    """

    id: str
    type: AgentType
    name: str
    binary_path: str
    config_file: str | None
    work_dir: str
    socket_path: str | None
    enabled: bool
    pid: int
    status: AgentState
    restart_count: int
    last_restart: float | None
    started_at: float | None
    created_at: float
    updated_at: float
    last_exit: ExitStatus | None
    last_error: str | None
    next_restart_at: float | None
    consecutive_restarts: int
    log_file: str
    healthy: bool | None = None
    health: HealthSnapshot | None = None
    last_heartbeat: float | None = None
    version: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of an operation on one agent.

    Attributes:
        agent_id: The agent.
        ok: Whether the operation reached its goal.
        state: The agent's state afterwards.
        error: What went wrong, when not ok.
    """

    agent_id: str
    ok: bool
    state: AgentState
    error: str | None = None


@dataclass(frozen=True, slots=True)
class HealthStatistics:
    """Counters of the health monitor (:attr:`SupervisorStatistics.health`).

    Attributes:
        ticks: Group ticks served (one per interval group and period).
        samples: Process trees measured.
        probes: HTTP and TCP probes run.
        probes_skipped: Probes not started because the previous one was still running.
        unhealthy: Recovery requests made.
        alerts: Resource alerts raised.
        heartbeat: The heartbeat socket's counters.
        notify: The notify socket's counters.
    """

    ticks: int
    samples: int
    probes: int
    probes_skipped: int
    unhealthy: int
    alerts: int
    heartbeat: HeartbeatStatistics
    notify: NotifyStatistics


@dataclass(frozen=True, slots=True)
class SupervisorStatistics:
    """A snapshot of the supervisor as a whole (:meth:`Supervisor.statistics`).

    Attributes:
        agents: Registered agents.
        by_state: How many agents are in each state (every state is present).
        orphans_reaped: Re-parented descendants reaped so far (child-subreaper mode).
        health: The health monitor's counters (None when health checks are off).
    """

    agents: int
    by_state: Mapping[AgentState, int]
    orphans_reaped: int
    health: HealthStatistics | None = None
