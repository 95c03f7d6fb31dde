"""The per-agent supervision decisions, as a pure state machine (sans-IO).

Theory of operation
-------------------
:class:`AgentMachine` is told what happened (a request from a user, a process spawned or
exited, a health verdict, time passing) and answers with the actions the IO shell must
perform: :class:`Spawn` a process or :class:`Kill` the current one. It never touches a
process, a clock or a file: every method takes ``now`` (Trio's monotonic clock in the
shell, any float in tests), and the one random number it needs comes from an injected
source. The lifecycle table in :mod:`supervisor._lifecycle` checks every state change.

Timers are data: :attr:`AgentMachine.deadline` is the next moment at which :meth:`tick`
has something to do (a start becoming confirmed after ``start_seconds``, or a backoff delay
ending). The shell sleeps until then, or until something else happens.

Restart rules (the seed's 3.3.1 and 3.5.4, done as production supervisors do):

* An exit the supervisor did not cause is a crash. ``always`` restarts after any crash,
  ``on-failure`` after a non-zero status, a signal, or an exit during ``start_seconds``;
  ``never`` does not restart: a clean exit leaves the agent ``stopped``, any other
  ``failed``.
* The first restart in a row is immediate; the n-th waits ``backoff_base * 2**(n-2)``,
  capped at ``backoff_max``, jittered down by up to 10 %.
* ``max_retries`` restarts in a row are allowed (-1: no limit); one more crash marks the
  agent ``failed`` with the reason and last exit status. A run of ``reset_after`` seconds
  resets the count; so does a manual start.
* An unhealthy verdict is recovered the same way: the process is stopped, and the restart
  goes through the same backoff and the same budget.
* While :attr:`AgentMachine.hold_restarts` is set (an update's trial), nothing restarts
  automatically: an exit is final, and whoever holds the agent decides what comes next.
"""

from __future__ import annotations

import enum
import random
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from ._backoff import backoff_delay
from ._errors import InvalidTransitionError
from ._lifecycle import AgentState, Event, transition
from ._spec import RestartPolicy, RestartSpec

__all__ = ["Action", "AgentMachine", "ExitStatus", "Kill", "Spawn", "StateChange"]


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a process ended.

    Attributes:
        code: The exit status, when it exited by itself.
        signal: The signal number, when a signal killed it.
    Both are None when the status is unknown (a process adopted from an earlier daemon
    is not our child, so the kernel does not tell us).
    """

    code: int | None = None
    signal: int | None = None

    @classmethod
    def from_returncode(cls, returncode: int) -> ExitStatus:
        """Build from a ``Popen.returncode`` (negative means killed by that signal)."""
        if returncode < 0:
            return cls(signal=-returncode)
        return cls(code=returncode)

    @property
    def success(self) -> bool:
        """Whether the process exited by itself with status 0."""
        return self.code == 0

    def describe(self) -> str:
        """A short English description, e.g. ``killed by signal 9 (SIGKILL)``."""
        if self.code is not None:
            return f"exited with status {self.code}"
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = "unknown"
            return f"killed by signal {self.signal} ({name})"
        return "exited (status unknown: adopted process)"


@dataclass(frozen=True, slots=True)
class Spawn:
    """Start the agent's process now, then report :meth:`AgentMachine.spawned`."""


@dataclass(frozen=True, slots=True)
class Kill:
    """Stop the agent's process; report :meth:`AgentMachine.exited` when it is gone.

    Attributes:
        graceful: Stop signal first and SIGKILL after the stop timeout; else SIGKILL now.
    """

    graceful: bool = True


Action = Spawn | Kill


@dataclass(frozen=True, slots=True)
class StateChange:
    """One step of the lifecycle, for the event stream.

    Attributes:
        old: State before.
        new: State after.
        event: What caused it.
        reason: A human-readable explanation.
        at: The ``now`` it happened at.
    """

    old: AgentState
    new: AgentState
    event: Event
    reason: str
    at: float


class _AfterExit(enum.Enum):
    STOP = "stop"
    RESTART_NOW = "restart_now"
    RESTART_BACKOFF = "restart_backoff"


@dataclass(slots=True)
class AgentMachine:
    """Supervision decisions for one agent.

    Args:
        restart: The restart policy and backoff settings.
        start_seconds_s: Uptime after which a start counts as successful.
        draw: Source of random numbers in ``[0, 1)`` for the backoff jitter.
    """

    restart: RestartSpec
    start_seconds_s: float = 1.0
    draw: Callable[[], float] = field(default=random.random, repr=False)

    state: AgentState = AgentState.STOPPED
    pid: int | None = None
    started_at: float | None = None
    deadline: float | None = None
    consecutive: int = 0
    restart_count: int = 0
    last_restart_at: float | None = None
    last_exit: ExitStatus | None = None
    last_error: str | None = None
    hold_restarts: bool = False
    changes: list[StateChange] = field(default_factory=list)
    _after_exit: _AfterExit | None = None

    # -- queries ------------------------------------------------------------------

    @property
    def next_restart_at(self) -> float | None:
        """When the pending automatic restart will happen, if one is scheduled."""
        if self.state is AgentState.RESTARTING and self.pid is None:
            return self.deadline
        return None

    def drain_changes(self) -> list[StateChange]:
        """Return and forget the state changes recorded since the last call."""
        changes, self.changes = self.changes, []
        return changes

    def update_settings(self, restart: RestartSpec, start_seconds_s: float) -> None:
        """Apply changed restart settings to a live agent (a reload without restart)."""
        self.restart = restart
        self.start_seconds_s = start_seconds_s

    # -- requests -----------------------------------------------------------------

    def request_start(self, now: float) -> list[Action]:
        """A user asked for the agent to run. Clears ``failed`` and the retry count."""
        state = self.state
        if state in (AgentState.STARTING, AgentState.RUNNING):
            self._move(Event.START, state, now, "already started")
            return []
        if state is AgentState.RESTARTING and self.pid is not None:
            self._move(Event.START, AgentState.RESTARTING, now, "start after old process exits")
            self._after_exit = _AfterExit.RESTART_NOW
            return []
        self.consecutive = 0
        self.deadline = None
        self._move(Event.START, AgentState.STARTING, now, "start requested")
        return [Spawn()]

    def request_stop(self, now: float, *, graceful: bool = True) -> list[Action]:
        """A user asked for the agent to stop."""
        state = self.state
        if state is AgentState.STOPPING:
            self._move(Event.STOP, state, now, "already stopping")
            return [] if graceful else [Kill(graceful=False)]
        if self.pid is None:
            # Nothing runs: stopped, failed, or waiting out a backoff delay.
            self.deadline = None
            self._after_exit = None
            self._move(Event.STOP, AgentState.STOPPED, now, "stop requested")
            return []
        self.deadline = None
        self._after_exit = _AfterExit.STOP
        self._move(Event.STOP, AgentState.STOPPING, now, "stop requested")
        return [Kill(graceful=graceful)]

    def request_restart(self, now: float) -> list[Action]:
        """A user asked for a restart: stop the process if any, then start at once."""
        if self.pid is not None:
            already_killing = self.state is AgentState.RESTARTING
            self._after_exit = _AfterExit.RESTART_NOW
            self.deadline = None
            self._move(Event.RESTART, AgentState.RESTARTING, now, "restart requested")
            return [] if already_killing else [Kill(graceful=True)]
        self.consecutive = 0
        return self._spawn_again(Event.RESTART, now, "restart requested")

    # -- facts ------------------------------------------------------------------

    def spawned(self, now: float, pid: int) -> list[Action]:
        """The process was created with this PID."""
        self.pid = pid
        self.started_at = now
        if self.start_seconds_s <= 0:
            self._move(Event.SPAWNED, AgentState.RUNNING, now, f"started (pid {pid})")
            self.deadline = None
        else:
            self._move(Event.SPAWNED, AgentState.STARTING, now, f"spawned (pid {pid})")
            self.deadline = now + self.start_seconds_s
        return []

    def spawn_failed(self, now: float, error: str) -> list[Action]:
        """The process could not be created (missing binary, permissions, ...)."""
        reason = f"spawn failed: {error}"
        self.last_error = reason
        if self.restart.policy is RestartPolicy.NEVER or self.hold_restarts:
            self._move(Event.SPAWN_FAILED, AgentState.FAILED, now, reason)
            return []
        return self._schedule_restart(Event.SPAWN_FAILED, now, reason)

    def confirm_start(self, now: float) -> list[Action]:
        """The agent reported itself ready (sd_notify READY=1) before ``start_seconds``."""
        if self.state is AgentState.STARTING and self.pid is not None:
            self.deadline = None
            self._move(Event.START_CONFIRMED, AgentState.RUNNING, now, "reported ready")
        return []

    def adopted(self, now: float, pid: int, uptime_s: float) -> list[Action]:
        """A process left running by an earlier daemon is now supervised again."""
        self.pid = pid
        self.started_at = now - uptime_s
        if uptime_s >= self.start_seconds_s:
            self._move(Event.ADOPTED, AgentState.RUNNING, now, f"adopted (pid {pid})")
        else:
            self._move(Event.ADOPTED, AgentState.STARTING, now, f"adopted (pid {pid})")
            self.deadline = self.started_at + self.start_seconds_s
        return []

    def exited(self, now: float, status: ExitStatus) -> list[Action]:
        """The process was seen to exit."""
        if self.pid is None:
            raise InvalidTransitionError(self.state.value, Event.EXITED.value)
        self.pid = None
        self.last_exit = status
        self.deadline = None
        after, self._after_exit = self._after_exit, None
        state = self.state
        if state is AgentState.STOPPING:
            self._move(Event.EXITED, AgentState.STOPPED, now, f"stopped: {status.describe()}")
            return []
        if state is AgentState.RESTARTING:
            if after is _AfterExit.RESTART_BACKOFF:
                self._reset_if_stable(now)
                return self._schedule_restart(Event.EXITED, now, self.last_error or "unhealthy")
            return self._spawn_again(Event.EXITED, now, f"restarting: {status.describe()}")
        return self._crashed(now, status)

    def unhealthy(self, now: float, reason: str) -> list[Action]:
        """A health check asks for recovery; the restart policy decides how."""
        if self.pid is None or self.state not in (AgentState.STARTING, AgentState.RUNNING):
            return []  # a verdict about a process that is already going away
        self.last_error = reason
        if self.restart.policy is RestartPolicy.NEVER or self.hold_restarts:
            return []
        self._after_exit = _AfterExit.RESTART_BACKOFF
        self.deadline = None
        self._move(Event.UNHEALTHY, AgentState.RESTARTING, now, reason)
        return [Kill(graceful=True)]

    def tick(self, now: float) -> list[Action]:
        """Time passed: fire the deadline if it is due."""
        if self.deadline is None or now < self.deadline:
            return []
        self.deadline = None
        if self.state is AgentState.STARTING and self.pid is not None:
            self._move(Event.START_CONFIRMED, AgentState.RUNNING, now, "start confirmed")
            return []
        if self.state is AgentState.RESTARTING and self.pid is None:
            return self._spawn_again(Event.BACKOFF_ELAPSED, now, "backoff elapsed")
        return []

    # -- internals ----------------------------------------------------------------

    def _crashed(self, now: float, status: ExitStatus) -> list[Action]:
        early = self.state is AgentState.STARTING
        self._reset_if_stable(now)
        uptime = now - self.started_at if self.started_at is not None else 0.0
        what = status.describe()
        if early:
            limit = self.start_seconds_s
            what = f"{what} after {uptime:.3g}s, during start (start_seconds {limit:g})"
        # While held (an update's trial), every exit is final: the holder decides.
        policy = RestartPolicy.NEVER if self.hold_restarts else self.restart.policy
        wants = policy is RestartPolicy.ALWAYS or (
            policy is RestartPolicy.ON_FAILURE and (early or not status.success)
        )
        if not wants:
            if status.success and not early:
                self._move(Event.EXITED, AgentState.STOPPED, now, what)
            else:
                self.last_error = f"{what}; restart policy is {policy.value}"
                self._move(Event.EXITED, AgentState.FAILED, now, self.last_error)
            return []
        self.last_error = what
        return self._schedule_restart(Event.EXITED, now, what)

    def _reset_if_stable(self, now: float) -> None:
        if self.started_at is not None and now - self.started_at >= self.restart.reset_after_s:
            self.consecutive = 0

    def _schedule_restart(self, event: Event, now: float, reason: str) -> list[Action]:
        limit = self.restart.max_retries
        if 0 <= limit <= self.consecutive:
            self.last_error = f"{reason}; gave up after {self.consecutive} restart(s) in a row"
            self._move(event, AgentState.FAILED, now, self.last_error)
            return []
        delay = backoff_delay(
            self.consecutive, self.restart.backoff_base_s, self.restart.backoff_max_s, self.draw()
        )
        self.consecutive += 1
        self._move(event, AgentState.RESTARTING, now, f"{reason}; restart in {delay:.3g}s")
        if delay <= 0:
            return self._spawn_again(Event.BACKOFF_ELAPSED, now, "immediate restart")
        self.deadline = now + delay
        return []

    def _spawn_again(self, event: Event, now: float, reason: str) -> list[Action]:
        self.deadline = None
        self.restart_count += 1
        self.last_restart_at = now
        self._move(event, AgentState.STARTING, now, reason)
        return [Spawn()]

    def _move(self, event: Event, target: AgentState, now: float, reason: str) -> None:
        old = self.state
        self.state = transition(old, event, target)
        if target is not old:
            self.changes.append(StateChange(old, target, event, reason, now))
