"""The agent machine under arbitrary requests and facts, against a model of its process.

The model drives :class:`AgentMachine` the way the runner does. A :class:`Spawn` creates
a pending process, which is reported spawned or failed before any other request or fact
(the runner awaits the spawn): either by the ``spawn_reported`` rule or, when another
rule comes first, at that rule's start, as the example's ``spawn_ok`` says. A
:class:`Kill` makes the process exit some time later, while requests may still come in.
Hold and release may arrive at any moment, even during a spawn (the updater sets the
hold from another task). Time only moves forward.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from supervisor import (
    AgentMachine,
    AgentState,
    Event,
    ExitStatus,
    InvalidTransitionError,
    Kill,
    RestartPolicy,
    RestartSpec,
    Spawn,
    backoff_delay,
)
from supervisor._backoff import MIN_RETRY_DELAY_S
from supervisor._lifecycle import TRANSITIONS
from supervisor._machine import Action

STATUSES = st.sampled_from(
    [
        ExitStatus(code=0),
        ExitStatus(code=1),
        ExitStatus(code=137),
        ExitStatus(signal=9),
        ExitStatus(signal=15),
        ExitStatus(),  # unknown: an adopted process
    ]
)
# Spread around the interesting durations (start_seconds 1 or 3, reset_after 2 or 30,
# backoff caps 1 or 8), with a few long ones.
DELAYS = st.sampled_from([0.0, 0.05, 0.5, 1.0, 2.5, 10.0, 45.0, 400.0])
SPECS = st.builds(
    RestartSpec,
    policy=st.sampled_from(RestartPolicy),
    max_retries=st.integers(min_value=-1, max_value=4),
    backoff_base_s=st.sampled_from([0.0, 0.5, 2.0]),
    backoff_max_s=st.sampled_from([1.0, 8.0]),
    reset_after_s=st.sampled_from([2.0, 30.0]),
)
START_SECONDS = st.sampled_from([0.0, 1.0, 3.0])


class AgentModel(RuleBasedStateMachine):
    """The machine and a model of the one process it supervises."""

    m: AgentMachine

    @initialize(
        spec=SPECS,
        start_seconds=START_SECONDS,
        draw=st.floats(0.0, 0.999),
        crashes=st.one_of(st.none(), st.integers(0, 3)),
        spawn_ok=st.booleans(),
    )
    def setup(
        self,
        spec: RestartSpec,
        start_seconds: float,
        draw: float,
        crashes: int | None,
        spawn_ok: bool,
    ) -> None:
        """A fresh agent, or (``crashes`` not None) a started one whose process crashed
        that often at once: deep states (a restart streak under way) in fewer steps.
        ``spawn_ok`` says how a spawn ends when another rule comes before its report."""
        self.draw = draw  # fixed per run, so delays in a streak can be compared exactly
        self.m = AgentMachine(spec, start_seconds, draw=lambda: self.draw)
        self.now = 0.0
        self.live: int | None = None  # the pid of the live process, if any
        self.spawn_pending = False
        self.spawn_ok = True  # spawns work during the warm-up
        self.next_pid = 1000
        self.held = False
        self.wants_restart = False  # a manual restart or start waits for the old process
        self.state = AgentState.STOPPED  # as seen through the recorded changes
        self.last_change_at = 0.0
        self.scheduled: float | None = None
        self.streak: list[tuple[int, float]] = []  # (attempt, delay) of scheduled restarts
        if crashes is not None:
            self.start(0.0)
            for _ in range(crashes):
                self.settle()
                if not self.has_process():
                    break
                self.process_exits(0.1, ExitStatus(code=1))
                if self.m.deadline is not None:
                    self.time_passes(None)  # wait out the backoff
                self.changes_follow_the_table()
            self.settle()
        self.spawn_ok = spawn_ok

    # -- the IO shell's side ------------------------------------------------------

    def settle(self) -> None:
        """Report a pending spawn first, as the runner does before its next message (a
        failed spawn may be retried at once, so this may take two reports)."""
        while self.spawn_pending:
            self.spawn_reported(0.0, self.spawn_ok)
            self.changes_follow_the_table()  # as if it were a step of its own

    def perform(self, actions: list[Action], *, manual: bool) -> None:
        """Carry out the actions as the runner would; ``manual`` if a user asked for it."""
        assert len(actions) <= 1, actions
        for action in actions:
            if isinstance(action, Spawn):
                assert self.live is None and not self.spawn_pending, "a second process"
                assert self.m.state is AgentState.STARTING and self.m.pid is None
                assert manual or not self.held, "an automatic restart while held"
                self.spawn_pending = True
            else:
                assert isinstance(action, Kill)
                assert self.live is not None, "killed a process that does not exist"
        self.check_schedule()

    def check_schedule(self) -> None:
        """A newly scheduled restart waits the jittered delay of its attempt, at most the
        cap, and no less than the previous one in the same streak."""
        scheduled = self.m.next_restart_at
        if scheduled is not None and scheduled != self.scheduled:
            spec = self.m.restart
            attempt = self.m.consecutive - 1
            delay = scheduled - self.now
            expected = backoff_delay(attempt, spec.backoff_base_s, spec.backoff_max_s, self.draw)
            assert abs(delay - expected) <= 1e-6 * max(1.0, self.now)
            assert 0 < delay <= max(spec.backoff_max_s, MIN_RETRY_DELAY_S) + 1e-9
            if self.streak and attempt > self.streak[-1][0]:
                assert delay >= self.streak[-1][1] - 1e-9, (self.streak, delay)
            else:
                self.streak = []  # the count was reset: a new streak
            self.streak.append((attempt, delay))
        self.scheduled = scheduled

    def has_process(self) -> bool:
        return self.live is not None

    def later(self, dt: float) -> None:
        self.now += dt

    def snapshot(self) -> tuple[object, ...]:
        m = self.m
        return (
            m.state,
            m.pid,
            m.deadline,
            m.consecutive,
            m.restart_count,
            m.last_error,
            m.last_exit,
            m.started_at,
            m.last_restart_at,
            m.hold_restarts,
            m.next_restart_at,
            len(m.changes),
        )

    def refused(self, call: Callable[[], list[Action]], reason: str) -> None:
        """A named refusal raises, says why, and changes nothing."""
        before = self.snapshot()
        try:
            call()
        except InvalidTransitionError as exc:
            notes: list[str] = getattr(exc, "__notes__", [])
        else:
            raise AssertionError("the request was not refused")
        assert any(reason in note for note in notes), notes
        assert self.snapshot() == before

    def check_failures(self) -> None:
        """Every move to failed was the policy's: an exit or a failed spawn, under
        ``never``, while held, or with the budget spent."""
        spec = self.m.restart
        for change in self.m.changes:
            if change.new is AgentState.FAILED:
                assert change.event in (Event.EXITED, Event.SPAWN_FAILED), change
                spent = 0 <= spec.max_retries <= self.m.consecutive
                assert self.held or spec.policy is RestartPolicy.NEVER or spent, change
                assert self.m.last_error == change.reason

    # -- requests -----------------------------------------------------------------

    @rule(dt=DELAYS)
    def start(self, dt: float) -> None:
        self.settle()
        self.later(dt)
        before, live = self.m.state, self.live is not None
        if before is AgentState.STOPPING:
            self.refused(lambda: self.m.request_start(self.now), "stopping")
            return
        actions = self.m.request_start(self.now)
        if before is AgentState.RESTARTING and live:
            self.wants_restart = True
        if before in (AgentState.STOPPED, AgentState.FAILED):  # a manual start clears
            assert actions == [Spawn()] and self.m.consecutive == 0
        self.perform(actions, manual=True)

    @rule(dt=DELAYS, graceful=st.booleans())
    def stop(self, dt: float, graceful: bool) -> None:
        self.settle()
        self.later(dt)
        actions = self.m.request_stop(self.now, graceful=graceful)
        self.wants_restart = False
        if self.live is None:
            assert self.m.state is AgentState.STOPPED and actions == []
        else:
            assert self.m.state is AgentState.STOPPING
        self.perform(actions, manual=True)

    @rule(dt=DELAYS)
    def restart(self, dt: float) -> None:
        self.settle()
        self.later(dt)
        if self.m.state is AgentState.STOPPING:
            self.refused(lambda: self.m.request_restart(self.now), "stopping")
            return
        actions = self.m.request_restart(self.now)
        if self.live is not None:
            self.wants_restart = True
            assert self.m.state is AgentState.RESTARTING
        else:
            assert actions == [Spawn()] and self.m.consecutive == 0
        self.perform(actions, manual=True)

    @rule(dt=DELAYS, uptime=st.sampled_from([0.0, 0.5, 2.0, 100.0]))
    def adopt(self, dt: float, uptime: float) -> None:
        self.settle()
        self.later(dt)
        if self.m.state is not AgentState.STOPPED:
            self.refused(lambda: self.m.adopted(self.now, 4242, uptime), "only a stopped agent")
            return
        assert self.live is None
        self.next_pid += 1
        assert self.m.adopted(self.now, self.next_pid, uptime) == []
        self.live = self.next_pid

    @rule(dt=DELAYS, reason=st.sampled_from(["heartbeat missing", "rss over limit"]))
    def unhealthy(self, dt: float, reason: str) -> None:
        self.settle()
        self.later(dt)
        actions = self.m.unhealthy(self.now, reason)
        if self.held:
            assert actions == [], "an unhealthy verdict killed a held agent"
        self.perform(actions, manual=False)

    @rule(dt=DELAYS)
    def ready(self, dt: float) -> None:
        self.settle()
        self.later(dt)
        self.perform(self.m.confirm_start(self.now), manual=False)

    @rule(dt=DELAYS, via_attribute=st.booleans())
    def hold(self, dt: float, via_attribute: bool) -> None:
        self.set_hold(dt, True, via_attribute)

    @rule(dt=DELAYS, via_attribute=st.booleans())
    def release(self, dt: float, via_attribute: bool) -> None:
        self.set_hold(dt, False, via_attribute)

    def set_hold(self, dt: float, on: bool, via_attribute: bool) -> None:
        """Hold or release, through the methods or (as the updater does today) the
        attribute; at any moment, even while a spawn is pending."""
        self.later(dt)
        self.held = on
        if via_attribute:
            self.m.hold_restarts = on
            actions: list[Action] = []
        else:
            actions = self.m.hold(self.now) if on else self.m.release(self.now)
        self.scheduled = self.m.next_restart_at  # a resumed backoff is not a new one
        self.perform(actions, manual=False)

    @rule(spec=SPECS, start_seconds=START_SECONDS)
    def update_settings(self, spec: RestartSpec, start_seconds: float) -> None:
        self.settle()
        self.changes_follow_the_table()  # judged by the settings they were made under
        self.m.update_settings(spec, start_seconds)
        self.streak = []  # a new schedule

    # -- facts --------------------------------------------------------------------

    @precondition(lambda self: self.spawn_pending)
    @rule(dt=st.sampled_from([0.0, 0.01, 0.5]), ok=st.booleans())
    def spawn_reported(self, dt: float, ok: bool) -> None:
        self.later(dt)
        self.spawn_pending = False
        if ok:
            self.next_pid += 1
            assert self.m.spawned(self.now, self.next_pid) == []
            self.live = self.next_pid
        else:
            self.perform(self.m.spawn_failed(self.now, "ENOENT"), manual=False)

    @precondition(lambda self: self.live is not None or self.spawn_pending)
    @rule(dt=DELAYS, status=STATUSES)
    def process_exits(self, dt: float, status: ExitStatus) -> None:
        self.settle()
        if self.live is None:
            return  # the spawn failed after all
        self.later(dt)
        stopping = self.m.state is AgentState.STOPPING
        actions = self.m.exited(self.now, status)
        self.live = None
        if self.wants_restart:  # a manual restart happens, even while held
            assert actions == [Spawn()] and self.m.consecutive == 0
        if stopping:
            assert self.m.state is AgentState.STOPPED and actions == []
        self.perform(actions, manual=self.wants_restart)
        self.wants_restart = False

    @rule(dt=st.one_of(st.none(), DELAYS))
    def time_passes(self, dt: float | None) -> None:
        """Time passes by ``dt``, or (None) up to the machine's deadline, as in the runner."""
        self.settle()
        if dt is None:
            self.now = max(self.now, self.m.deadline or self.now)
        else:
            self.later(dt)
        self.perform(self.m.tick(self.now), manual=False)

    # -- invariants ---------------------------------------------------------------

    @invariant()
    def changes_follow_the_table(self) -> None:
        """Every recorded change is a step the lifecycle table allows, in order, in time,
        and every move to failed is the restart policy's."""
        self.check_failures()
        for change in self.m.drain_changes():
            assert change.old is self.state, (change, self.state)
            assert change.new is not change.old
            assert change.new in TRANSITIONS[change.old][change.event], change
            assert self.last_change_at <= change.at <= self.now
            self.state, self.last_change_at = change.new, change.at
        assert self.m.state is self.state and self.m.state in TRANSITIONS

    @invariant()
    def one_process_at_most(self) -> None:
        """The machine tracks exactly the one live process, if any."""
        assert self.m.pid == self.live

    @invariant()
    def states_agree_with_the_process(self) -> None:
        """Stopped and failed agents have no process and nothing pending."""
        m = self.m
        if m.state in (AgentState.STOPPED, AgentState.FAILED):
            assert m.pid is None and m.deadline is None and not self.spawn_pending
        if m.state in (AgentState.RUNNING, AgentState.STOPPING):
            assert m.pid is not None
        if self.spawn_pending:
            assert m.state is AgentState.STARTING and m.pid is None

    @invariant()
    def deadline_iff_something_timed_is_pending(self) -> None:
        """A deadline is set exactly while a start confirmation or a backoff is pending."""
        m = self.m
        confirming = m.state is AgentState.STARTING and m.pid is not None
        backing_off = m.state is AgentState.RESTARTING and m.pid is None and not self.held
        assert (m.deadline is not None) == (confirming or backing_off)
        if backing_off:  # the restart scheduled (and checked) when it was decided
            assert m.next_restart_at == m.deadline == self.scheduled

    @invariant()
    def budget_respected(self) -> None:
        """Automatic restarts in a row never exceed max_retries (unless it is -1)."""
        if self.m.restart.max_retries >= 0:
            assert self.m.consecutive <= self.m.restart.max_retries

    @invariant()
    def failed_says_why(self) -> None:
        """A failed agent always carries the reason."""
        if self.m.state is AgentState.FAILED:
            assert self.m.last_error

    @invariant()
    def hold_is_readable(self) -> None:
        """The hold is visible on the attribute the supervisor reads."""
        assert self.m.hold_restarts is self.held


TestAgentModel = AgentModel.TestCase
TestAgentModel.settings = settings(max_examples=500, stateful_step_count=40, deadline=None)
