"""The lifecycle table, its named refusals, and the restart policy table beside it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

import supervisor
from supervisor import (
    AgentState,
    Event,
    InvalidTransitionError,
    RestartPolicy,
    RestartSpec,
    backoff_delay,
    transition,
)
from supervisor._lifecycle import (
    EXIT_RULES,
    REFUSALS,
    TRANSITIONS,
    Ending,
    Mode,
    Outcome,
    decide_exit,
    is_active,
    policy_restarts,
)

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


# -- refusals --------------------------------------------------------------------------

REQUESTS = (Event.START, Event.STOP, Event.RESTART, Event.ADOPTED)


@pytest.mark.parametrize("state", list(AgentState))
def test_every_request_is_allowed_or_refused_by_name(state: AgentState) -> None:
    """In every state, each request is either in the table or a named refusal, never both."""
    for event in REQUESTS:
        allowed = event in TRANSITIONS[state]
        refused = event in REFUSALS.get(state, {})
        assert allowed != refused, (state, event)


def test_refusal_carries_its_reason() -> None:
    """A refused request raises InvalidTransitionError with the reason as a note."""
    with pytest.raises(InvalidTransitionError, match="start while stopping") as info:
        transition(AgentState.STOPPING, Event.START, AgentState.STARTING)
    assert info.value.__notes__ == [REFUSALS[AgentState.STOPPING][Event.START]]


def test_nothing_leads_from_stopping_to_starting() -> None:
    """No event moves a stopping agent to starting, and only a manual request leaves failed
    for starting: nothing spawns while stopping or failed."""
    assert all(AgentState.STARTING not in t for t in TRANSITIONS[AgentState.STOPPING].values())
    into_starting = {
        e for e, targets in TRANSITIONS[AgentState.FAILED].items() if AgentState.STARTING in targets
    }
    assert into_starting == {Event.START, Event.RESTART}


# -- the restart policy --------------------------------------------------------------

#: Where each ending happens, and the event that reports it.
WHERE: dict[Ending, tuple[AgentState, Event]] = {
    Ending.STOP_REQUESTED: (AgentState.STOPPING, Event.EXITED),
    Ending.RESTART_REQUESTED: (AgentState.RESTARTING, Event.EXITED),
    Ending.KILLED_UNHEALTHY: (AgentState.RESTARTING, Event.EXITED),
    Ending.EXITED_DURING_START: (AgentState.STARTING, Event.EXITED),
    Ending.EXITED_WITH_FAILURE: (AgentState.RUNNING, Event.EXITED),
    Ending.EXITED_CLEANLY: (AgentState.RUNNING, Event.EXITED),
    Ending.SPAWN_FAILED: (AgentState.STARTING, Event.SPAWN_FAILED),
}

specs = st.builds(
    RestartSpec,
    policy=st.sampled_from(RestartPolicy),
    max_retries=st.integers(min_value=-1, max_value=5),
    backoff_base_s=st.floats(min_value=0, max_value=100),
    backoff_max_s=st.floats(min_value=0, max_value=600),
    reset_after_s=st.floats(min_value=0, max_value=1000),
)
uptimes = st.one_of(st.none(), st.floats(min_value=0, max_value=2000))
draws = st.floats(min_value=0, max_value=1, exclude_max=True)


def test_exit_rules_cover_every_case() -> None:
    """The policy table has a rule for every ending under every column."""
    assert set(EXIT_RULES) == set(Ending) == set(WHERE)
    for row in EXIT_RULES.values():
        assert set(row) == set(Mode)


@given(st.sampled_from(Ending), specs, st.booleans(), st.integers(0, 6), uptimes, draws)
def test_decisions_are_legal_steps(
    ending: Ending,
    spec: RestartSpec,
    held: bool,
    consecutive: int,
    uptime: float | None,
    draw: float,
) -> None:
    """Every decision is a step the lifecycle table allows from where the ending happens."""
    decision = decide_exit(
        ending, spec, held=held, consecutive=consecutive, uptime_s=uptime, what="x", draw=draw
    )
    state, event = WHERE[ending]
    assert transition(state, event, decision.target) is decision.target
    if decision.outcome is Outcome.RESTART_BACKOFF and decision.delay_s <= 0:
        transition(AgentState.RESTARTING, Event.BACKOFF_ELAPSED, AgentState.STARTING)


@given(st.sampled_from(Ending), specs, st.booleans(), st.integers(0, 6), uptimes, draws)
def test_decisions_keep_the_policy(
    ending: Ending,
    spec: RestartSpec,
    held: bool,
    consecutive: int,
    uptime: float | None,
    draw: float,
) -> None:
    """Only a manual restart restarts while held or under never; the budget is never
    overspent; a stable run or a manual restart resets the count; failing says why."""
    d = decide_exit(
        ending, spec, held=held, consecutive=consecutive, uptime_s=uptime, what="x", draw=draw
    )
    manual = ending is Ending.RESTART_REQUESTED
    if held or spec.policy is RestartPolicy.NEVER:
        assert d.outcome is not Outcome.RESTART_BACKOFF
    assert (d.outcome is Outcome.RESTART_NOW) == manual
    stable = uptime is not None and uptime >= spec.reset_after_s
    before = 0 if stable or manual else consecutive
    if d.outcome is Outcome.RESTART_BACKOFF:
        assert d.consecutive == before + 1
        assert spec.max_retries < 0 or d.consecutive <= spec.max_retries
        expected = backoff_delay(before, spec.backoff_base_s, spec.backoff_max_s, draw)
        assert d.delay_s == expected and d.error == "x"
    else:
        assert d.consecutive == before and d.delay_s == 0
    if d.outcome is Outcome.FAILED:
        assert d.error == d.reason and d.reason.startswith("x; ")
    if ending is Ending.STOP_REQUESTED:
        assert d.outcome is Outcome.STOPPED and d.error is None


@pytest.mark.parametrize(
    ("ending", "policy", "expected"),
    [
        (Ending.EXITED_CLEANLY, RestartPolicy.ALWAYS, Outcome.RESTART_BACKOFF),
        (Ending.EXITED_CLEANLY, RestartPolicy.ON_FAILURE, Outcome.STOPPED),
        (Ending.EXITED_DURING_START, RestartPolicy.ON_FAILURE, Outcome.RESTART_BACKOFF),
        (Ending.EXITED_WITH_FAILURE, RestartPolicy.NEVER, Outcome.FAILED),
        (Ending.SPAWN_FAILED, RestartPolicy.ON_FAILURE, Outcome.RESTART_BACKOFF),
        (Ending.KILLED_UNHEALTHY, RestartPolicy.NEVER, Outcome.FAILED),
    ],
)
def test_policy_examples(ending: Ending, policy: RestartPolicy, expected: Outcome) -> None:
    """A few cells of the table, spelled out: during start a clean exit is a failure."""
    d = decide_exit(
        ending, RestartSpec(policy), held=False, consecutive=0, uptime_s=1, what="x", draw=0
    )
    assert d.outcome is expected


def test_spent_budget_fails_with_the_count() -> None:
    """With max_retries restarts made, the next automatic one gives up and says so."""
    d = decide_exit(
        Ending.EXITED_WITH_FAILURE,
        RestartSpec(max_retries=2),
        held=False,
        consecutive=2,
        uptime_s=1,
        what="exited with status 1",
        draw=0,
    )
    assert d.outcome is Outcome.FAILED and d.consecutive == 2
    assert d.reason == "exited with status 1; gave up after 2 restart(s) in a row"


def test_unhealthy_verdicts_follow_the_table() -> None:
    """An unhealthy verdict kills only where the table would restart afterwards."""
    assert policy_restarts(Ending.KILLED_UNHEALTHY, RestartPolicy.ON_FAILURE, held=False)
    assert not policy_restarts(Ending.KILLED_UNHEALTHY, RestartPolicy.NEVER, held=False)
    assert not policy_restarts(Ending.KILLED_UNHEALTHY, RestartPolicy.ALWAYS, held=True)


# -- fitness -------------------------------------------------------------------------

PURE = ("_lifecycle", "_machine", "_backoff", "_registry")
BANNED = {"trio", "os", "socket"}


def _imports(module: str) -> tuple[set[str], set[str]]:
    """The top-level outside packages and the sibling modules a supervisor module imports."""
    path = Path(supervisor.__file__).parent / f"{module}.py"
    outside: set[str] = set()
    siblings: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            outside.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                outside.add(node.module.split(".")[0])
            elif node.level == 1 and node.module:
                siblings.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import _x
                siblings.update(alias.name for alias in node.names)
    return outside, siblings


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_do_no_io(module: str) -> None:
    """A pure module imports no trio, os or socket, not even through its siblings."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        outside, siblings = _imports(name)
        assert not outside & BANNED, (name, outside & BANNED)
        todo.extend(siblings)
