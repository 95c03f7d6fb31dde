"""The agent lifecycle as a table: which event may move an agent from which state to which.

Theory of operation
-------------------
Rule 1: every legal transition lives in :data:`TRANSITIONS`; nothing else in the package
changes an agent's state without going through :func:`transition`, which raises
:class:`~supervisor.InvalidTransitionError` for anything the table does not list.

Rule 2: the table says what is *allowed*; it does not decide. Some events have several
allowed outcomes (a process exit may lead to a restart, to ``failed`` or to ``stopped``);
the restart policy in :mod:`supervisor._machine` chooses one and this module checks it.

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

from ._errors import InvalidTransitionError

__all__ = ["TRANSITIONS", "AgentState", "Event", "is_active", "transition"]


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
            with this ``target``.
    """
    allowed = TRANSITIONS[state].get(event)
    if allowed is None:
        raise InvalidTransitionError(state.value, event.value)
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
