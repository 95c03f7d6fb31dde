"""Health checks wired into the supervisor: real agents, real sockets, Trio's clocks."""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import stat
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, strategies as st

from supervisor import (
    AgentEvent,
    AgentSpec,
    AgentState,
    EventSubscription,
    HealthCheckSpec,
    RestartPolicy,
    RestartSpec,
    Supervisor,
    open_supervisor,
)
from supervisor._health import Check, CheckState, ResourceAlert, SocketSetupError
from supervisor._health._monitor import (
    MAX_RESOLUTION_S,
    MIN_RESOLUTION_S,
    next_tick,
    resolution_for,
    socket_dir_for,
)
from tests.supervisor.helpers import (
    GUARD_S,
    alive,
    free_port,
    shell_agent,
    wait_for_file,
    wait_until,
)

QUIET = HealthCheckSpec(cpu_threshold=0, memory_threshold=0, heartbeat_timeout_s=0)
"""Every check off: tests switch on only the one they exercise."""


def python_agent(agent_id: str, code: str, tmp: Path, **kw: object) -> AgentSpec:
    """An agent running Python ``code`` (it can import ``supervisor.agent``)."""
    spec = shell_agent(agent_id, "", tmp, **kw)
    return dataclasses.replace(spec, binary_path=sys.executable, args=("-c", textwrap.dedent(code)))


async def next_event(
    events: EventSubscription, match: Callable[[AgentEvent], bool], *, guard: float = GUARD_S * 3
) -> AgentEvent:
    """The next event that matches, within the guard time."""
    with trio.fail_after(guard):
        async for event in events:
            if match(event):
                return event
    raise AssertionError("event stream ended")


def health_event(kind: str, agent_id: str) -> Callable[[AgentEvent], bool]:
    return lambda e: e.event == kind and e.agent_id == agent_id


# -- pure helpers ---------------------------------------------------------------------


@given(
    st.floats(min_value=-1e6, max_value=1e6),
    st.sampled_from([0.1, 0.3, 1.0, 7.3, 30.0, 300.0]),
    st.floats(min_value=0, max_value=1e6),
)
def test_next_tick_is_the_first_grid_point_after_now(
    start: float, interval: float, ahead: float
) -> None:
    """Ticks lie on start + k*interval, after now, and no grid point is skipped before them."""
    now = start + ahead
    tick = next_tick(start, interval, now)
    k = round((tick - start) / interval)
    assert k >= 1 and math.isclose(tick, start + k * interval, rel_tol=1e-12, abs_tol=1e-9)
    assert tick > now
    assert start + (k - 1) * interval <= now or k == 1


@given(st.lists(st.sampled_from([0.0, 0.3, 1.0, 3.0, 30.0, 90.0, 600.0]), max_size=5))
def test_reading_rounds_follow_the_shortest_heartbeat_timeout(timeouts: list[float]) -> None:
    """A sixth of the shortest enabled timeout, within bounds; the longest without any."""
    resolution = resolution_for(timeouts)
    assert MIN_RESOLUTION_S <= resolution <= MAX_RESOLUTION_S
    enabled = [t for t in timeouts if t > 0]
    if not enabled:
        assert resolution == MAX_RESOLUTION_S
    else:
        assert resolution <= max(min(enabled) / 6, MIN_RESOLUTION_S)


def test_socket_dir_is_under_the_work_dir_unless_too_long(tmp_path: Path) -> None:
    """Short work dirs hold their sockets; long ones get a short private directory."""
    assert socket_dir_for("/var/lib/hostvisor") == "/var/lib/hostvisor/run"
    long_dir = str(tmp_path / ("x" * 120))
    fallback = socket_dir_for(long_dir)
    assert len(os.path.join(fallback, "heartbeat.sock")) <= 107
    assert f"hostvisor-{os.geteuid()}-" in fallback
    assert fallback != socket_dir_for(long_dir + "y")  # one per work dir


async def test_socket_dir_is_made_private_and_removed_on_exit(
    tmp_path: Path, sock_dir: Path
) -> None:
    """A loose existing directory is tightened to 0700; a file in its place is refused."""
    run = sock_dir / "run"
    run.mkdir(mode=0o755)
    async with open_supervisor([], work_dir=str(tmp_path), socket_dir=str(run)) as sup:
        assert stat.S_IMODE(run.stat().st_mode) == 0o700
        assert sup.monitor is not None
        for path in (sup.monitor.heartbeats.path, sup.monitor.notifications.path):
            assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    assert not run.exists()

    blocker = sock_dir / "file"
    blocker.write_text("")
    with pytest.raises(SocketSetupError, match="not a directory"):
        async with open_supervisor([], work_dir=str(tmp_path), socket_dir=str(blocker)):
            pass


# -- environment and attribution -------------------------------------------------------


async def test_agent_gets_the_sockets_and_watchdog_in_its_environment(tmp_path: Path) -> None:
    """NOTIFY_SOCKET, HOSTVISOR_HEARTBEAT_SOCKET, and WATCHDOG_USEC from heartbeat_timeout."""
    script = (
        'echo "env $NOTIFY_SOCKET $HOSTVISOR_HEARTBEAT_SOCKET ${WATCHDOG_USEC:-none}"; sleep 1000'
    )
    with_timeout = shell_agent(
        "a", script, tmp_path, health_check=HealthCheckSpec(heartbeat_timeout_s=90)
    )
    without = shell_agent("b", script, tmp_path, health_check=QUIET)
    async with open_supervisor([with_timeout, without], work_dir=str(tmp_path)) as sup:
        assert sup.monitor is not None
        paths = f"{sup.monitor.notifications.path} {sup.monitor.heartbeats.path}"
        await wait_for_file(tmp_path / "logs" / "a.log", f"env {paths} 90000000")
        await wait_for_file(tmp_path / "logs" / "b.log", f"env {paths} none")


async def test_messages_are_attributed_to_the_agent_tree_only(tmp_path: Path) -> None:
    """The agent, its descendants and its orphans resolve to it; we and pid 1 do not."""
    script = (
        "sleep 1000 & sh -c 'sleep 1000 & wait' & (sleep 1000 & echo orphan $!); echo ready; wait"
    )
    spec = shell_agent("tree", script, tmp_path, health_check=QUIET)
    async with open_supervisor([spec], work_dir=str(tmp_path)) as sup:
        info = await sup.wait_state("tree", AgentState.RUNNING)
        log = tmp_path / "logs" / "tree.log"
        [orphan_line] = await wait_for_file(log, "orphan")
        await wait_for_file(log, "ready")
        assert sup.monitor is not None
        await wait_until(lambda: len(_descendants(info.pid)) >= 3)
        orphan = int(orphan_line.split()[1])
        assert orphan not in _descendants(info.pid)  # re-parented: found by its session
        for pid in [info.pid, orphan, *_descendants(info.pid)]:
            assert sup.monitor.resolve(pid) == "tree", pid
        assert sup.monitor.resolve(os.getpid()) is None
        assert sup.monitor.resolve(1) is None
        assert sup.monitor.resolve(2**22 + 1) is None  # no such process
    # The stop's last SIGKILL to the group reaches the orphan; it dies a moment later.
    await wait_until(lambda: not alive(orphan))


def _descendants(pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


# -- heartbeats -----------------------------------------------------------------------

BEATS_THEN_HANGS = """
    import sys, time
    from supervisor.agent import Heartbeater
    print("started", flush=True)
    with Heartbeater() as beats:
        for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
            assert beats.send(status="ok", version="1.0")
            time.sleep(0.1)
    print("hung", flush=True)
    time.sleep(1000)
"""


async def test_agent_that_stops_beating_is_restarted(tmp_path: Path) -> None:
    """Beats arm the check; silence for heartbeat_timeout asks for a restart, with the reason."""
    checks = HealthCheckSpec(heartbeat_timeout_s=1.0, cpu_threshold=0, memory_threshold=0)
    spec = python_agent("hb", BEATS_THEN_HANGS, tmp_path, health_check=checks)
    async with open_supervisor([spec], work_dir=str(tmp_path)) as sup, sup.subscribe() as events:
        first = await sup.wait_state("hb", AgentState.RUNNING)
        unhealthy = await next_event(events, health_event("unhealthy", "hb"))
        assert unhealthy.reason.startswith("heartbeat: none for 1.")
        assert unhealthy.reason.endswith("(timeout 1s)")
        assert unhealthy.pid == first.pid
        await wait_until(lambda: sup.status("hb").pid not in (0, first.pid))
        info = sup.status("hb")
        assert info.restart_count == 1 and (info.last_error or "").startswith("heartbeat: none")
        assert not alive(first.pid)
        assert sup.statistics().health is not None
        assert sup.statistics().health.heartbeat.heartbeats >= 5  # type: ignore[union-attr]
        assert info.health is not None and info.health.status_text in (None, "ok")
        assert info.version == "1.0"  # what the heartbeats said, kept across the restart
        await wait_until(lambda: sup.status("hb").last_heartbeat is not None)
        beat = sup.status("hb").last_heartbeat
        assert beat is not None and abs(beat - time.time()) < 120  # wall clock


async def test_agent_that_never_beats_is_left_alone_unless_required(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Not armed: no verdict for silence. Required: unhealthy exactly at the timeout."""
    checks = HealthCheckSpec(heartbeat_timeout_s=90, cpu_threshold=0, memory_threshold=0)
    silent = shell_agent("silent", "exec sleep 1000", tmp_path, health_check=checks)
    required = shell_agent(
        "required",
        "exec sleep 1000",
        tmp_path,
        health_check=HealthCheckSpec(
            heartbeat_timeout_s=90, heartbeat_required=True, cpu_threshold=0, memory_threshold=0
        ),
        restart=RestartSpec(policy=RestartPolicy.NEVER),
        enabled=False,
    )
    async with (
        open_supervisor([silent, required], work_dir=str(tmp_path)) as sup,
        sup.subscribe() as events,
    ):
        await sup.start("required")
        started = await next_event(
            events, lambda e: e.agent_id == "required" and e.new is AgentState.STARTING
        )
        unhealthy = await next_event(events, health_event("unhealthy", "required"), guard=200)
        # At the deadline itself (90.0 s after the spawn), not at some later polling tick.
        assert unhealthy.reason == "heartbeat: none since start 90.0s ago (timeout 90s)"
        assert unhealthy.at >= started.at + 90
        await trio.sleep(1000)
        snapshot = sup.status("silent").health
        assert snapshot is not None and snapshot.healthy is True
        assert snapshot.checks[Check.HEARTBEAT].detail == "heartbeat: waiting for the first beat"
        assert sup.status("silent").restart_count == 0
        required_info = sup.status("required")  # policy never: left running, unhealthy
        assert required_info.status is AgentState.RUNNING and required_info.healthy is False
        # The autojump clock would race a graceful stop's timeout against real exits.
        await sup.stop_all(graceful=False)


async def test_bad_heartbeat_input_changes_nothing(tmp_path: Path) -> None:
    """Garbage, a 10 MB line and a stranger are dropped and counted; the agent runs on."""
    checks = HealthCheckSpec(heartbeat_timeout_s=5.0, cpu_threshold=0, memory_threshold=0)
    code = BEATS_THEN_HANGS.replace(
        "range(int(sys.argv[1]) if len(sys.argv) > 1 else 5)", "iter(int, 1)"
    )
    good = python_agent("good", code, tmp_path, health_check=checks)
    script = """
        import socket, os, sys
        def send(data):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(os.environ["HOSTVISOR_HEARTBEAT_SOCKET"])
            try:
                s.sendall(data)
                s.recv(1)
            except OSError:
                pass
            s.close()
        send(b"not json\\n")
        send(b"[1, 2]\\n")
        send(b'{"pid": "x"}\\n')
        send(b"x" * (10 * 1024 * 1024))
        print("done", flush=True)
        import time; time.sleep(1000)
    """
    bad = python_agent("bad", script, tmp_path, health_check=QUIET)
    async with open_supervisor([good, bad], work_dir=str(tmp_path)) as sup:
        before = await sup.wait_state("good", AgentState.RUNNING)
        assert sup.monitor is not None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stranger:
            stranger.connect(sup.monitor.heartbeats.path)
            stranger.sendall(b'{"pid": 1, "status": "ok"}\n')
        await wait_for_file(tmp_path / "logs" / "bad.log", "done")
        await wait_until(lambda: _stats(sup).heartbeat.strangers >= 1)
        await wait_until(lambda: _stats(sup).heartbeat.malformed >= 3)
        await wait_until(lambda: _stats(sup).heartbeat.oversized >= 1)
        beats = _stats(sup).heartbeat.heartbeats
        await wait_until(lambda: _stats(sup).heartbeat.heartbeats > beats + 3)
        for agent_id in ("good", "bad"):
            info = sup.status(agent_id)
            assert info.status is AgentState.RUNNING and info.restart_count == 0
        assert sup.status("good").pid == before.pid and sup.status("good").healthy is True


def _stats(sup: Supervisor):  # type: ignore[no-untyped-def]
    stats = sup.statistics().health
    assert stats is not None
    return stats


# -- sd_notify ------------------------------------------------------------------------


async def test_sd_notify_ready_marks_the_agent_running(tmp_path: Path) -> None:
    """READY=1 ends the start wait long before start_seconds; STATUS= is shown."""
    code = """
        import socket, os, time
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.sendto(b"STATUS=warming up", os.environ["NOTIFY_SOCKET"])
        s.sendto(b"READY=1\\nSTATUS=serving 3 targets", os.environ["NOTIFY_SOCKET"])
        time.sleep(1000)
    """
    spec = python_agent("ntf", code, tmp_path, start_seconds_s=3600.0, health_check=QUIET)
    async with open_supervisor([spec], work_dir=str(tmp_path)) as sup, sup.subscribe() as events:
        running = await next_event(events, lambda e: e.new is AgentState.RUNNING)
        assert running.reason == "reported ready"
        await wait_until(lambda: _status_text(sup, "ntf") == "serving 3 targets")
        health = sup.status("ntf").health
        assert health is not None and health.summary() == "healthy [serving 3 targets]"


def _status_text(sup: Supervisor, agent_id: str) -> str | None:
    health = sup.status(agent_id).health
    return health.status_text if health else None


async def test_sd_notify_watchdog_trigger_and_stopping(tmp_path: Path) -> None:
    """WATCHDOG=1 beats, WATCHDOG=trigger is unhealthy at once, STOPPING=1 suspends recovery."""
    code = """
        import os, sys, time
        from supervisor.agent import notify
        notify(ready=True, watchdog=True)
        time.sleep(0.2)
        if os.path.exists("triggered"):
            notify(stopping=True)
            time.sleep(4)  # longer than the heartbeat timeout: no recovery while stopping
            sys.exit(0)
        open("triggered", "w").close()
        import socket
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.sendto(b"WATCHDOG=trigger", os.environ["NOTIFY_SOCKET"])
        time.sleep(1000)
    """
    # The timeout leaves room for the notify socket's 1 s reading rounds.
    checks = HealthCheckSpec(heartbeat_timeout_s=3.0, cpu_threshold=0, memory_threshold=0)
    spec = python_agent(
        "wd",
        code,
        tmp_path,
        start_seconds_s=3600.0,
        health_check=checks,
        restart=RestartSpec(policy=RestartPolicy.ON_FAILURE, backoff_base_s=0.1),
    )
    async with open_supervisor([spec], work_dir=str(tmp_path)) as sup, sup.subscribe() as events:
        unhealthy = await next_event(events, health_event("unhealthy", "wd"))
        assert unhealthy.reason == "heartbeat: the agent triggered its watchdog"
        exited = await next_event(events, lambda e: e.new is AgentState.STOPPED)
        assert exited.last_exit is not None and exited.last_exit.code == 0
        assert sup.statistics().health.unhealthy == 1  # type: ignore[union-attr]
        assert sup.status("wd").restart_count == 1


# -- resources ------------------------------------------------------------------------

MEMORY_HOG = """
    import time
    hog = bytearray(64 * 1024 * 1024)
    for i in range(0, len(hog), 4096):
        hog[i] = 1
    print("allocated", flush=True)
    time.sleep(1000)
"""


async def test_memory_hog_is_restarted_after_the_duration_and_not_before(tmp_path: Path) -> None:
    """Over the memory threshold for the duration: an alert, then recovery (Trio clock)."""
    alerts: list[ResourceAlert] = []
    checks = HealthCheckSpec(
        interval_s=0.2,
        cpu_threshold=0,
        memory_threshold=32 * 1024 * 1024,
        threshold_duration_s=1.0,
        heartbeat_timeout_s=0,
    )
    spec = python_agent("hog", MEMORY_HOG, tmp_path, health_check=checks)
    async with (
        open_supervisor([spec], work_dir=str(tmp_path), on_alert=alerts.append) as sup,
        sup.subscribe() as events,
    ):
        first = await sup.wait_state("hog", AgentState.RUNNING)
        alert_event = await next_event(events, health_event("resource_alert", "hog"))
        unhealthy = await next_event(events, health_event("unhealthy", "hog"))
        await wait_until(lambda: sup.status("hog").pid not in (0, first.pid))
        assert alerts and alert_event.alert == alerts[0]
        alert = alerts[0]
        assert alert.agent_id == "hog" and alert.type == "memory"
        assert alert.value > alert.threshold == 32 * 1024 * 1024
        assert alert.at - alert.since >= 1.0  # not before the duration
        assert unhealthy.at >= alert.since + 1.0
        assert unhealthy.reason.startswith("memory: rss ")
        assert "over 32.0 MiB since" in unhealthy.reason
        samples = sup.metrics("hog", 60)
        assert samples and all(s.rss_bytes > 0 for s in samples)
        # The whole tree's virtual memory and open files too (GetAgentMetrics' fields).
        assert all(s.memory_vms >= s.rss_bytes and s.open_files >= 3 for s in samples)
        assert all(abs(s.at - time.time()) < 120 for s in samples)  # wall clock
        assert [s.at for s in samples] == sorted(s.at for s in samples)


async def test_cpu_of_the_whole_tree_is_measured(tmp_path: Path) -> None:
    """A busy grandchild counts towards its agent's CPU; its history feeds metrics()."""
    script = "sh -c 'while :; do :; done' & wait"
    checks = HealthCheckSpec(
        interval_s=0.2,
        cpu_threshold=20,
        threshold_duration_s=0.5,
        memory_threshold=0,
        heartbeat_timeout_s=0,
    )
    spec = shell_agent("busy", script, tmp_path, health_check=checks)
    async with open_supervisor([spec], work_dir=str(tmp_path)) as sup, sup.subscribe() as events:
        unhealthy = await next_event(events, health_event("unhealthy", "busy"))
        assert unhealthy.reason.startswith("cpu: ")
        assert any(s.cpu_percent > 20 for s in sup.metrics("busy", 60))


async def test_samples_share_one_tick_per_interval(tmp_path: Path) -> None:
    """20 agents with the same interval cost one tick per period, not 20.

    Real clock: a late wake-up only means fewer ticks, so the bound holds on a busy machine.
    """
    checks = HealthCheckSpec(interval_s=0.2)
    specs = [
        shell_agent(f"a{i}", "exec sleep 1000", tmp_path, health_check=checks) for i in range(20)
    ]
    async with open_supervisor(specs, work_dir=str(tmp_path)) as sup:
        for spec in specs:
            await sup.wait_state(spec.id, AgentState.RUNNING)
        begin, since = _stats(sup), trio.current_time()
        await trio.sleep(2.0)
        stats, elapsed = _stats(sup), trio.current_time() - since
        ticks = stats.ticks - begin.ticks
        assert 1 <= ticks <= elapsed / 0.2 + 1
        # Each tick measures all 20 trees; the last one's thread may still be out.
        assert stats.samples - begin.samples >= 20 * (ticks - 1)
        assert all(sup.metrics(s.id, 3600) for s in specs)


# -- probes ---------------------------------------------------------------------------

HTTP_AGENT = """
    import http.server, sys
    code = int(sys.argv[1])
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b"ok")
        def log_message(self, *a):
            pass
    server = http.server.HTTPServer(("127.0.0.1", PORT), H)
    print("listening", flush=True)
    import os, socket  # READY=1 once listening: no probe finds the port closed
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
    server.serve_forever()
"""


async def test_http_and_tcp_probes(tmp_path: Path) -> None:
    """A 2xx endpoint is healthy; a 503 one is restarted after `failures` probes in a row."""
    good_port, bad_port = free_port(), free_port()
    good = python_agent(
        "good",
        HTTP_AGENT.replace("PORT", str(good_port)),
        tmp_path,
        start_seconds_s=60.0,  # running at READY=1
        health_check=HealthCheckSpec(
            interval_s=0.1,
            http_endpoint=f"http://127.0.0.1:{good_port}/metrics",
            tcp_endpoint=f"127.0.0.1:{good_port}",
            cpu_threshold=0,
            memory_threshold=0,
        ),
    )
    good = _with_args(good, "200")
    bad = python_agent(
        "bad",
        HTTP_AGENT.replace("PORT", str(bad_port)),
        tmp_path,
        start_seconds_s=60.0,
        health_check=HealthCheckSpec(
            interval_s=0.1,
            http_endpoint=f"http://127.0.0.1:{bad_port}/",
            failures=2,
            cpu_threshold=0,
            memory_threshold=0,
        ),
    )
    bad = _with_args(bad, "503")
    async with (
        open_supervisor([good, bad], work_dir=str(tmp_path)) as sup,
        sup.subscribe() as events,
    ):
        unhealthy = await next_event(events, health_event("unhealthy", "bad"))
        assert unhealthy.reason.startswith("http: 2 failures in a row since ")
        assert unhealthy.reason.endswith("last: HTTP 503")
        await wait_until(
            lambda: (
                (h := sup.status("good").health) is not None
                and h.checks[Check.HTTP].state is CheckState.HEALTHY
                and h.checks[Check.TCP].state is CheckState.HEALTHY
            )
        )
        assert sup.status("good").restart_count == 0


async def test_an_endpoint_that_cannot_be_probed_fails_its_check(tmp_path: Path) -> None:
    """Endpoints a library caller wrote badly fail their checks with the reason; no crash."""
    odd = shell_agent(
        "odd",
        "exec sleep 60",
        tmp_path,
        restart=RestartSpec(policy=RestartPolicy.NEVER),
        health_check=HealthCheckSpec(
            interval_s=0.1,
            http_endpoint="http://127.0.0.1/a b",
            tcp_endpoint="a..b:80",
            failures=1,
            cpu_threshold=0,
            memory_threshold=0,
        ),
    )
    async with (
        open_supervisor([odd], work_dir=str(tmp_path)) as sup,
        sup.subscribe() as events,
    ):
        unhealthy = await next_event(events, health_event("unhealthy", "odd"))
        assert "http: 1 failure in a row" in unhealthy.reason
        assert "last: health check URL 'http://127.0.0.1/a b'" in unhealthy.reason
        assert "tcp: 1 failure in a row" in unhealthy.reason
        assert "last: invalid endpoint 'a..b:80': 'a..b' is not a valid host name" in (
            unhealthy.reason
        )


def _with_args(spec: AgentSpec, *extra: str) -> AgentSpec:
    return dataclasses.replace(spec, args=(*spec.args, *extra))


async def test_health_checks_can_be_switched_off(tmp_path: Path) -> None:
    """Without health checks: no sockets, no variables, no health verdicts."""
    spec = shell_agent("a", 'echo "n=${NOTIFY_SOCKET:-unset}"; exec sleep 1000', tmp_path)
    async with open_supervisor([spec], work_dir=str(tmp_path), health_checks=False) as sup:
        await wait_for_file(tmp_path / "logs" / "a.log", "n=unset")
        assert sup.monitor is None and sup.statistics().health is None
        assert not (tmp_path / "run").exists()


async def test_reload_reconfigures_checks_in_place(tmp_path: Path) -> None:
    """A changed health_check applies to the running process without a restart."""
    spec = shell_agent("a", "exec sleep 1000", tmp_path, health_check=QUIET)
    async with open_supervisor([spec], work_dir=str(tmp_path)) as sup:
        before = await sup.wait_state("a", AgentState.RUNNING)
        changed = dataclasses.replace(
            spec, health_check=HealthCheckSpec(heartbeat_timeout_s=0, cpu_threshold=90)
        )
        plan = await sup.reload([changed])
        assert [s.id for s in plan.update] == ["a"]
        health = sup.status("a").health
        assert health is not None and health.checks[Check.CPU].state is CheckState.UNKNOWN
        assert sup.status("a").pid == before.pid
