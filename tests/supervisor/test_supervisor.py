"""The supervisor with real agent processes: restarts, backoff, stops, events, reload."""

from __future__ import annotations

import math
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing

from supervisor import (
    AgentActiveError,
    AgentState,
    RestartPolicy,
    RestartSpec,
    Supervisor,
    SupervisorClosedError,
    UnknownAgentError,
    nominal_delay,
    open_supervisor,
)
from supervisor._backoff import JITTER
from tests.supervisor.helpers import (
    MemoryStore,
    across_runs,
    alive,
    kill_all,
    shell_agent,
    wait_for_file,
)

LONG = "echo start $$; exec sleep 1000"


async def test_crash_is_restarted_at_once(tmp_path: Path) -> None:
    """A child killed with SIGKILL is replaced immediately, and the status says how it died."""
    spec = shell_agent("a", LONG, tmp_path)
    async with open_supervisor([spec], work_dir=str(tmp_path)) as sup:
        first = await sup.wait_state("a", AgentState.RUNNING)
        await wait_for_file(tmp_path / "logs" / "a.log", f"start {first.pid}")
        os.kill(first.pid, signal.SIGKILL)
        with trio.fail_after(20):
            while sup.status("a").pid in (0, first.pid):
                await sup.wait_state("a", AgentState.STARTING, AgentState.RUNNING)
                await trio.sleep(0.001)
        info = sup.status("a")
        assert info.restart_count == 1
        assert info.last_exit is not None and info.last_exit.signal == signal.SIGKILL
        assert "killed by signal 9" in (info.last_error or "")
        assert not alive(first.pid)
        lines = await wait_for_file(tmp_path / "logs" / "a.log", "start", lines=2)
        assert lines[-1] == f"start {info.pid}"
    assert not alive(info.pid)


async def test_crash_loop_backs_off_then_fails(tmp_path: Path) -> None:
    """A crash loop restarts at once, then after base, 2*base, ..., then is failed.

    Real processes run on the real clock (a virtual clock would jump while the supervisor
    waits for them, past reset_after); only lower bounds of the delays are asserted, which
    a busy machine cannot break. The exact delays are the machine's, tested on its own.
    """
    restart = RestartSpec(max_retries=3, backoff_base_s=0.1, backoff_max_s=0.4)
    spec = shell_agent("loop", "echo boom; exit 3", tmp_path, restart=restart)
    async with (
        open_supervisor([spec], work_dir=str(tmp_path)) as sup,
        sup.subscribe() as events,
    ):
        await sup.start("loop")
        seen = []
        async for event in events:
            seen.append(event)
            if event.new is AgentState.FAILED:
                break
    scheduled = [e for e in seen if e.new is AgentState.RESTARTING]
    started = [e for e in seen if e.event == "backoff_elapsed"]
    assert len(scheduled) == 3 and len(started) == 3
    for attempt, (a, b) in enumerate(zip(scheduled, started, strict=True)):
        delay, nominal = b.at - a.at, nominal_delay(attempt, 0.1, 0.4)
        assert nominal * (1 - JITTER) <= delay + 1e-9, attempt
    final = sup.status("loop")
    assert final.status is AgentState.FAILED
    assert final.last_exit is not None and final.last_exit.code == 3
    assert "exited with status 3" in (final.last_error or "")
    assert "gave up after 3 restart(s)" in (final.last_error or "")


async def test_failed_agent_is_cleared_by_a_manual_start(tmp_path: Path) -> None:
    """After failing, a manual start runs the agent again with a fresh budget."""
    marker = tmp_path / "fixed"
    script = f"[ -e {marker} ] && exec sleep 1000; exit 1"
    spec = shell_agent("f", script, tmp_path, restart=RestartSpec(max_retries=0))
    async with open_supervisor([spec], work_dir=str(tmp_path)) as sup:
        with trio.fail_after(20):
            info = await sup.wait_state("f", AgentState.FAILED)
        assert info.pid == 0 and info.next_restart_at is None
        marker.touch()
        outcome = await sup.start("f")
        assert outcome.ok and outcome.state in (AgentState.STARTING, AgentState.RUNNING)
        assert sup.status("f").consecutive_restarts == 0


async def test_stop_of_a_sigterm_ignorer_uses_sigkill(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """stop() escalates to SIGKILL exactly after stop_timeout and reports it."""
    spec = shell_agent(
        "stubborn", "trap '' TERM; echo ready; exec sleep 1000", tmp_path, stop_timeout_s=30.0
    )
    # No periodic log check nor health tick: virtual time only jumps to the stop deadline.
    async with open_supervisor(
        [spec], work_dir=str(tmp_path), log_check_interval_s=math.inf, health_checks=False
    ) as sup:
        await wait_for_file(tmp_path / "logs" / "stubborn.log", "ready")
        pid = sup.status("stubborn").pid
        t0 = trio.current_time()
        outcome = await sup.stop("stubborn")
        assert trio.current_time() - t0 == pytest.approx(30.0)
        assert outcome.ok and outcome.state is AgentState.STOPPED
        exit_status = sup.status("stubborn").last_exit
        assert exit_status is not None and exit_status.signal == signal.SIGKILL
        assert not alive(pid)


async def test_forced_stop_does_not_wait_for_the_timeout(tmp_path: Path) -> None:
    """stop(graceful=False) sends SIGKILL at once instead of waiting out stop_timeout."""
    spec = shell_agent(
        "s", "trap '' TERM; echo ready; exec sleep 1000", tmp_path, stop_timeout_s=3600.0
    )
    async with open_supervisor([spec], work_dir=str(tmp_path)) as sup:
        await wait_for_file(tmp_path / "logs" / "s.log", "ready")
        with trio.fail_after(60):  # far below the hour a graceful stop would take
            outcome = await sup.stop("s", graceful=False)
        assert outcome.ok
        exit_status = sup.status("s").last_exit
        assert exit_status is not None and exit_status.signal == signal.SIGKILL


async def test_leaving_the_scope_stops_the_whole_tree(tmp_path: Path) -> None:
    """Library mode: leaving the supervisor's scope stops every agent and its children."""
    specs = [
        shell_agent(f"t{i}", "sleep 1000 & echo child=$!; echo ready; wait", tmp_path)
        for i in range(3)
    ]
    pids: list[int] = []
    async with open_supervisor(specs, work_dir=str(tmp_path)) as sup:
        for spec in specs:
            lines = await wait_for_file(tmp_path / "logs" / f"{spec.id}.log", "child=")
            pids += [sup.status(spec.id).pid, int(lines[0].split("=")[1])]
        assert all(alive(pid) for pid in pids)
    try:
        with trio.fail_after(10):
            while any(alive(pid) for pid in pids):
                await trio.sleep(0.01)
    finally:
        kill_all(pids)


async def test_start_all_and_stop_all_report_each_agent(tmp_path: Path) -> None:
    """Batch operations return every agent's outcome instead of failing on the first."""
    good = shell_agent("good", LONG, tmp_path)
    bad = shell_agent("bad", "", tmp_path, restart=RestartSpec(max_retries=0))
    bad = type(bad)(
        **{
            **{f: getattr(bad, f) for f in bad.__dataclass_fields__},
            "binary_path": str(tmp_path / "missing-binary"),
            "enabled": False,
        }
    )
    async with open_supervisor([good, bad], work_dir=str(tmp_path)) as sup:
        results = await sup.start_all(include_disabled=True)
        assert set(results) == {"good", "bad"}
        assert results["good"].ok
        assert not results["bad"].ok
        assert "missing-binary" in (results["bad"].error or "")
        stopped = await sup.stop_all()
        assert all(o.state is AgentState.STOPPED for o in stopped.values())
        assert stopped["good"].ok
        stats = sup.statistics()
        assert stats.agents == 2 and stats.by_state[AgentState.STOPPED] == 2
        assert sum(stats.by_state.values()) == 2 and stats.orphans_reaped == 0


async def test_events_reach_every_subscriber(tmp_path: Path) -> None:
    """Two consumers both see every change; a slow one learns how many it missed."""
    spec = shell_agent("e", LONG, tmp_path, start_seconds_s=0.0)
    async with open_supervisor([spec], work_dir=str(tmp_path)) as sup:
        await sup.wait_state("e", AgentState.RUNNING)
        with sup.subscribe() as fast, sup.subscribe(max_buffer=1) as slow:
            await sup.restart("e")
            await sup.stop("e")
            received = [fast.receive_nowait() for _ in range(5)]
            assert [(e.old, e.new) for e in received] == [
                (AgentState.RUNNING, AgentState.RESTARTING),
                (AgentState.RESTARTING, AgentState.STARTING),
                (AgentState.STARTING, AgentState.RUNNING),
                (AgentState.RUNNING, AgentState.STOPPING),
                (AgentState.STOPPING, AgentState.STOPPED),
            ]
            last = await slow.receive()
            assert last.new is AgentState.STOPPED and last.dropped == 4


async def test_status_tail_and_errors(tmp_path: Path) -> None:
    """Status snapshots, log tail, and clear errors for unknown or running agents."""
    spec = shell_agent(
        "t", "for i in 1 2 3; do echo line $i; done; exec sleep 1000", tmp_path, name="Tail test"
    )
    async with open_supervisor([spec], work_dir=str(tmp_path)) as sup:
        await wait_for_file(tmp_path / "logs" / "t.log", "line 3")
        assert sup.tail("t", 2) == ["line 2", "line 3"]
        info = sup.status("t")
        assert info.name == "Tail test" and info.pid > 0 and info.created_at <= info.updated_at
        with pytest.raises(UnknownAgentError, match="'nope'"):
            await sup.start("nope")
        with pytest.raises(AgentActiveError):
            sup.registry.unregister("t")
        with pytest.raises(ValueError, match="between 1 and 1000"):
            sup.tail("t", 5000)
        await sup.remove("t")
        assert "t" not in sup.registry
    with pytest.raises(SupervisorClosedError, match="not running"):
        await Supervisor([spec], work_dir=str(tmp_path)).start("t")


async def test_reload_touches_only_what_changed(tmp_path: Path) -> None:
    """Reload adds, removes and restarts changed agents; unchanged ones keep their process."""
    same = shell_agent("same", LONG, tmp_path)
    changed = shell_agent("changed", LONG, tmp_path)
    tuned = shell_agent("tuned", LONG, tmp_path)
    gone = shell_agent("gone", LONG, tmp_path)
    async with open_supervisor([same, changed, tuned, gone], work_dir=str(tmp_path)) as sup:
        before = {
            s.id: (await sup.wait_state(s.id, AgentState.RUNNING)).pid
            for s in (same, changed, tuned, gone)
        }
        new = (
            same,
            shell_agent("changed", "echo v2; exec sleep 1000", tmp_path),
            shell_agent(
                "tuned",
                LONG,
                tmp_path,
                stop_timeout_s=3.0,
                restart=RestartSpec(policy=RestartPolicy.ON_FAILURE),
            ),
            shell_agent("new", LONG, tmp_path),
        )
        plan = await sup.reload(new)
        assert plan.unchanged == ("same",)
        assert [s.id for s in plan.restart] == ["changed"]
        assert [s.id for s in plan.update] == ["tuned"]
        assert plan.remove == ("gone",) and [s.id for s in plan.add] == ["new"]
        assert sup.status("same").pid == before["same"]
        assert sup.status("tuned").pid == before["tuned"]
        assert sup.registry.get("tuned").stop_timeout_s == 3.0
        assert sup.status("changed").pid not in (0, before["changed"])
        assert sup.status("new").pid > 0
        assert "gone" not in sup.registry and not alive(before["gone"])


async def test_leave_running_keeps_agents_and_the_next_run_adopts_them(tmp_path: Path) -> None:
    """leave_running: exit leaves the agent running; the next run adopts it, no duplicate."""
    spec = shell_agent("d", LONG, tmp_path)
    log = tmp_path / "logs" / "d.log"
    store = MemoryStore()
    options = across_runs(tmp_path, store)
    pid = 0
    try:
        async with open_supervisor([spec], **options) as sup:
            pid = (await sup.wait_state("d", AgentState.RUNNING)).pid
        assert alive(pid)
        assert store.saved["d"].process is not None and store.saved["d"].process.pid == pid
        async with open_supervisor([spec], **options) as sup2:
            info = sup2.status("d")
            assert info.pid == pid and info.status is AgentState.RUNNING
            assert len(await wait_for_file(log, "start")) == 1  # never started twice
            os.kill(pid, signal.SIGKILL)  # adopted: death noticed through the pidfd
            with trio.fail_after(20):
                while sup2.status("d").pid in (0, pid):
                    await trio.sleep(0.01)
            assert "unknown" in (sup2.status("d").last_error or "")
            await sup2.stop("d")
        async with open_supervisor([spec], **options) as sup3:
            # The user's stop is remembered across restarts.
            assert sup3.status("d").status is AgentState.STOPPED
    finally:
        kill_all([pid])


async def test_enabling_a_once_disabled_agent_takes_effect_at_the_next_start(
    tmp_path: Path,
) -> None:
    """A change of enabled in the configuration wins over the remembered stop (defect 1)."""
    spec = shell_agent("e", LONG, tmp_path)
    store = MemoryStore()
    options = across_runs(tmp_path, store)
    async with open_supervisor([replace(spec, enabled=False)], **options) as sup:
        assert sup.status("e").status is AgentState.STOPPED
    assert store.saved["e"].desired == "stopped"
    pid = 0
    try:
        async with open_supervisor([spec], **options) as sup:
            pid = (await sup.wait_state("e", AgentState.RUNNING)).pid
            await sup.stop("e")  # a stop by the user, with the agent enabled: remembered
        async with open_supervisor([spec], **options) as sup:
            assert sup.status("e").status is AgentState.STOPPED
    finally:
        kill_all([pid])


async def test_enabling_a_disabled_agent_by_reload_starts_it(tmp_path: Path) -> None:
    """Setting enabled back to true on reload starts the agent (defect 1, SIGHUP half)."""
    spec = shell_agent("e", LONG, tmp_path)
    async with open_supervisor([replace(spec, enabled=False)], work_dir=str(tmp_path)) as sup:
        assert sup.status("e").status is AgentState.STOPPED
        plan = await sup.reload([spec])
        assert [s.id for s in plan.restart] == ["e"]
        assert (await sup.wait_state("e", AgentState.RUNNING)).pid > 0
        plan = await sup.reload([replace(spec, enabled=False)])
        assert sup.status("e").status is AgentState.STOPPED


async def test_agent_keeps_logging_after_the_supervisor_is_gone(tmp_path: Path) -> None:
    """Output goes straight to the log file: no pipe for the agent to die on when we exit."""
    script = "while :; do echo tick; sleep 0.02; done"
    spec = shell_agent("w", script, tmp_path)
    log = tmp_path / "logs" / "w.log"
    pid = 0
    try:
        async with open_supervisor([spec], work_dir=str(tmp_path), leave_running=True) as sup:
            pid = (await sup.wait_state("w", AgentState.RUNNING)).pid
            await wait_for_file(log, "tick")
        written = len(log.read_text().splitlines())
        await wait_for_file(log, "tick", lines=written + 5)  # still writing, we are gone
        assert alive(pid)
    finally:
        kill_all([pid])
