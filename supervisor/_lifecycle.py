"""The agent lifecycle and the restart policy, as tables.

Theory of operation
-------------------
Rule 1: every legal transition lives in :data:`TRANSITIONS`; nothing else in the package
changes an agent's state without going through :func:`transition`, which raises
:class:`~supervisor.InvalidTransitionError` for anything the table does not list.

Rule 2: the lifecycle table says what is *allowed*; it does not decide. Some events have
several allowed outcomes (a process exit may lead to a restart, to ``failed`` or to
``stopped``). What happens after a process is gone is decided by one pure function,
:func:`decide_exit`, driven by one table, :data:`EXIT_RULES`, below: the whole restart
policy reads there (see "The restart policy").

Rule 3: a request the lifecycle refuses is refused *by name*: :data:`REFUSALS` gives the
reason for each ``(state, request)`` pair that is left out of :data:`TRANSITIONS` on
purpose (a START or RESTART while STOPPING, an adoption by an agent that is not stopped).
Any other missing pair is a fact that cannot happen (an exit without a process), so
reporting it is a bug in the caller. Both raise ``InvalidTransitionError``; a refusal
carries its reason as a note.

Rule 4: a process is spawned only on a move *into* ``starting``, and that move leaves
``stopped``, ``failed`` (manual requests only) or ``restarting`` (once the old process has
gone). Nothing leads from ``stopping`` to ``starting``, so nothing spawns while stopping or
failed, and there is at most one live process per agent.

The states are the seed's ``AgentStatus`` values (004 section 3.5.1):

``stopped``     no process, nothing scheduled.
``starting``    a process was spawned and has not yet proven itself (``start_seconds``).
``running``     the process has been up for ``start_seconds`` (or was adopted as such).
``stopping``    the process was asked to stop and has not exited yet.
``restarting``  the agent will be started again: waiting out a backoff delay, or waiting
                for the old process to exit during a manual or health-triggered restart.
``failed``      automatic restarts gave up (or the policy forbids them after a crash);
                a manual start clears it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from ._backoff import backoff_delay
from ._errors import InvalidTransitionError
from ._spec import RestartPolicy, RestartSpec

__all__ = [
    "EXIT_RULES",
    "REFUSALS",
    "TRANSITIONS",
    "AgentState",
    "Ending",
    "Event",
    "ExitDecision",
    "Mode",
    "Outcome",
    "Rule",
    "decide_exit",
    "ending_of_exit",
    "is_active",
    "policy_restarts",
    "transition",
]


class AgentState(enum.Enum):
    """The seed's agent states; the value is the wire string."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    RESTARTING = "restarting"
    FAILED = "failed"


class Event(enum.Enum):
    """Things that happen to an agent; past tense for facts, imperative for requests."""

    START = "start"  # a manual start was requested
    STOP = "stop"  # a manual stop was requested
    RESTART = "restart"  # a manual restart was requested
    SPAWNED = "spawned"  # the process was created
    SPAWN_FAILED = "spawn_failed"  # the process could not be created
    START_CONFIRMED = "start_confirmed"  # up for start_seconds (or reported ready)
    EXITED = "exited"  # the process was seen to exit
    BACKOFF_ELAPSED = "backoff_elapsed"  # the restart delay is over
    UNHEALTHY = "unhealthy"  # a health check asked for recovery
    ADOPTED = "adopted"  # a process left by a previous daemon was taken over


S = AgentState
E = Event

TRANSITIONS: Mapping[AgentState, Mapping[Event, frozenset[AgentState]]] = {
    S.STOPPED: {
        E.START: frozenset({S.STARTING}),
        E.RESTART: frozenset({S.STARTING}),
        E.STOP: frozenset({S.STOPPED}),
        E.ADOPTED: frozenset({S.STARTING, S.RUNNING}),
    },
    S.STARTING: {
        E.SPAWNED: frozenset({S.STARTING, S.RUNNING}),
        E.SPAWN_FAILED: frozenset({S.RESTARTING, S.FAILED}),
        E.START_CONFIRMED: frozenset({S.RUNNING}),
        E.EXITED: frozenset({S.RESTARTING, S.FAILED, S.STOPPED}),
        E.START: frozenset({S.STARTING}),
        E.STOP: frozenset({S.STOPPING, S.STOPPED}),
        E.RESTART: frozenset({S.RESTARTING}),
        E.UNHEALTHY: frozenset({S.RESTARTING}),
    },
    S.RUNNING: {
        E.EXITED: frozenset({S.RESTARTING, S.FAILED, S.STOPPED}),
        E.START: frozenset({S.RUNNING}),
        E.STOP: frozenset({S.STOPPING}),
        E.RESTART: frozenset({S.RESTARTING}),
        E.UNHEALTHY: frozenset({S.RESTARTING}),
    },
    S.STOPPING: {
        E.EXITED: frozenset({S.STOPPED}),
        E.STOP: frozenset({S.STOPPING}),
        # START and RESTART are refused: see REFUSALS.
    },
    S.RESTARTING: {
        E.BACKOFF_ELAPSED: frozenset({S.STARTING}),
        E.EXITED: frozenset({S.RESTARTING, S.STARTING, S.FAILED}),
        E.START: frozenset({S.STARTING, S.RESTARTING}),
        E.RESTART: frozenset({S.STARTING, S.RESTARTING}),
        E.STOP: frozenset({S.STOPPED, S.STOPPING}),
    },
    S.FAILED: {
        E.START: frozenset({S.STARTING}),
        E.RESTART: frozenset({S.STARTING}),
        E.STOP: frozenset({S.STOPPED}),
    },
}

# Why a START or RESTART during a stop is refused rather than queued: the stop is a
# promise to whoever asked for it (an updater stops an agent to swap its binary), and a
# start racing it must not silently undo it. The caller waits for ``stopped`` and asks
# again. ADOPTED is refused unless stopped, because an agent has at most one process.
_STOPPING = "the agent is stopping; ask again once it has stopped"
_ONE_PROCESS = "only a stopped agent adopts a process (at most one process per agent)"

#: The requests refused on purpose, with the reason given to the caller.
REFUSALS: Mapping[AgentState, Mapping[Event, str]] = {
    S.STOPPING: {E.START: _STOPPING, E.RESTART: _STOPPING, E.ADOPTED: _ONE_PROCESS},
    S.STARTING: {E.ADOPTED: _ONE_PROCESS},
    S.RUNNING: {E.ADOPTED: _ONE_PROCESS},
    S.RESTARTING: {E.ADOPTED: _ONE_PROCESS},
    S.FAILED: {E.ADOPTED: _ONE_PROCESS},
}

del S, E


def transition(state: AgentState, event: Event, target: AgentState) -> AgentState:
    """Check one step of the lifecycle and return the new state.

    Args:
        state: The current state.
        event: What happened.
        target: The state the caller's policy chose.

    Returns:
        ``target``, when the table allows it.

    Raises:
        InvalidTransitionError: the table does not allow ``event`` in ``state``, or not
            with this ``target``. A request refused on purpose (see :data:`REFUSALS`)
            carries the reason as a note.
    """
    allowed = TRANSITIONS[state].get(event)
    if allowed is None:
        error = InvalidTransitionError(state.value, event.value)
        refusal = REFUSALS.get(state, {}).get(event)
        if refusal is not None:
            error.add_note(refusal)
        raise error
    if target not in allowed:
        raise InvalidTransitionError(state.value, event.value, target.value)
    return target


def is_active(state: AgentState) -> bool:
    """Whether an agent in ``state`` has, or is about to have, a process."""
    return state in (
        AgentState.STARTING,
        AgentState.RUNNING,
        AgentState.STOPPING,
        AgentState.RESTARTING,
    )


# -- The restart policy ---------------------------------------------------------------
#
# Theory of operation. When an agent's process is gone (it exited, it was killed, or it
# could not be spawned), three questions are asked, in this order:
#
# 1. How did the run end? (:class:`Ending`.) An exit the supervisor caused is named after
#    its reason: a requested stop, a requested restart (or a start during a restart), an
#    unhealthy verdict. Any other exit is the process's own: during ``start_seconds`` it
#    is a failed start whatever its status ("during start = failure"); after that, status
#    0 is clean and anything else (a status, a signal, unknown) is a failure. A spawn that
#    created no process is its own ending.
# 2. Which column applies? (:class:`Mode`.) The configured policy (``always``,
#    ``on-failure``, ``never``), unless restarts are held (an update's trial): then the
#    ``held`` column applies, which behaves like ``never`` ("hold = never"), so whoever
#    holds the agent decides what comes next.
# 3. What does the cell say? (:data:`EXIT_RULES`.) Stop, fail, restart now (only for a
#    manual restart: not counted, no delay, the count starts afresh), or restart with
#    backoff (automatic). Automatic restarts are budgeted: a run that lasted
#    ``reset_after`` resets the count of restarts in a row; with ``max_retries`` of them
#    already made (``-1``: no limit), the agent gives up and is ``failed``; otherwise the
#    n-th restart in a row waits ``backoff_delay(n - 1)``, which is 0 for the first one
#    (so a single crash restarts at once) and then grows to ``backoff_max``.
#
# An unhealthy verdict asks the same table before it kills anything: the process is
# stopped only when the KILLED_UNHEALTHY cell would restart it (:func:`policy_restarts`);
# a verdict under ``never`` or while held kills nothing.


class Ending(enum.Enum):
    """How a run of the agent's process ended, as the restart policy sees it."""

    STOP_REQUESTED = "stop requested"  # killed because a stop was asked for
    RESTART_REQUESTED = "restart requested"  # killed for a manual restart (or start)
    KILLED_UNHEALTHY = "killed unhealthy"  # killed on an unhealthy verdict
    EXITED_DURING_START = "exited during start"  # before start_seconds, any status
    EXITED_WITH_FAILURE = "exited with failure"  # non-zero status, a signal, unknown
    EXITED_CLEANLY = "exited cleanly"  # status 0 after start_seconds
    SPAWN_FAILED = "spawn failed"  # no process was created


class Mode(enum.Enum):
    """A column of :data:`EXIT_RULES`: the configured policy, or the hold overriding it."""

    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"
    HELD = "held"

    @classmethod
    def of(cls, policy: RestartPolicy, *, held: bool) -> Mode:
        """The column for ``policy``; ``HELD`` whenever restarts are held."""
        return cls.HELD if held else cls(RestartPolicy(policy).value)


class Outcome(enum.Enum):
    """What happens after a process is gone."""

    STOPPED = "stopped"  # nothing more: the agent is stopped
    FAILED = "failed"  # nothing more, and it is an error: a manual start clears it
    RESTART_NOW = "restart now"  # manual restart: spawn at once, count starts afresh
    RESTART_BACKOFF = "restart with backoff"  # automatic: budgeted, delayed after the first


@dataclass(frozen=True, slots=True)
class Rule:
    """One cell of :data:`EXIT_RULES`.

    Attributes:
        outcome: What to do.
        template: The reason, formatted with ``what`` (the ending described), ``why``
            (the column in words) and, for a restart, ``delay_s``.
    """

    outcome: Outcome
    template: str


_STOP = Rule(Outcome.STOPPED, "stopped: {what}")
_RESTART = Rule(Outcome.RESTART_NOW, "restarting: {what}")
_BACKOFF = Rule(Outcome.RESTART_BACKOFF, "{what}; restart in {delay_s:.3g}s")
_DONE = Rule(Outcome.STOPPED, "{what}; {why}")
_GIVE_UP = Rule(Outcome.FAILED, "{what}; {why}")
#: The reason when a RESTART_BACKOFF cell meets a spent budget.
_EXHAUSTED = "{what}; gave up after {count} restart(s) in a row"

_WHY: Mapping[Mode, str] = {
    Mode.ALWAYS: "restart policy is always",
    Mode.ON_FAILURE: "restart policy is on-failure",
    Mode.NEVER: "restart policy is never",
    Mode.HELD: "automatic restarts are on hold",
}


def _row(always: Rule, on_failure: Rule, never: Rule, held: Rule) -> Mapping[Mode, Rule]:
    return {Mode.ALWAYS: always, Mode.ON_FAILURE: on_failure, Mode.NEVER: never, Mode.HELD: held}


# The cells: _STOP, the stop that was asked for; _RESTART, the restart that was asked for
# (at once, not counted); _BACKOFF, an automatic restart (budgeted, delayed after the
# first in a row); _DONE, stopped because the column does not restart a clean exit;
# _GIVE_UP, failed because the column does not restart this ending at all.

#: The restart policy: for each ending and column, what happens next.
EXIT_RULES: Mapping[Ending, Mapping[Mode, Rule]] = {
    #                               always     on-failure  never     held
    Ending.STOP_REQUESTED:      _row(_STOP,     _STOP,      _STOP,    _STOP),
    Ending.RESTART_REQUESTED:   _row(_RESTART,  _RESTART,   _RESTART, _RESTART),
    Ending.KILLED_UNHEALTHY:    _row(_BACKOFF,  _BACKOFF,   _GIVE_UP, _GIVE_UP),
    Ending.EXITED_DURING_START: _row(_BACKOFF,  _BACKOFF,   _GIVE_UP, _GIVE_UP),
    Ending.EXITED_WITH_FAILURE: _row(_BACKOFF,  _BACKOFF,   _GIVE_UP, _GIVE_UP),
    Ending.EXITED_CLEANLY:      _row(_BACKOFF,  _DONE,      _DONE,    _DONE),
    Ending.SPAWN_FAILED:        _row(_BACKOFF,  _BACKOFF,   _GIVE_UP, _GIVE_UP),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ExitDecision:
    """What :func:`decide_exit` decided.

    Attributes:
        outcome: What happens next.
        reason: A human-readable explanation, for the state change.
        consecutive: The new count of automatic restarts in a row.
        delay_s: For ``RESTART_BACKOFF``, the delay before the spawn (0: at once).
        error: The agent's new ``last_error``, or None to keep the old one.
    """

    outcome: Outcome
    reason: str
    consecutive: int
    delay_s: float = 0.0
    error: str | None = None

    @property
    def target(self) -> AgentState:
        """The state the ending event moves the agent to."""
        return _TARGETS[self.outcome]


_TARGETS: Mapping[Outcome, AgentState] = {
    Outcome.STOPPED: AgentState.STOPPED,
    Outcome.FAILED: AgentState.FAILED,
    Outcome.RESTART_NOW: AgentState.STARTING,
    Outcome.RESTART_BACKOFF: AgentState.RESTARTING,
}


def ending_of_exit(state: AgentState, success: bool) -> Ending:
    """How an exit the supervisor did not cause ends a run.

    Args:
        state: The agent's state when its process exited (``starting`` or ``running``).
        success: Whether the process exited by itself with status 0.
    """
    if state is AgentState.STARTING:
        return Ending.EXITED_DURING_START
    return Ending.EXITED_CLEANLY if success else Ending.EXITED_WITH_FAILURE


def policy_restarts(ending: Ending, policy: RestartPolicy, *, held: bool) -> bool:
    """Whether :data:`EXIT_RULES` restarts after ``ending`` (budget aside)."""
    outcome = EXIT_RULES[ending][Mode.of(policy, held=held)].outcome
    return outcome in (Outcome.RESTART_NOW, Outcome.RESTART_BACKOFF)


def decide_exit(
    ending: Ending,
    restart: RestartSpec,
    *,
    held: bool,
    consecutive: int,
    uptime_s: float | None,
    what: str,
    draw: float,
) -> ExitDecision:
    """Decide what happens after a run of the agent's process ended.

    Args:
        ending: How the run ended.
        restart: The agent's restart settings (policy, budget, backoff, reset).
        held: Whether automatic restarts are held.
        consecutive: Automatic restarts in a row so far.
        uptime_s: How long the process ran; None when there was no process.
        what: The ending in words (e.g. ``exited with status 1``, an unhealthy verdict).
        draw: A random number in ``[0, 1)`` for the backoff jitter.

    Returns:
        The decision; see :data:`EXIT_RULES` and the theory of operation above.
    """
    mode = Mode.of(restart.policy, held=held)
    rule = EXIT_RULES[ending][mode]
    stable = uptime_s is not None and uptime_s >= restart.reset_after_s
    count = 0 if stable or rule.outcome is Outcome.RESTART_NOW else consecutive
    if rule.outcome is not Outcome.RESTART_BACKOFF:
        reason = rule.template.format(what=what, why=_WHY[mode])
        error = reason if rule.outcome is Outcome.FAILED else None
        return ExitDecision(rule.outcome, reason, count, error=error)
    if 0 <= restart.max_retries <= count:
        reason = _EXHAUSTED.format(what=what, count=count)
        return ExitDecision(Outcome.FAILED, reason, count, error=reason)
    delay = backoff_delay(count, restart.backoff_base_s, restart.backoff_max_s, draw)
    reason = rule.template.format(what=what, why=_WHY[mode], delay_s=delay)
    return ExitDecision(Outcome.RESTART_BACKOFF, reason, count + 1, delay, error=what)
