"""Health-check decisions: thresholds, heartbeats, probe failures, history, aggregation."""

from __future__ import annotations

import math
from itertools import accumulate, pairwise

import pytest
from hypothesis import given, settings, strategies as st

from supervisor._health import (
    AgentHealth,
    Check,
    CheckState,
    FailureCounter,
    HeartbeatTracker,
    ResourceAlert,
    ResourceHistory,
    ResourceSample,
    ThresholdTracker,
)
from supervisor._health._trackers import format_bytes
from supervisor._spec import HealthCheckSpec

MiB = 1024 * 1024
UNHEALTHY = CheckState.UNHEALTHY

# Time steps between observations; zero steps make equal timestamps.
STEPS = st.floats(min_value=0, max_value=40, allow_nan=False)
# A sample relative to the threshold: a factor, or exactly the threshold or clear line.
LEVELS = st.sampled_from(["at", "clear", 0.0, 0.5, 0.95, 1.05, 2.0]) | st.floats(
    min_value=0, max_value=2, allow_nan=False
)


def _value(tracker: ThresholdTracker, level: float | str) -> float:
    if level == "at":
        return tracker.threshold
    if level == "clear":
        return tracker.clear_line
    assert isinstance(level, float)
    return tracker.threshold * level


def _observe_all(
    tracker: ThresholdTracker, samples: list[tuple[float, float | str]]
) -> list[tuple[float, float, CheckState]]:
    """Feed (step, level) samples; return (time, value, state) after each."""
    times = list(accumulate(step for step, _ in samples))
    out = []
    for now, (_, level) in zip(times, samples, strict=True):
        value = _value(tracker, level)
        out.append((now, value, tracker.observe(now, value).state))
    return out


def _run_start(rows: list[tuple[float, float, CheckState]], i: int, threshold: float) -> int | None:
    """Index where the run of over-threshold samples ending at ``i`` began, if any."""
    if not rows[i][1] > threshold:
        return None
    j = i
    while j > 0 and rows[j - 1][1] > threshold:
        j -= 1
    return j


trackers = st.builds(
    ThresholdTracker,
    threshold=st.floats(min_value=0.5, max_value=1e9),
    duration_s=st.floats(min_value=0, max_value=100),
    clear_fraction=st.floats(min_value=0.05, max_value=1.0),
)
# Runs of samples at one level, so that thresholds are crossed and held.
samples = st.lists(
    st.tuples(st.integers(1, 6), STEPS, LEVELS).map(lambda run: [run[1:]] * run[0]),
    max_size=15,
).map(lambda runs: [sample for run in runs for sample in run])


# -- ThresholdTracker ---------------------------------------------------------------


@settings(deadline=None, max_examples=200)
@given(trackers, samples)
def test_threshold_never_flaps(
    tracker: ThresholdTracker, seq: list[tuple[float, float | str]]
) -> None:
    """An unhealthy verdict ends only with a sample strictly below the clear line."""
    rows = _observe_all(tracker, seq)
    for (_, _, before), (_, value, after) in pairwise(rows):
        if before is UNHEALTHY and after is not UNHEALTHY:
            assert value < tracker.clear_line


@settings(deadline=None, max_examples=200)
@given(trackers, samples)
def test_threshold_never_unhealthy_early(
    tracker: ThresholdTracker, seq: list[tuple[float, float | str]]
) -> None:
    """A verdict turns unhealthy only after samples stayed over the threshold for the duration."""
    rows = _observe_all(tracker, seq)
    for i, (now, _, state) in enumerate(rows):
        if state is UNHEALTHY and (i == 0 or rows[i - 1][2] is not UNHEALTHY):
            start = _run_start(rows, i, tracker.threshold)
            assert start is not None
            assert now - rows[start][0] >= tracker.duration_s


@settings(deadline=None, max_examples=200)
@given(trackers, samples)
def test_threshold_never_unhealthy_late(
    tracker: ThresholdTracker, seq: list[tuple[float, float | str]]
) -> None:
    """Samples over the threshold for the whole duration always make the verdict unhealthy."""
    rows = _observe_all(tracker, seq)
    for i, (now, _, state) in enumerate(rows):
        start = _run_start(rows, i, tracker.threshold)
        if start is not None and now - rows[start][0] >= tracker.duration_s:
            assert state is UNHEALTHY
        elif state is not UNHEALTHY:
            assert state is (CheckState.PENDING if start is not None else CheckState.HEALTHY)


@settings(deadline=None)
@given(st.floats(min_value=0, max_value=100), samples)
def test_threshold_zero_disables(duration: float, seq: list[tuple[float, float | str]]) -> None:
    """A threshold of 0 never judges anything."""
    tracker = ThresholdTracker(0, duration)
    assert all(state is CheckState.DISABLED for _, _, state in _observe_all(tracker, seq))


def test_threshold_messages() -> None:
    """Messages show the value, the limit, the age and, in the band, the clear line."""
    t = ThresholdTracker(100, 60, label="cpu", fmt=lambda v: f"{v:.1f}%")
    assert t.verdict(0).detail == "cpu: no sample yet"
    assert t.observe(0, 20).detail == "cpu: 20.0%"
    assert t.observe(10, 150).detail == "cpu: 150.0% over 100.0% for 0.0s (unhealthy after 60s)"
    v = t.observe(70, 150)
    assert v.state is UNHEALTHY and v.since == 10
    assert v.detail == "cpu: 150.0% over 100.0% since 60.0s ago"
    assert t.observe(80, 95).detail == "cpu: 95.0%, over 100.0% since 70.0s ago, clears below 90.0%"
    assert t.observe(90, 89).state is CheckState.HEALTHY
    assert ThresholdTracker(0, 5, label="cpu").verdict(0).detail == "cpu: disabled"


def test_threshold_validation() -> None:
    """Negative or non-finite limits and clear fractions outside (0, 1] are refused."""
    with pytest.raises(ValueError, match="threshold"):
        ThresholdTracker(-1, 1)
    with pytest.raises(ValueError, match="duration_s"):
        ThresholdTracker(1, math.inf)
    with pytest.raises(ValueError, match="clear_fraction"):
        ThresholdTracker(1, 1, clear_fraction=0.0)


# -- HeartbeatTracker ---------------------------------------------------------------

beat_ops = st.lists(st.tuples(st.sampled_from(["beat", "check"]), STEPS), max_size=50)


@settings(deadline=None)
@given(st.floats(min_value=0.001, max_value=100), beat_ops)
def test_heartbeat_timeout_decision(timeout: float, ops: list[tuple[str, float]]) -> None:
    """A check is unhealthy exactly when the silence since the last beat or start hits timeout_s."""
    hb = HeartbeatTracker(timeout)
    now = 0.0
    hb.started(now)
    last = now
    for op, step in ops:
        now += step
        if op == "beat":
            hb.beat(now)
            last = now
            assert hb.next_deadline() == last + timeout
        else:
            verdict = hb.check(now)
            assert verdict.unhealthy == (now >= last + timeout)
            if verdict.unhealthy:
                assert verdict.since == last and hb.next_deadline() is None
            else:
                assert hb.next_deadline() == last + timeout


@settings(deadline=None)
@given(st.floats(min_value=0.001, max_value=1e6), st.floats(min_value=0, max_value=1e6), STEPS)
def test_heartbeat_deadline_is_exact(timeout: float, start: float, gap: float) -> None:
    """Just before next_deadline() the agent is healthy; at it, unhealthy."""
    hb = HeartbeatTracker(timeout)
    hb.started(start)
    hb.beat(start + gap)
    deadline = hb.next_deadline()
    assert deadline is not None
    assert not hb.verdict(math.nextafter(deadline, -math.inf)).unhealthy
    assert hb.check(deadline).unhealthy


@settings(deadline=None)
@given(beat_ops)
def test_heartbeat_zero_disables(ops: list[tuple[str, float]]) -> None:
    """A timeout of 0 never judges anything and never sets a deadline."""
    hb = HeartbeatTracker(0)
    hb.started(0)
    now = 0.0
    for op, step in ops:
        now += step
        if op == "beat":
            hb.beat(now)
        assert hb.check(now).state is CheckState.DISABLED and hb.next_deadline() is None


@settings(deadline=None)
@given(st.floats(min_value=0.001, max_value=100), beat_ops)
def test_heartbeat_unarmed_waits_for_the_first_beat(
    timeout: float, ops: list[tuple[str, float]]
) -> None:
    """Not armed at start: silence before the first beat never counts; after it, as usual."""
    hb = HeartbeatTracker(timeout)
    hb.started(0.0, armed=False)
    now, last = 0.0, None
    for op, step in ops:
        now += step
        if op == "beat":
            hb.beat(now)
            last = now
        verdict = hb.check(now)
        if last is None:
            assert verdict.state is CheckState.UNKNOWN and hb.next_deadline() is None
        else:
            assert verdict.unhealthy == (now >= last + timeout)


def test_heartbeat_timeout_can_change_while_running() -> None:
    """WATCHDOG_USEC= from the agent moves the deadline and re-arms a reported timeout."""
    hb = HeartbeatTracker(90)
    hb.started(0)
    hb.beat(10)
    hb.set_timeout(20)
    assert hb.next_deadline() == 30
    assert hb.check(30).unhealthy and hb.next_deadline() is None
    hb.set_timeout(60)
    assert hb.next_deadline() == 70 and not hb.check(31).unhealthy
    with pytest.raises(ValueError, match="timeout_s"):
        hb.set_timeout(-1)


def test_heartbeat_messages_and_lifecycle() -> None:
    """Beats before a start are ignored; messages tell silence since start from since a beat."""
    hb = HeartbeatTracker(90)
    hb.beat(1)
    assert hb.check(5).detail == "heartbeat: no process" and hb.next_deadline() is None
    hb.started(10)
    assert hb.check(15).detail == "heartbeat: none yet, started 5.0s ago"
    assert hb.check(100).detail == "heartbeat: none since start 90.0s ago (timeout 90s)"
    hb.beat(101)
    assert hb.check(103).detail == "heartbeat: last 2.0s ago"
    assert hb.check(200).detail == "heartbeat: none for 99.0s (timeout 90s)"
    hb.stopped()
    assert hb.check(300).state is CheckState.UNKNOWN
    hb.started(400, armed=False)
    assert hb.check(900).detail == "heartbeat: waiting for the first beat"


# -- FailureCounter -----------------------------------------------------------------


@settings(deadline=None)
@given(
    st.integers(min_value=1, max_value=5),
    st.lists(st.none() | st.sampled_from(["refused", "timeout", "HTTP 503"]), max_size=40),
)
def test_consecutive_failures(threshold: int, results: list[str | None]) -> None:
    """The verdict follows the trailing run of failures; one success heals; the last error stays."""
    counter = FailureCounter(threshold, label="http")
    run, last_error = 0, None
    for now, error in enumerate(results):
        verdict = counter.record(float(now), error)
        run = run + 1 if error is not None else 0
        last_error = error if error is not None else last_error
        assert counter.count == run and counter.last_error == last_error
        expected = (
            CheckState.HEALTHY
            if run == 0
            else UNHEALTHY
            if run >= threshold
            else CheckState.PENDING
        )
        assert verdict.state is expected
        assert verdict.since == (None if run == 0 else float(now - run + 1))


def test_failure_messages() -> None:
    """Messages give the run length, the limit or the age, and the last error."""
    c = FailureCounter(3, label="http")
    assert c.verdict(0).detail == "http: not probed yet"
    assert c.record(0, None).detail == "http: ok"
    assert c.record(10, "connection refused").detail == (
        "http: 1 failure in a row (unhealthy after 3), last: connection refused"
    )
    c.record(20, "timeout")
    assert (
        c.record(30, "timeout").detail == "http: 3 failures in a row since 20.0s ago, last: timeout"
    )
    with pytest.raises(ValueError, match="at least 1"):
        FailureCounter(0)


# -- ResourceHistory ----------------------------------------------------------------

history_ops = st.lists(
    st.tuples(STEPS, st.floats(0, 400), st.integers(0, 2**40)), min_size=1, max_size=80
)


def _fill(history: ResourceHistory, ops: list[tuple[float, float, int]]) -> list[ResourceSample]:
    model, now = [], 0.0
    for step, cpu, rss in ops:
        now += step
        model.append(history.record(now, cpu, rss))
    return model


@settings(deadline=None)
@given(st.floats(1, 500), st.integers(1, 50), history_ops)
def test_history_is_bounded(
    max_age: float, max_samples: int, ops: list[tuple[float, float, int]]
) -> None:
    """The history keeps exactly the last max_samples samples younger than max_age_s."""
    history = ResourceHistory(max_age, max_samples)
    model = _fill(history, ops)
    newest = model[-1].at
    assert len(history) <= max_samples
    assert list(history) == [s for s in model[-max_samples:] if s.at > newest - max_age]
    assert history.latest() == model[-1]


@settings(deadline=None)
@given(
    st.floats(1, 500),
    history_ops,
    st.floats(-50, 2000),
    st.floats(0, 1000),
)
def test_history_window_matches_filter(
    max_age: float, ops: list[tuple[float, float, int]], now: float, seconds: float
) -> None:
    """window(now, s) is every kept sample after now - min(s, max_age_s) and at or before now."""
    history = ResourceHistory(max_age, 1000)
    _fill(history, ops)
    start = now - min(seconds, max_age)
    assert history.window(now, seconds) == [s for s in history if start < s.at <= now]


@settings(deadline=None)
@given(
    history_ops,
    st.floats(0, 2000),
    st.lists(st.floats(0, 1000), min_size=2, max_size=2).map(sorted),
)
def test_history_window_split(
    ops: list[tuple[float, float, int]], now: float, parts: list[float]
) -> None:
    """Splitting a window in two and joining the halves gives the same samples."""
    history = ResourceHistory(1000, 1000)
    _fill(history, ops)
    short, long = parts
    first = history.between(now - long, now - short)
    assert first + history.window(now, short) == history.window(now, long)


def test_history_validation() -> None:
    """Bad limits, negative windows and samples going back in time are refused."""
    with pytest.raises(ValueError, match="max_age_s"):
        ResourceHistory(0, 10)
    history = ResourceHistory(10, 10)
    history.record(5, 1.0, 1)
    with pytest.raises(ValueError, match="older"):
        history.record(4, 1.0, 1)
    with pytest.raises(ValueError, match="seconds"):
        history.window(5, -1)


def test_history_age_boundary() -> None:
    """A sample exactly max_age_s older than the newest is dropped, as windows exclude it."""
    history = ResourceHistory(10, 10)
    history.record(0, 1.0, 1)
    history.record(10, 2.0, 2)
    assert list(history) == [ResourceSample(10, 2.0, 2)] == history.window(10, 1e9)


# -- AgentHealth --------------------------------------------------------------------


def spec(**kw: object) -> HealthCheckSpec:
    base: dict[str, object] = {
        "heartbeat_timeout_s": 0.0,
        "cpu_threshold": 0.0,
        "memory_threshold": 0,
        "threshold_duration_s": 60.0,
    }
    return HealthCheckSpec(**{**base, **kw})  # type: ignore[arg-type]


def test_format_bytes() -> None:
    """Byte counts use binary units with one decimal."""
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(524_288_000) == "500.0 MiB"
    assert format_bytes(3 * 1024**4) == "3072.0 GiB"


def test_memory_episode_alerts_and_recovers_once() -> None:
    """A memory hog alerts and asks for recovery once, after the duration, with hysteresis."""
    h = AgentHealth("web", spec(memory_threshold=500 * MiB))
    h.process_started(0)
    rss = int(612.3 * MiB)
    for now in (0, 30):
        assert h.resources(now, 1.0, rss) == [] and h.check(now) is None
    [alert] = h.resources(60, 1.0, rss)
    assert alert == ResourceAlert("web", "memory", float(rss), float(500 * MiB), 60, 0)
    assert alert.describe() == "agent web: memory 612.3 MiB over 500.0 MiB for 60.0s"
    reason = h.check(60)
    assert reason == "memory: rss 612.3 MiB over 500.0 MiB since 60.0s ago"
    assert h.resources(90, 1.0, 480 * MiB) == [] and h.check(90) is None
    snap = h.snapshot(90)
    assert snap.healthy is False
    assert snap.checks[Check.MEMORY].detail == (
        "memory: rss 480.0 MiB, over 500.0 MiB since 90.0s ago, clears below 450.0 MiB"
    )
    h.resources(120, 1.0, 400 * MiB)
    assert h.check(120) is None
    snap = h.snapshot(120)
    assert snap.healthy is True and snap.last_error is not None
    assert snap.last_error.startswith("memory: rss 480.0 MiB")


def test_cpu_alert_message() -> None:
    """CPU alerts and reasons are in percent of the process tree."""
    h = AgentHealth("web", spec(cpu_threshold=50.0, threshold_duration_s=0))
    h.process_started(0)
    [alert] = h.resources(5, 87.5, 1)
    assert alert.describe() == "agent web: cpu 87.5% over 50.0% for 0.0s"
    assert h.check(5) == "cpu: 87.5% over 50.0% since 0.0s ago"


def test_heartbeat_episode_and_deadline() -> None:
    """A silent agent is reported once at the deadline, and again only after it recovered."""
    h = AgentHealth("a", spec(heartbeat_timeout_s=90, heartbeat_required=True))
    assert h.next_deadline() is None
    h.process_started(10)
    assert h.next_deadline() == 100 and h.check(99.9) is None
    assert h.check(100) == "heartbeat: none since start 90.0s ago (timeout 90s)"
    assert h.next_deadline() is None and h.check(150) is None
    h.heartbeat(151)
    assert h.check(151) is None and h.next_deadline() == 241
    assert h.check(241) == "heartbeat: none for 90.0s (timeout 90s)"


def test_probes_and_several_checks_in_one_reason() -> None:
    """Two unhealthy checks give one request, naming both."""
    h = AgentHealth(
        "a",
        spec(
            http_endpoint="http://127.0.0.1:9100/metrics",
            tcp_endpoint="127.0.0.1:9100",
            failures=2,
        ),
    )
    h.process_started(0)
    h.probe(1, Check.HTTP, "HTTP 503")
    assert h.snapshot(1).checks[Check.HTTP].state is CheckState.PENDING
    h.probe(2, Check.HTTP, "HTTP 503")
    h.probe(2, Check.TCP, "refused")
    h.probe(3, Check.TCP, "refused")
    assert h.check(3) == (
        "http: 2 failures in a row since 2.0s ago, last: HTTP 503; "
        "tcp: 2 failures in a row since 1.0s ago, last: refused"
    )
    h.probe(4, Check.HTTP, None)
    assert h.check(4) is None  # tcp still fails: the same episode
    h.probe(5, Check.TCP, None)
    assert h.check(5) is None and h.snapshot(5).healthy is True


def test_disabled_checks_and_probe_misuse() -> None:
    """Unconfigured checks show as disabled; probing one is ignored; probing cpu is an error."""
    h = AgentHealth("a", spec())
    h.process_started(0)
    h.probe(1, Check.HTTP, "refused")
    snap = h.snapshot(1)
    assert snap.healthy is True
    assert {c: v.state for c, v in snap.checks.items()} == {
        Check.PROCESS: CheckState.HEALTHY,
        **dict.fromkeys(list(Check)[1:], CheckState.DISABLED),
    }
    assert snap.checks[Check.TCP].detail == "tcp: disabled"
    with pytest.raises(ValueError, match="cpu is not a probe check"):
        h.probe(1, Check.CPU, None)


def test_process_exit_and_reset() -> None:
    """An exit is unhealthy but asks nothing; a new start begins afresh; a stop is unknown."""
    h = AgentHealth("a", spec(heartbeat_timeout_s=5, heartbeat_required=True, memory_threshold=10))
    assert h.snapshot(0).healthy is None
    h.process_started(0)
    assert h.check(5) is not None
    h.process_exited(6, "exited with status 1")
    snap = h.snapshot(7)
    assert (
        snap.healthy is False
        and snap.checks[Check.PROCESS].detail == "process: exited with status 1"
    )
    assert h.check(7) is None and h.next_deadline() is None
    assert h.resources(7, 1.0, 100) == [] and len(h.history) == 0
    h.process_started(8)
    assert h.check(13) == "heartbeat: none since start 5.0s ago (timeout 5s)"
    h.reset()
    assert h.snapshot(20).healthy is None and h.check(20) is None
    assert h.snapshot(20).summary() == "health unknown"


def test_status_text_and_reconfigure() -> None:
    """Status text is kept; a reload rebuilds the checks and re-arms the heartbeat."""
    h = AgentHealth("a", spec(heartbeat_timeout_s=5))
    h.process_started(0)
    h.set_status_text("serving 3 targets")
    h.heartbeat(1)  # the agent beats: the check is armed, and stays armed over a reload
    h.reconfigure(4, spec(heartbeat_timeout_s=10, cpu_threshold=50))
    assert h.next_deadline() == 14
    snap = h.snapshot(4)
    assert snap.status_text == "serving 3 targets"
    assert snap.summary() == "healthy [serving 3 targets]"
    assert h.snapshot(20).summary() == (
        "unhealthy: heartbeat: none since start 16.0s ago (timeout 10s) [serving 3 targets]"
    )
    assert snap.checks[Check.CPU].detail == "cpu: no sample yet"


agent_ops = st.lists(
    st.tuples(
        st.sampled_from(["start", "exit", "beat", "sample", "http", "check", "check", "check"]),
        STEPS,
        st.floats(0, 200),
        st.booleans(),
    ),
    max_size=60,
)


@settings(deadline=None, max_examples=200)
@given(agent_ops)
def test_recovery_once_per_episode(ops: list[tuple[str, float, float, bool]]) -> None:
    """A reason comes once when a running agent turns unhealthy, then not until it recovers."""
    h = AgentHealth(
        "a",
        spec(
            heartbeat_timeout_s=30,
            heartbeat_required=True,
            cpu_threshold=50,
            threshold_duration_s=20,
            http_endpoint="x",
            failures=2,
        ),
    )
    now, running, episode = 0.0, False, False
    for op, step, value, ok in [("start", 0.0, 0.0, True), *ops]:
        now += step
        if op == "start":
            h.process_started(now)
            running, episode = True, False
        elif op == "exit":
            h.process_exited(now)
            running = False
        elif op == "beat":
            h.heartbeat(now)
        elif op == "sample":
            h.resources(now, value, 1)
        elif op == "http":
            h.probe(now, Check.HTTP, None if ok else "refused")
        else:
            snap = h.snapshot(now)
            bad = any(v.unhealthy for c, v in snap.checks.items() if c is not Check.PROCESS)
            reason = h.check(now)
            assert (reason is not None) == (bad and running and not episode)
            if reason is not None:
                details = [v.detail for c, v in snap.checks.items() if c is not Check.PROCESS]
                assert reason == "; ".join(d for d in details if d in reason)
                assert reason == h.last_error
            episode = bad and (episode or reason is not None)


def test_a_trigger_during_an_overdue_heartbeat_leaves_no_deadline_behind() -> None:
    """Regression (found by the stateful test): the monitor would have woken at once, forever."""
    h = AgentHealth("a", spec(heartbeat_timeout_s=5, heartbeat_required=True))
    h.process_started(0)
    h.trigger(5)
    assert h.check(5) == "heartbeat: the agent triggered its watchdog"
    assert h.next_deadline() is None


def test_an_exit_ends_the_episode_at_once() -> None:
    """Regression (found by the stateful test): in_episode stayed true until the next check."""
    h = AgentHealth("a", spec(heartbeat_timeout_s=5, heartbeat_required=True))
    h.process_started(0)
    assert h.check(5) is not None and h.in_episode
    h.process_exited(6, "exited with status 1")
    assert not h.in_episode
    h.process_started(7)
    assert h.check(12) is not None and h.in_episode
    h.reset()
    assert not h.in_episode
