"""The per-agent decision machine: restart policies, backoff, budget, resets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from supervisor import (
    AgentMachine,
    AgentState,
    ExitStatus,
    InvalidTransitionError,
    Kill,
    RestartPolicy,
    RestartSpec,
    Spawn,
    nominal_delay,
)
from supervisor._backoff import JITTER

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
    assert m.state is AgentState.STARTING and m.deadline == 2.0
    assert m.tick(1.999) == [] and m.state is AgentState.STARTING
    m.tick(2.0)
    assert m.state is AgentState.RUNNING and m.deadline is None


def test_crash_loop_backs_off_then_fails() -> None:
    """First restart immediate, then base, 2*base..., and failed when the budget is spent."""
    m = machine(max_retries=3, base=10, cap=60)
    run_until_running(m, 0)
    now = 100.0
    assert m.exited(now, CRASH) == [Spawn()]  # immediate
    assert m.state is AgentState.STARTING and m.restart_count == 1
    m.spawned(now, 101)
    assert m.exited(now + 0.5, CRASH) == []  # crashed during start: backoff 10 s
    assert m.state is AgentState.RESTARTING and m.next_restart_at == now + 0.5 + 10
    assert m.tick(now + 10) == []
    assert m.tick(now + 10.5) == [Spawn()]
    m.spawned(now + 10.5, 102)
    assert m.exited(now + 11, CRASH) == []
    assert m.next_restart_at == now + 11 + 20
    m.tick(now + 31)
    m.spawned(now + 31, 103)
    assert m.exited(now + 31.1, KILLED) == []
    assert m.state is AgentState.FAILED
    assert m.last_exit == KILLED
    assert "gave up after 3 restart(s)" in (m.last_error or "")
    assert "killed by signal 9 (SIGKILL)" in (m.last_error or "")


def test_manual_start_clears_failed() -> None:
    """A manual start leaves failed and resets the retry budget."""
    m = machine(max_retries=0)
    run_until_running(m, 0)
    m.exited(5, CRASH)
    assert m.state is AgentState.FAILED
    assert m.request_start(6) == [Spawn()]
    assert m.state is AgentState.STARTING and m.consecutive == 0


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
    assert m.state is AgentState.STOPPED and m.consecutive == 0


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
        if m.pid is None:
            break
        now += 0.5  # crash during start: never stable, never confirmed
        m.exited(now, status)
        if m.state is AgentState.RESTARTING:
            now = m.deadline or now
            m.tick(now)
        if m.state is AgentState.STARTING and m.pid is None:
            m.spawned(now, 1)
        if max_retries >= 0:
            assert m.consecutive <= max_retries


class MachineModel(RuleBasedStateMachine):
    """Drive the machine like the IO shell does, with arbitrary requests and facts."""

    @initialize(
        policy=st.sampled_from(RestartPolicy),
        max_retries=st.integers(min_value=-1, max_value=5),
        start_seconds=st.sampled_from([0.0, 1.0, 3.0]),
    )
    def setup(self, policy: RestartPolicy, max_retries: int, start_seconds: float) -> None:
        self.m = AgentMachine(
            RestartSpec(policy, max_retries, 2.0, 16.0, 60.0), start_seconds, draw=lambda: 0.5
        )
        self.now = 0.0
        self.alive = False
        self.next_pid = 1000
        self.spawn_ok = True
        self.scheduled: float | None = None

    def perform(self, actions: list[Spawn | Kill]) -> None:
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, Spawn):
                assert not self.alive, "spawned a second process"
                if self.spawn_ok:
                    self.alive = True
                    self.next_pid += 1
                    queue += self.m.spawned(self.now, self.next_pid)
                else:
                    queue += self.m.spawn_failed(self.now, "ENOENT")
            else:
                assert self.alive, "killed a process that does not exist"
                self.alive = False
                queue += self.m.exited(self.now, ExitStatus(signal=15))
        if self.m.next_restart_at != self.scheduled:
            self.check_new_delay()
        self.scheduled = self.m.next_restart_at

    def check_new_delay(self) -> None:
        """A newly scheduled restart waits the jittered nominal delay for its attempt."""
        if self.m.next_restart_at is not None:
            nominal = nominal_delay(self.m.consecutive - 1, 2.0, 16.0)
            delay = self.m.next_restart_at - self.now
            assert nominal * (1 - JITTER) - 1e-9 <= delay <= nominal + 1e-9

    @rule(ok=st.booleans())
    def spawns_work(self, ok: bool) -> None:
        self.spawn_ok = ok

    @rule()
    def start(self) -> None:
        if self.m.state is not AgentState.STOPPING:
            self.perform(self.m.request_start(self.now))

    @rule(graceful=st.booleans())
    def stop(self, graceful: bool) -> None:
        self.perform(self.m.request_stop(self.now, graceful=graceful))

    @rule()
    def restart(self) -> None:
        if self.m.state is not AgentState.STOPPING:
            self.perform(self.m.request_restart(self.now))

    @precondition(lambda self: self.alive)
    @rule(code=st.integers(min_value=-9, max_value=3))
    def process_exits(self, code: int) -> None:
        self.alive = False
        self.perform(self.m.exited(self.now, ExitStatus.from_returncode(code)))

    @rule(reason=st.text(max_size=5))
    def unhealthy(self, reason: str) -> None:
        self.perform(self.m.unhealthy(self.now, reason))

    @rule(dt=st.floats(min_value=0, max_value=400))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.perform(self.m.tick(self.now))

    @invariant()
    def one_process_at_most_and_pid_tracks_it(self) -> None:
        assert (self.m.pid is not None) == self.alive

    @invariant()
    def states_agree_with_the_process(self) -> None:
        state = self.m.state
        if state in (AgentState.STOPPED, AgentState.FAILED):
            assert self.m.pid is None and self.m.deadline is None
        if state in (AgentState.RUNNING, AgentState.STOPPING):
            assert self.m.pid is not None

    @invariant()
    def deadlines_only_where_they_mean_something(self) -> None:
        if self.m.deadline is not None:
            starting = self.m.state is AgentState.STARTING and self.m.pid is not None
            waiting = self.m.state is AgentState.RESTARTING and self.m.pid is None
            assert starting or waiting

    @invariant()
    def budget_respected(self) -> None:
        limit = self.m.restart.max_retries
        if limit >= 0:
            assert self.m.consecutive <= limit

    @invariant()
    def failed_says_why(self) -> None:
        if self.m.state is AgentState.FAILED:
            assert self.m.last_error


TestMachineModel = MachineModel.TestCase
TestMachineModel.settings = settings(max_examples=150, stateful_step_count=30)


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
