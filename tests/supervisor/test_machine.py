"""The per-agent decision machine: restart policies, backoff, budget, resets."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from supervisor import (
    AgentMachine,
    AgentState,
    ExitStatus,
    InvalidTransitionError,
    Kill,
    RestartPolicy,
    RestartSpec,
    Spawn,
)

CRASH = ExitStatus(code=1)
CLEAN = ExitStatus(code=0)
KILLED = ExitStatus(signal=9)


def machine(policy: RestartPolicy = RestartPolicy.ALWAYS, **kw: float) -> AgentMachine:
    spec = RestartSpec(
        policy=policy,
        max_retries=int(kw.pop("max_retries", 3)),
        backoff_base_s=kw.pop("base", 10.0),
        backoff_max_s=kw.pop("cap", 60.0),
        reset_after_s=kw.pop("reset_after", 300.0),
    )
    return AgentMachine(spec, start_seconds_s=kw.pop("start_seconds", 1.0), draw=lambda: 0.0)


def has_process(m: AgentMachine) -> bool:
    return m.pid is not None


def run_until_running(m: AgentMachine, now: float, pid: int = 100) -> None:
    assert m.request_start(now) == [Spawn()]
    m.spawned(now, pid)
    m.tick(now + m.start_seconds_s)
    assert m.state is AgentState.RUNNING


def test_start_confirmed_after_start_seconds() -> None:
    """A start counts as successful only after start_seconds of uptime."""
    m = machine(start_seconds=2.0)
    m.request_start(0)
    m.spawned(0, 7)
    assert (m.state, m.deadline) == (AgentState.STARTING, 2.0)
    assert m.tick(1.999) == []
    assert (m.state, m.deadline) == (AgentState.STARTING, 2.0)
    m.tick(2.0)
    assert (m.state, m.deadline) == (AgentState.RUNNING, None)


def test_crash_loop_backs_off_then_fails() -> None:
    """First restart immediate, then base, 2*base..., and failed when the budget is spent."""
    m = machine(max_retries=3, base=10, cap=60)
    run_until_running(m, 0)
    now = 100.0
    assert m.exited(now, CRASH) == [Spawn()]  # immediate
    assert m.state is AgentState.STARTING and m.restart_count == 1
    m.spawned(now, 101)
    assert m.exited(now + 0.5, CRASH) == []  # crashed during start: backoff 10 s
    assert (m.state, m.next_restart_at) == (AgentState.RESTARTING, now + 0.5 + 10)
    assert m.tick(now + 10) == []
    assert m.tick(now + 10.5) == [Spawn()]
    m.spawned(now + 10.5, 102)
    assert m.exited(now + 11, CRASH) == []
    assert m.next_restart_at == now + 11 + 20
    m.tick(now + 31)
    m.spawned(now + 31, 103)
    assert m.exited(now + 31.1, KILLED) == []
    assert (m.state, m.last_exit) == (AgentState.FAILED, KILLED)
    assert "gave up after 3 restart(s)" in (m.last_error or "")
    assert "killed by signal 9 (SIGKILL)" in (m.last_error or "")


def test_manual_start_clears_failed() -> None:
    """A manual start leaves failed and resets the retry budget."""
    m = machine(max_retries=0)
    run_until_running(m, 0)
    m.exited(5, CRASH)
    assert m.state is AgentState.FAILED
    assert m.request_start(6) == [Spawn()]
    assert (m.state, m.consecutive) == (AgentState.STARTING, 0)


def test_stable_run_resets_the_count() -> None:
    """An agent that ran reset_after before crashing restarts immediately again."""
    m = machine(reset_after=300)
    run_until_running(m, 0)
    m.exited(10, CRASH)  # immediate, consecutive 1
    m.spawned(10, 2)
    m.tick(11)
    m.exited(20, CRASH)  # only 10 s up: backoff
    assert m.state is AgentState.RESTARTING
    m.tick(1000)
    m.spawned(1000, 3)
    m.tick(1001)
    assert m.exited(1000 + 300, CRASH) == [Spawn()]  # ran 300 s: count reset, immediate
    assert m.consecutive == 1


@pytest.mark.parametrize(
    ("policy", "status", "expected"),
    [
        (RestartPolicy.ALWAYS, CLEAN, AgentState.STARTING),
        (RestartPolicy.ON_FAILURE, CLEAN, AgentState.STOPPED),
        (RestartPolicy.ON_FAILURE, CRASH, AgentState.STARTING),
        (RestartPolicy.ON_FAILURE, KILLED, AgentState.STARTING),
        (RestartPolicy.NEVER, CLEAN, AgentState.STOPPED),
        (RestartPolicy.NEVER, CRASH, AgentState.FAILED),
    ],
)
def test_policies_after_a_stable_run(
    policy: RestartPolicy, status: ExitStatus, expected: AgentState
) -> None:
    """always restarts after any exit, on-failure after failures, never not at all."""
    m = machine(policy)
    run_until_running(m, 0)
    m.exited(50, status)
    assert m.state is expected


def test_on_failure_restarts_clean_exit_during_start() -> None:
    """An exit during start_seconds is a failed start, even with status 0."""
    m = machine(RestartPolicy.ON_FAILURE)
    m.request_start(0)
    m.spawned(0, 1)
    assert m.exited(0.2, CLEAN) == [Spawn()]
    assert "during start" in (m.last_error or "")


def test_stop_is_not_a_crash() -> None:
    """An exit the supervisor caused never restarts and never counts."""
    m = machine()
    run_until_running(m, 0)
    assert m.request_stop(5) == [Kill(graceful=True)]
    assert m.state is AgentState.STOPPING
    assert m.exited(6, ExitStatus(signal=15)) == []
    assert (m.state, m.consecutive) == (AgentState.STOPPED, 0)


def test_forced_stop_escalates() -> None:
    """A non-graceful stop while a graceful one runs asks for SIGKILL."""
    m = machine()
    run_until_running(m, 0)
    m.request_stop(1)
    assert m.request_stop(2, graceful=False) == [Kill(graceful=False)]


def test_stop_cancels_a_pending_restart() -> None:
    """Stopping an agent that waits out a backoff cancels the restart."""
    m = machine()
    run_until_running(m, 0)
    m.exited(1, CRASH)
    m.spawned(1, 2)
    m.exited(1.1, CRASH)
    assert m.next_restart_at is not None
    assert m.request_stop(2) == []
    assert m.state is AgentState.STOPPED and m.deadline is None
    assert m.tick(10_000) == []


def test_manual_restart_does_not_count() -> None:
    """A manual restart kills, then spawns at once, without using the retry budget."""
    m = machine()
    run_until_running(m, 0)
    assert m.request_restart(5) == [Kill(graceful=True)]
    assert m.state is AgentState.RESTARTING
    assert m.exited(6, ExitStatus(signal=15)) == [Spawn()]
    assert m.consecutive == 0 and m.restart_count == 1


def test_unhealthy_goes_through_the_budget() -> None:
    """An unhealthy verdict stops the process and restarts it with backoff and budget."""
    m = machine(max_retries=1)
    run_until_running(m, 0)
    assert m.unhealthy(10, "heartbeat missing for 90s") == [Kill(graceful=True)]
    assert m.exited(11, ExitStatus(signal=15)) == [Spawn()]
    assert m.last_error == "heartbeat missing for 90s"
    m.spawned(11, 5)
    m.tick(12)
    m.unhealthy(20, "rss over 500MB for 60s")
    m.exited(21, ExitStatus(signal=15))
    assert m.state is AgentState.FAILED
    assert "rss over 500MB" in (m.last_error or "")


def test_adopted_process_is_running_or_starting() -> None:
    """An adopted process counts its uptime from its real start."""
    m = machine(start_seconds=5)
    m.adopted(100, 42, uptime_s=2)
    assert m.state is AgentState.STARTING and m.deadline == 103
    m2 = machine(start_seconds=5)
    m2.adopted(100, 42, uptime_s=60)
    assert m2.state is AgentState.RUNNING


def test_illegal_fact_raises() -> None:
    """A process exit without a process is a named error, not a silent no-op."""
    with pytest.raises(InvalidTransitionError):
        machine().exited(0, CRASH)


@given(
    st.lists(st.sampled_from([CRASH, CLEAN, KILLED]), min_size=1, max_size=40),
    st.integers(min_value=-1, max_value=8),
)
def test_budget_is_never_exceeded(exits: list[ExitStatus], max_retries: int) -> None:
    """Automatic restarts in a row never exceed max_retries (unless it is -1)."""
    m = machine(max_retries=max_retries, base=1, cap=4)
    now = 0.0
    run_until_running(m, now)
    for status in exits:
        if not has_process(m):
            break
        now += 0.5  # crash during start: never stable, never confirmed
        m.exited(now, status)
        if m.state is AgentState.RESTARTING:
            now = m.deadline or now
            m.tick(now)
        if m.state is AgentState.STARTING and not has_process(m):
            m.spawned(now, 1)
        if max_retries >= 0:
            assert m.consecutive <= max_retries


@given(
    st.integers(min_value=0, max_value=8),
    st.floats(min_value=1.0, max_value=1000.0),
    st.floats(min_value=0.0, max_value=2000.0),
)
def test_reset_after_a_stable_run(crashes: int, reset_after: float, uptime: float) -> None:
    """However many crashes came before, a run of reset_after makes the next restart
    immediate, and a shorter run never does (after the first)."""
    m = machine(max_retries=-1, base=1, cap=8, reset_after=reset_after, start_seconds=0)
    now = 0.0
    m.request_start(now)
    m.spawned(now, 1)
    for _ in range(crashes):  # quick crashes build up the count
        now += 0.01
        m.exited(now, CRASH)
        if m.deadline is not None:
            now = m.deadline
            m.tick(now)
        m.spawned(now, 1)
    started = now
    now += uptime
    actions = m.exited(now, CRASH)
    if now - started >= reset_after or crashes == 0:  # the uptime the machine sees
        assert actions == [Spawn()]
    else:
        assert actions == [] and m.next_restart_at is not None


# -- the hold, refusals, and the manual paths ---------------------------------------------


def crash_into_backoff(m: AgentMachine) -> float:
    """Run, crash twice quickly: the second restart waits a backoff. Returns ``now``."""
    run_until_running(m, 0)
    assert m.exited(1, CRASH) == [Spawn()]  # the first restart is immediate
    m.spawned(1, 101)
    assert m.exited(1.5, CRASH) == []
    assert m.next_restart_at == 11.5
    return 1.5


def test_hold_suspends_a_pending_backoff() -> None:
    """A backoff being waited out does not fire while held, and resumes on release."""
    m = machine()
    now = crash_into_backoff(m)
    assert m.hold(now) == [] and m.hold_restarts
    assert (m.deadline, m.next_restart_at) == (None, None)
    assert m.release(5) == [] and m.next_restart_at == 11.5
    assert m.tick(11.5) == [Spawn()]


def test_release_fires_an_overdue_restart() -> None:
    """A restart that fell due during the hold happens on release, not before."""
    m = machine()
    now = crash_into_backoff(m)
    m.hold(now)
    assert m.tick(50) == [] and m.state is AgentState.RESTARTING
    assert m.release(60) == [Spawn()] and m.last_restart_at == 60


def test_hold_attribute_is_the_same_hold() -> None:
    """Writing hold_restarts suspends and resumes like hold() and release()."""
    m = machine()
    crash_into_backoff(m)
    m.hold_restarts = True
    assert (m.deadline, m.tick(50)) == (None, [])
    m.hold_restarts = False
    assert (m.deadline, m.tick(51)) == (11.5, [Spawn()])


def test_a_request_drops_a_suspended_backoff() -> None:
    """A stop during the hold cancels the suspended restart for good."""
    m = machine()
    now = crash_into_backoff(m)
    m.hold(now)
    m.request_stop(now + 1)
    assert m.release(now + 2) == [] and m.deadline is None
    assert m.state is AgentState.STOPPED and m.tick(10_000) == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [(CLEAN, AgentState.STOPPED), (CRASH, AgentState.FAILED), (KILLED, AgentState.FAILED)],
)
def test_exits_are_final_while_held(status: ExitStatus, expected: AgentState) -> None:
    """While held, an exit restarts nothing, whatever the policy says."""
    m = machine(RestartPolicy.ALWAYS)
    run_until_running(m, 0)
    m.hold(5)
    assert m.exited(50, status) == []
    assert m.state is expected and m.deadline is None
    if expected is AgentState.FAILED:
        assert "automatic restarts are on hold" in (m.last_error or "")


def test_unhealthy_kill_then_hold_is_final() -> None:
    """A hold that begins while an unhealthy process is being killed stops the restart.

    Regression: the exit used to schedule the health restart despite the hold.
    """
    m = machine()
    run_until_running(m, 0)
    assert m.unhealthy(10, "heartbeat missing") == [Kill(graceful=True)]
    m.hold_restarts = True  # as the updater does, from another task
    assert m.exited(11, ExitStatus(signal=15)) == []
    assert m.state is AgentState.FAILED
    assert m.last_error == "heartbeat missing; automatic restarts are on hold"


def test_unhealthy_while_held_kills_nothing() -> None:
    """An unhealthy verdict on a held agent is noted but kills nothing."""
    m = machine()
    run_until_running(m, 0)
    m.hold(1)
    assert m.unhealthy(2, "rss over limit") == []
    assert m.state is AgentState.RUNNING and m.last_error == "rss over limit"


def test_manual_restart_works_while_held() -> None:
    """The holder may still restart the agent by hand."""
    m = machine()
    run_until_running(m, 0)
    m.hold(1)
    assert m.request_restart(2) == [Kill(graceful=True)]
    assert m.exited(3, ExitStatus(signal=15)) == [Spawn()]


def test_manual_restart_resets_the_count() -> None:
    """A manual restart starts a fresh streak, like a manual start.

    Before, only a restart with no process reset the count; one that killed a process kept it.
    """
    m = machine()
    run_until_running(m, 0)
    m.exited(1, CRASH)
    m.spawned(1, 5)
    assert m.consecutive == 1
    m.request_restart(1.2)
    assert m.exited(1.3, ExitStatus(signal=15)) == [Spawn()]
    assert m.consecutive == 0


def test_start_during_a_restart_waits_for_the_exit() -> None:
    """A start while an unhealthy process is being killed becomes a manual restart."""
    m = machine(max_retries=0)
    run_until_running(m, 0)
    m.unhealthy(1, "stuck")
    assert m.request_start(2) == []
    assert m.exited(3, ExitStatus(signal=15)) == [Spawn()]  # not failed: it was asked for


@pytest.mark.parametrize("request_", ["start", "restart"])
def test_start_or_restart_while_stopping_is_refused(request_: str) -> None:
    """A start or restart during a stop is a named refusal that changes nothing."""
    m = machine()
    run_until_running(m, 0)
    m.exited(1, CRASH)
    m.spawned(1, 5)
    m.request_stop(2)
    before = (m.state, m.consecutive, m.deadline, m.pid, len(m.changes))
    call = m.request_start if request_ == "start" else m.request_restart
    with pytest.raises(InvalidTransitionError, match=f"{request_} while stopping") as info:
        call(3)
    assert "ask again once it has stopped" in " ".join(info.value.__notes__)
    assert (m.state, m.consecutive, m.deadline, m.pid, len(m.changes)) == before
    assert m.exited(4, ExitStatus(signal=15)) == [] and m.state is AgentState.STOPPED


def test_adoption_only_when_stopped() -> None:
    """An agent with a process refuses to adopt another, and keeps its own."""
    m = machine()
    run_until_running(m, 0, pid=7)
    with pytest.raises(InvalidTransitionError, match="adopted while running"):
        m.adopted(5, 8, uptime_s=100)
    assert m.pid == 7 and m.started_at == 0


def test_second_spawned_is_refused() -> None:
    """A second process is never taken on: spawned with a live process is an error."""
    m = machine()
    run_until_running(m, 0, pid=7)
    with pytest.raises(InvalidTransitionError):
        m.spawned(5, 8)
    assert m.pid == 7


def test_smaller_budget_clamps_the_count() -> None:
    """Lowering max_retries never leaves the count above it; the next crash fails."""
    m = machine(max_retries=5, base=1, cap=1)
    run_until_running(m, 0)
    now = 1.0
    for _ in range(3):
        now += 0.5
        m.exited(now, CRASH)
        if m.deadline is not None:
            now = m.deadline
            m.tick(now)
        m.spawned(now, 5)
    assert m.consecutive == 3
    m.update_settings(RestartSpec(max_retries=1, backoff_base_s=1, backoff_max_s=1), 1.0)
    assert m.consecutive == 1
    assert m.exited(now + 0.5, CRASH) == [] and m.state is AgentState.FAILED
