"""Health episodes of one agent under arbitrary facts, against a model stated in plain rules.

The machine drives :class:`AgentHealth` the way the health monitor does: every fact
(a process started or exited, a heartbeat, a resource sample, a probe result, sd_notify's
``STOPPING=1`` and ``WATCHDOG=trigger``, a reload of the settings) arrives with Trio's
``now`` and is followed by :meth:`AgentHealth.check`; when time passes, ``check`` also runs
at every :meth:`AgentHealth.next_deadline` on the way. Time only moves forward, in steps
that are exact binary fractions, so the expected verdicts are exact too.

The model keeps only the facts (the samples since the process started, the run of probe
failures, the last heartbeat), and the invariants say what the checks must conclude from
them:

* a probe check is unhealthy exactly when the last ``failures`` probes all failed;
* a threshold check is unhealthy exactly when its samples stayed over the threshold for
  ``threshold_duration`` at some point, and none has been under the clear line since;
* the heartbeat check is unhealthy exactly when the agent asked for it (``WATCHDOG=trigger``)
  or, once armed, nothing arrived for ``heartbeat_timeout``;
* a recovery reason comes exactly once per episode: when a running agent (not stopping)
  first has an unhealthy check, and not again until every check is fine again, or the
  process exited or a new one started;
* nothing is dated after ``now``, and after a check the next deadline is in the future.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from supervisor._health import AgentHealth, Check, CheckState, HealthSnapshot
from supervisor._spec import HealthCheckSpec

# Steps are exact binary fractions, spread around the durations below.
STEPS = st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.0, 5.0, 10.0, 30.0, 61.0])
SPECS = st.builds(
    HealthCheckSpec,
    heartbeat_timeout_s=st.sampled_from([0.0, 5.0, 30.0]),
    heartbeat_required=st.booleans(),
    cpu_threshold=st.sampled_from([0.0, 50.0]),
    memory_threshold=st.sampled_from([0, 1000]),
    threshold_duration_s=st.sampled_from([0.0, 10.0, 60.0]),
    http_endpoint=st.sampled_from([None, "http://127.0.0.1:9100/"]),
    tcp_endpoint=st.sampled_from([None, "127.0.0.1:9100"]),
    failures=st.integers(1, 3),
)
# Samples relative to a threshold: under, at the clear line (0.9), in the band, at the
# threshold, over.
LEVELS = st.sampled_from([0.0, 0.5, 0.9, 0.95, 1.0, 1.5])
PROBES = (Check.HTTP, Check.TCP)
CLEAR_FRACTION = 0.9  # AgentHealth's default hysteresis


@dataclass
class Signal:
    """The samples of one threshold check since its tracker was (re)built."""

    threshold: float
    duration: float
    samples: list[tuple[float, float]] = field(default_factory=list)

    def unhealthy(self) -> bool:
        """Over the threshold for the whole duration once, and never under the clear line since.

        The run of over-threshold samples that counts starts at its first sample; the
        samples after the one that completed the duration may be anything but below
        ``threshold * 0.9``.
        """
        clear = self.threshold * CLEAR_FRACTION
        run_start: float | None = None
        became: int | None = None  # index of the sample that completed the duration
        for i, (at, value) in enumerate(self.samples):
            if value > self.threshold:
                run_start = at if run_start is None else run_start
                if became is None and at - run_start >= self.duration:
                    became = i
            else:
                run_start = None
            if became is not None and value < clear:
                became = None  # cleared: a new run must start from scratch
                run_start = None
        return became is not None

    def state(self) -> CheckState:
        if self.threshold <= 0:
            return CheckState.DISABLED
        if not self.samples:
            return CheckState.UNKNOWN
        if self.unhealthy():
            return CheckState.UNHEALTHY
        over = self.samples[-1][1] > self.threshold
        return CheckState.PENDING if over else CheckState.HEALTHY


class HealthEpisodes(RuleBasedStateMachine):
    """AgentHealth next to a model of the facts it was given."""

    h: AgentHealth

    @initialize(spec=SPECS)
    def setup(self, spec: HealthCheckSpec) -> None:
        self.h = AgentHealth("a", spec)
        self.spec = spec
        self.now = 0.0
        self.running = False
        self.exited = False  # the last process exited (not stopped on purpose)
        self.stopping = False
        self.triggered = False
        self.armed = False
        self.silent_since: float | None = None
        self.episode = False
        self.reasons_in_episode = 0
        self.forget()

    # -- the model --------------------------------------------------------------------

    def forget(self) -> None:
        """Fresh trackers (a start, an exit, a stop, or new settings)."""
        spec = self.spec
        duration = spec.threshold_duration_s
        self.cpu = Signal(spec.cpu_threshold, duration)
        self.memory = Signal(float(spec.memory_threshold), duration)
        self.failures: dict[Check, int | None] = {  # None: not probed since
            Check.HTTP: None,
            Check.TCP: None,
        }

    def configured(self, check: Check) -> bool:
        endpoint = self.spec.http_endpoint if check is Check.HTTP else self.spec.tcp_endpoint
        return endpoint is not None

    def expected(self) -> dict[Check, CheckState]:
        """What each check must say now, from the facts alone."""
        states = {Check.CPU: self.cpu.state(), Check.MEMORY: self.memory.state()}
        for check in PROBES:
            run = self.failures[check]
            if not self.configured(check):
                states[check] = CheckState.DISABLED
            elif run is None:
                states[check] = CheckState.UNKNOWN
            elif run >= self.spec.failures:
                states[check] = CheckState.UNHEALTHY
            else:
                states[check] = CheckState.PENDING if run else CheckState.HEALTHY
        timeout = self.spec.heartbeat_timeout_s
        if self.triggered:
            states[Check.HEARTBEAT] = CheckState.UNHEALTHY
        elif timeout <= 0:
            states[Check.HEARTBEAT] = CheckState.DISABLED
        elif not self.running or self.silent_since is None:
            states[Check.HEARTBEAT] = CheckState.UNKNOWN
        elif self.now >= self.silent_since + timeout:
            states[Check.HEARTBEAT] = CheckState.UNHEALTHY
        else:
            states[Check.HEARTBEAT] = CheckState.HEALTHY
        return states

    def advance(self, step: float) -> None:
        self.now += step

    def judge(self) -> None:
        """``check`` after a fact, as the monitor does; the reason must come exactly once."""
        bad = any(s is CheckState.UNHEALTHY for s in self.expected().values())
        reason = self.h.check(self.now)
        due = bad and self.running and not self.stopping and not self.episode
        assert (reason is not None) == due, (reason, self.expected())
        if reason is not None:
            self.reasons_in_episode += 1
            assert self.reasons_in_episode == 1, "a second recovery request in one episode"
            assert reason == self.h.last_error
        self.episode = bad and (self.episode or reason is not None)
        if not self.episode:
            self.reasons_in_episode = 0

    def end_episode(self) -> None:
        self.episode, self.reasons_in_episode = False, 0

    # -- facts ------------------------------------------------------------------------

    @rule(step=STEPS)
    def process_started(self, step: float) -> None:
        self.advance(step)
        self.h.process_started(self.now)
        self.running, self.exited = True, False
        self.stopping = self.triggered = False
        self.armed = self.spec.heartbeat_required
        self.silent_since = self.now if self.armed else None
        self.end_episode()
        self.forget()
        self.judge()

    @precondition(lambda self: self.running)  # only a process that runs can exit
    @rule(step=STEPS)
    def process_exited(self, step: float) -> None:
        self.advance(step)
        self.h.process_exited(self.now, "exited with status 1")
        assert not self.h.in_episode  # at once, not only at the next check
        self.running = self.triggered = self.armed = False
        self.exited = True
        self.silent_since = None
        self.end_episode()
        self.forget()
        self.judge()

    @rule(step=STEPS)
    def stopped_on_purpose_(self, step: float) -> None:
        self.advance(step)
        self.h.reset()
        assert not self.h.in_episode
        self.running = self.triggered = self.armed = self.exited = False
        self.silent_since = None
        self.end_episode()
        self.forget()
        self.judge()

    @rule(step=STEPS)
    def heartbeat(self, step: float) -> None:
        self.advance(step)
        self.h.heartbeat(self.now)
        if self.running:
            self.armed, self.silent_since = True, self.now
        self.judge()

    @rule(step=STEPS, cpu=LEVELS, memory=LEVELS)
    def resources(self, step: float, cpu: float, memory: float) -> None:
        self.advance(step)
        before = {c: v.state for c, v in self.h.snapshot(self.now).checks.items()}
        rss = int(self.spec.memory_threshold * memory)
        cpu_percent = self.spec.cpu_threshold * cpu
        alerts = self.h.resources(self.now, cpu_percent, rss)
        if self.running:
            for signal, value in ((self.cpu, cpu_percent), (self.memory, float(rss))):
                if signal.threshold > 0:
                    signal.samples.append((self.now, value))
        after = self.expected()
        # An alert for each threshold check that turned unhealthy with this sample.
        turned = {
            check.value
            for check in (Check.CPU, Check.MEMORY)
            if after[check] is CheckState.UNHEALTHY and before[check] is not CheckState.UNHEALTHY
        }
        assert {alert.type for alert in alerts} == turned
        for alert in alerts:
            assert alert.at == self.now and alert.since <= alert.at
        self.judge()

    @rule(step=STEPS, check=st.sampled_from(PROBES), ok=st.booleans())
    def probe(self, step: float, check: Check, ok: bool) -> None:
        self.advance(step)
        self.h.probe(self.now, check, None if ok else "connection refused")
        if self.running and self.configured(check):
            run = self.failures[check] or 0
            self.failures[check] = 0 if ok else run + 1
        self.judge()

    @rule(step=STEPS)
    def agent_says_stopping(self, step: float) -> None:
        self.advance(step)
        self.h.stopping(self.now)
        self.stopping = self.stopping or self.running
        self.judge()

    @rule(step=STEPS)
    def agent_triggers_its_watchdog(self, step: float) -> None:
        self.advance(step)
        self.h.trigger(self.now)
        self.triggered = self.triggered or self.running
        self.judge()

    @rule(step=STEPS, spec=SPECS)
    def reconfigure(self, step: float, spec: HealthCheckSpec) -> None:
        self.advance(step)
        self.h.reconfigure(self.now, spec)
        self.spec = spec
        if self.running:
            self.armed = self.armed or spec.heartbeat_required
            self.silent_since = self.now if self.armed else None
        self.forget()
        self.judge()

    @rule(step=STEPS)
    def time_passes(self, step: float) -> None:
        """The monitor sleeps until the next deadline or the target, checking at each."""
        target = self.now + step
        while (deadline := self.h.next_deadline()) is not None and deadline <= target:
            assert deadline > self.now, "a deadline in the past: the monitor would spin"
            self.now = deadline
            self.judge()
            assert self.h.check(self.now) is None  # judged: nothing new at the same moment
        self.now = target
        self.judge()

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def checks_follow_the_facts(self) -> None:
        snap = self.h.snapshot(self.now)
        actual = {check: verdict.state for check, verdict in snap.checks.items()}
        expected = self.expected()
        assert {c: actual[c] for c in expected} == expected

    @invariant()
    def the_process_check_and_the_summary(self) -> None:
        snap: HealthSnapshot = self.h.snapshot(self.now)
        process = snap.checks[Check.PROCESS].state
        if self.running:
            assert process is CheckState.HEALTHY
        elif self.exited:
            assert process is CheckState.UNHEALTHY  # an exit shows, but asks for nothing
        else:
            assert process is CheckState.UNKNOWN
        any_bad = any(v.unhealthy for v in snap.checks.values())
        if any_bad:
            assert snap.healthy is False
        else:
            assert snap.healthy is (None if process is CheckState.UNKNOWN else True)

    @invariant()
    def one_episode_at_a_time(self) -> None:
        assert self.h.in_episode == self.episode
        assert self.reasons_in_episode <= 1

    @invariant()
    def nothing_is_dated_in_the_future(self) -> None:
        snap = self.h.snapshot(self.now)
        for verdict in snap.checks.values():
            assert verdict.since is None or verdict.since <= self.now
        samples = [sample.at for sample in self.h.history]
        assert samples == sorted(samples) and all(at <= self.now for at in samples)

    @invariant()
    def the_next_deadline_is_ahead(self) -> None:
        deadline = self.h.next_deadline()
        assert deadline is None or deadline > self.now
        if not self.running or self.stopping:
            assert deadline is None


HealthEpisodes.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_health_episodes = HealthEpisodes.TestCase
