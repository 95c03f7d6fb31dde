"""The per-agent supervision decisions, as a pure state machine (sans-IO).

Theory of operation
-------------------
:class:`AgentMachine` is told what happened (a request from a user, a process spawned or
exited, a health verdict, time passing) and answers with the actions the IO shell must
perform: :class:`Spawn` a process or :class:`Kill` the current one. It never touches a
process, a clock or a file: every method takes ``now`` (Trio's monotonic clock in the
shell, any float in tests), and the one random number it needs comes from an injected
source. The lifecycle table in :mod:`supervisor._lifecycle` checks every state change,
and the restart policy there (:func:`~supervisor._lifecycle.decide_exit` and its table)
decides every exit: this module only tells it how the run ended and carries out the
decision.

How a run ends is known from what the machine asked for: a :class:`Kill` is sent for a
reason (a stop, a manual restart, an unhealthy verdict), remembered until the exit; an
exit without a kill in flight is the process's own.

Timers are data: :attr:`AgentMachine.deadline` is the next moment at which :meth:`tick`
has something to do (a start becoming confirmed after ``start_seconds``, or a backoff delay
ending), and it is set exactly when one of these is pending. The shell sleeps until then,
or until something else happens.

The protocol with the shell: after a :class:`Spawn`, report :meth:`~AgentMachine.spawned`
or :meth:`~AgentMachine.spawn_failed` before anything else but :meth:`~AgentMachine.hold`
and :meth:`~AgentMachine.release`; after a :class:`Kill`, report
:meth:`~AgentMachine.exited` once the process is gone (requests may come in meanwhile).
A Spawn is only ever asked for with no process alive and the agent ``starting``.

While restarts are held (:meth:`AgentMachine.hold`, an update's trial), nothing restarts
automatically: an exit is final, an unhealthy verdict kills nothing, and a backoff delay
being waited out is suspended until :meth:`AgentMachine.release`. Manual requests still
work: whoever holds the agent decides what comes next.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from ._errors import InvalidTransitionError
from ._lifecycle import (
    AgentState,
    Ending,
    Event,
    Outcome,
    decide_exit,
    ending_of_exit,
    policy_restarts,
    transition,
)
from ._spec import RestartSpec

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


@dataclass(slots=True)
class AgentMachine:
    """Supervision decisions for one agent.

    Args:
        restart: The restart policy and backoff settings.
        start_seconds_s: Uptime after which a start counts as successful.
        draw: Source of random numbers in ``[0, 1)`` for the backoff jitter.

    Attributes:
        state: The lifecycle state.
        pid: The live process, if any.
        started_at: When the current (or last) process started.
        deadline: When :meth:`tick` has something to do, if anything is pending.
        consecutive: Automatic restarts in a row (reset by a stable run or a manual
            start or restart).
        restart_count: Restarts made (automatic and manual), for the status.
        last_restart_at: When the last restart spawned.
        last_exit: How the last process ended.
        last_error: Why the agent last failed or was restarted.
        changes: State changes not yet taken by :meth:`drain_changes`.
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
    changes: list[StateChange] = field(default_factory=list)
    # Why the Kill in flight was sent; None when the process (if any) was not asked to go.
    _killing_for: Ending | None = field(default=None, init=False, repr=False)
    _held: bool = field(default=False, init=False, repr=False)
    # The deadline of a backoff suspended by a hold, restored on release.
    _resume_at: float | None = field(default=None, init=False, repr=False)

    # -- queries ------------------------------------------------------------------

    @property
    def next_restart_at(self) -> float | None:
        """When the pending automatic restart will happen, if one is scheduled."""
        if self.state is AgentState.RESTARTING and self.pid is None:
            return self.deadline
        return None

    @property
    def hold_restarts(self) -> bool:
        """Whether automatic restarts are held (see :meth:`hold`).

        Setting it is the same as calling :meth:`hold` or :meth:`release`, except that
        a restart due at once on release waits for the next :meth:`tick`. Either way the
        deadline may change, so the shell must look at it again afterwards.
        """
        return self._held

    @hold_restarts.setter
    def hold_restarts(self, value: bool) -> None:
        if value:
            self._suspend()
        else:
            self._resume()

    def drain_changes(self) -> list[StateChange]:
        """Return and forget the state changes recorded since the last call."""
        changes, self.changes = self.changes, []
        return changes

    def update_settings(self, restart: RestartSpec, start_seconds_s: float) -> None:
        """Apply changed restart settings to a live agent (a reload without restart).

        A smaller ``max_retries`` clamps the count of restarts in a row, so the budget
        is never over-spent: the next automatic restart then fails the agent.
        """
        self.restart = restart
        self.start_seconds_s = start_seconds_s
        if restart.max_retries >= 0:
            self.consecutive = min(self.consecutive, restart.max_retries)

    # -- requests -----------------------------------------------------------------

    def request_start(self, now: float) -> list[Action]:
        """A user asked for the agent to run. Clears ``failed`` and the retry count.

        Raises:
            InvalidTransitionError: the agent is stopping (a named refusal).
        """
        state = self.state
        if state in (AgentState.STARTING, AgentState.RUNNING):
            self._move(Event.START, state, now, "already started")
            return []
        if self.pid is not None:  # restarting (refused while stopping): after the exit
            self._move(Event.START, state, now, "start after old process exits")
            self._killing_for = Ending.RESTART_REQUESTED
            return []
        self._move(Event.START, AgentState.STARTING, now, "start requested")
        self.consecutive = 0
        self.deadline = None
        return [Spawn()]

    def request_stop(self, now: float, *, graceful: bool = True) -> list[Action]:
        """A user asked for the agent to stop."""
        state = self.state
        if state is AgentState.STOPPING:
            self._move(Event.STOP, state, now, "already stopping")
            return [] if graceful else [Kill(graceful=False)]
        if self.pid is None:
            # Nothing runs: stopped, failed, or waiting out a backoff delay.
            self._move(Event.STOP, AgentState.STOPPED, now, "stop requested")
            self.deadline = None
            return []
        self._move(Event.STOP, AgentState.STOPPING, now, "stop requested")
        self.deadline = None
        self._killing_for = Ending.STOP_REQUESTED
        return [Kill(graceful=graceful)]

    def request_restart(self, now: float) -> list[Action]:
        """A user asked for a restart: stop the process if any, then start at once.

        Raises:
            InvalidTransitionError: the agent is stopping (a named refusal).
        """
        if self.pid is not None:
            self._move(Event.RESTART, AgentState.RESTARTING, now, "restart requested")
            already_killing = self._killing_for is not None
            self._killing_for = Ending.RESTART_REQUESTED
            self.deadline = None
            return [] if already_killing else [Kill(graceful=True)]
        actions = self._spawn_again(Event.RESTART, now, "restart requested")
        self.consecutive = 0
        return actions

    def hold(self, now: float) -> list[Action]:
        """Hold automatic restarts (an update's trial); a pending backoff is suspended."""
        self._suspend()
        return []

    def release(self, now: float) -> list[Action]:
        """End the hold: a suspended backoff resumes, and fires now if it is due."""
        self._resume()
        return self.tick(now)

    # -- facts ------------------------------------------------------------------

    def spawned(self, now: float, pid: int) -> list[Action]:
        """The process was created with this PID.

        Raises:
            InvalidTransitionError: no spawn was asked for (or a process already lives).
        """
        if self.pid is not None:
            raise InvalidTransitionError(self.state.value, Event.SPAWNED.value)
        if self.start_seconds_s <= 0:
            self._move(Event.SPAWNED, AgentState.RUNNING, now, f"started (pid {pid})")
            self.deadline = None
        else:
            self._move(Event.SPAWNED, AgentState.STARTING, now, f"spawned (pid {pid})")
            self.deadline = now + self.start_seconds_s
        self.pid = pid
        self.started_at = now
        return []

    def spawn_failed(self, now: float, error: str) -> list[Action]:
        """The process could not be created (missing binary, permissions, ...).

        Raises:
            InvalidTransitionError: no spawn was asked for.
        """
        if self.state is not AgentState.STARTING or self.pid is not None:
            raise InvalidTransitionError(self.state.value, Event.SPAWN_FAILED.value)
        what = f"spawn failed: {error}"
        return self._ended(Event.SPAWN_FAILED, Ending.SPAWN_FAILED, now, what, None)

    def confirm_start(self, now: float) -> list[Action]:
        """The agent reported itself ready (sd_notify READY=1) before ``start_seconds``."""
        if self.state is AgentState.STARTING and self.pid is not None:
            self.deadline = None
            self._move(Event.START_CONFIRMED, AgentState.RUNNING, now, "reported ready")
        return []

    def adopted(self, now: float, pid: int, uptime_s: float) -> list[Action]:
        """A process left running by an earlier daemon is now supervised again.

        Raises:
            InvalidTransitionError: the agent is not stopped (a named refusal).
        """
        started_at = now - uptime_s
        if uptime_s >= self.start_seconds_s:
            self._move(Event.ADOPTED, AgentState.RUNNING, now, f"adopted (pid {pid})")
        else:
            self._move(Event.ADOPTED, AgentState.STARTING, now, f"adopted (pid {pid})")
            self.deadline = started_at + self.start_seconds_s
        self.pid = pid
        self.started_at = started_at
        return []

    def exited(self, now: float, status: ExitStatus) -> list[Action]:
        """The process was seen to exit.

        Raises:
            InvalidTransitionError: there is no process.
        """
        if self.pid is None:
            raise InvalidTransitionError(self.state.value, Event.EXITED.value)
        ending = self._killing_for or ending_of_exit(self.state, status.success)
        uptime = now - self.started_at if self.started_at is not None else 0.0
        what = status.describe()
        if ending is Ending.EXITED_DURING_START:
            limit = self.start_seconds_s
            what = f"{what} after {uptime:.3g}s, during start (start_seconds {limit:g})"
        elif ending is Ending.KILLED_UNHEALTHY:
            what = self.last_error or "unhealthy"
        self.pid = None
        self.last_exit = status
        return self._ended(Event.EXITED, ending, now, what, uptime)

    def unhealthy(self, now: float, reason: str) -> list[Action]:
        """A health check asks for recovery; the restart policy decides how."""
        if self.pid is None or self.state not in (AgentState.STARTING, AgentState.RUNNING):
            return []  # a verdict about a process that is already going away
        self.last_error = reason
        if not policy_restarts(Ending.KILLED_UNHEALTHY, self.restart.policy, held=self._held):
            return []
        self._move(Event.UNHEALTHY, AgentState.RESTARTING, now, reason)
        self._killing_for = Ending.KILLED_UNHEALTHY
        self.deadline = None
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

    def _ended(
        self, event: Event, ending: Ending, now: float, what: str, uptime_s: float | None
    ) -> list[Action]:
        """Carry out the restart policy's decision about a run that ended."""
        decision = decide_exit(
            ending,
            self.restart,
            held=self._held,
            consecutive=self.consecutive,
            uptime_s=uptime_s,
            what=what,
            draw=self.draw(),
        )
        self.deadline = None
        self._killing_for = None
        self.consecutive = decision.consecutive
        if decision.error is not None:
            self.last_error = decision.error
        if decision.outcome is Outcome.RESTART_NOW:
            return self._spawn_again(event, now, decision.reason)
        self._move(event, decision.target, now, decision.reason)
        if decision.outcome is not Outcome.RESTART_BACKOFF:
            return []
        if decision.delay_s <= 0:
            return self._spawn_again(Event.BACKOFF_ELAPSED, now, "immediate restart")
        self.deadline = now + decision.delay_s
        return []

    def _spawn_again(self, event: Event, now: float, reason: str) -> list[Action]:
        self._move(event, AgentState.STARTING, now, reason)
        self.deadline = None
        self.restart_count += 1
        self.last_restart_at = now
        return [Spawn()]

    def _suspend(self) -> None:
        self._held = True
        if self.next_restart_at is not None:
            self._resume_at, self.deadline = self.deadline, None

    def _resume(self) -> None:
        self._held = False
        if self._resume_at is not None:
            self.deadline, self._resume_at = self._resume_at, None

    def _move(self, event: Event, target: AgentState, now: float, reason: str) -> None:
        """Check the step against the table (raising before any change), then take it."""
        old = self.state
        self.state = transition(old, event, target)
        if target is not old:
            self._resume_at = None  # a suspended backoff belongs to the state it was in
            self.changes.append(StateChange(old, target, event, reason, now))
