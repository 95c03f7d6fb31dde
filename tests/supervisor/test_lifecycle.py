"""The lifecycle table: every listed step is accepted, everything else is refused."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from supervisor import AgentState, Event, InvalidTransitionError, transition
from supervisor._lifecycle import TRANSITIONS, is_active

states = st.sampled_from(AgentState)
events = st.sampled_from(Event)


@given(states, events, states)
def test_table_is_the_only_authority(state: AgentState, event: Event, target: AgentState) -> None:
    """A transition succeeds exactly when the table lists the target for that event."""
    allowed = TRANSITIONS[state].get(event, frozenset())
    if target in allowed:
        assert transition(state, event, target) is target
    else:
        with pytest.raises(InvalidTransitionError) as info:
            transition(state, event, target)
        assert info.value.state == state.value
        assert info.value.event == event.value


def test_every_state_has_a_row() -> None:
    """The table covers every state, and every state can be left or stopped."""
    assert set(TRANSITIONS) == set(AgentState)
    for state, row in TRANSITIONS.items():
        assert Event.STOP in row, state


def test_no_spawn_while_stopping_or_failed() -> None:
    """Nothing is spawned while stopping, and only a manual request leaves failed."""
    assert Event.SPAWNED not in TRANSITIONS[AgentState.STOPPING]
    assert set(TRANSITIONS[AgentState.FAILED]) == {Event.START, Event.RESTART, Event.STOP}
    assert Event.BACKOFF_ELAPSED not in TRANSITIONS[AgentState.FAILED]


def test_error_names_the_step() -> None:
    """The error message says which event was refused in which state."""
    with pytest.raises(InvalidTransitionError, match="exited while stopped"):
        transition(AgentState.STOPPED, Event.EXITED, AgentState.STOPPED)
    with pytest.raises(InvalidTransitionError, match="start to failed while running"):
        transition(AgentState.RUNNING, Event.START, AgentState.FAILED)


def test_active_states() -> None:
    """Only stopped and failed agents have no process now or soon."""
    inactive = {s for s in AgentState if not is_active(s)}
    assert inactive == {AgentState.STOPPED, AgentState.FAILED}
