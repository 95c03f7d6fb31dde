"""The daemon's services over a real supervisor, real agents and real gRPC (loopback TCP
and a Unix socket): every answer and status code of proto.DaemonService and
hostvisor.v1.HostvisorService."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import trio

from supervisor import AgentState, AgentType, HealthCheckSpec, RestartPolicy, RestartSpec
from tests.supervisor.helpers import shell_agent, wait_for_file, wait_until
from tests.transport.daemon.grpc_helpers import serving
from transport import (
    DaemonService,
    HostvisorService,
    RemoteError,
    StatusCode,
    daemon_pb2 as d,
    hostvisor_pb2 as h,
)
from transport.daemon._config import DaemonSpec
from transport.daemon._redact import REDACTED

TICKER = 'i=0; while :; do i=$((i+1)); echo "line $i"; sleep 0.05; done'
SLEEPER = "exec sleep 1000"
SLOW_STOP = "trap 'sleep 1; exit 0' TERM; echo up; while :; do sleep 0.1; done"


def agents(tmp: Path) -> list[object]:
    return [
        shell_agent("a1", SLEEPER, tmp, type=AgentType.FILEBEAT),
        shell_agent("a2", SLEEPER, tmp, enabled=False),
    ]


async def code_of(call: object) -> tuple[StatusCode, str]:
    """The status of a call that must fail."""
    with pytest.raises(RemoteError) as caught:
        await call  # type: ignore[misc]
    return caught.value.status, caught.value.details


async def test_list_agents_over_tcp_and_unix(tmp_path: Path, sock_dir: Path) -> None:
    """Every configured agent, the disabled one too, with status, pid, type, start time and
    restart count; a last heartbeat of 0 for agents that never sent one. Both listeners
    answer the same."""
    async with serving(tmp_path, sock_dir, agents(tmp_path)) as s:  # type: ignore[arg-type]
        await s.supervisor.wait_state("a1", AgentState.RUNNING)
        replies = [
            await channel.call(DaemonService.ListAgents, d.ListAgentsRequest())
            for channel in (s.tcp, s.unix)
        ]
        a1_pid = s.supervisor.status("a1").pid
    by_id = {agent.id: agent for agent in replies[0].agents}
    assert list(by_id) == ["a1", "a2"]
    a1, a2 = by_id["a1"], by_id["a2"]
    assert (a1.type, a1.status, a1.pid, a1.restart_count, a1.last_heartbeat) == (
        "filebeat",
        "running",
        a1_pid,
        0,
        0,
    )
    assert a1.start_time > 1_600_000_000
    assert (a2.status, a2.pid, a2.start_time) == ("stopped", 0, 0)
    assert [a.id for a in replies[1].agents] == ["a1", "a2"]
    assert replies[1].agents[0].pid == a1_pid


async def test_operate_agent_statuses(tmp_path: Path, sock_dir: Path) -> None:
    """start, stop and restart answer when done; bad input is INVALID_ARGUMENT naming the
    field, an unknown agent NOT_FOUND."""
    async with serving(tmp_path, sock_dir, agents(tmp_path)) as s:  # type: ignore[arg-type]
        sup, call = s.supervisor, s.tcp.call
        await sup.wait_state("a1", AgentState.RUNNING)
        first_pid = sup.status("a1").pid

        def op(agent_id: str, operation: str) -> d.AgentOperationRequest:
            return d.AgentOperationRequest(agent_id=agent_id, operation=operation)

        reply = await call(DaemonService.OperateAgent, op("a1", "stop"))
        assert reply.success and sup.status("a1").status is AgentState.STOPPED
        reply = await call(DaemonService.OperateAgent, op("a2", "start"))  # disabled: allowed
        assert reply.success and sup.status("a2").pid > 0
        await call(DaemonService.OperateAgent, op("a1", "start"))
        await sup.wait_state("a1", AgentState.RUNNING)
        second_pid = sup.status("a1").pid
        await call(DaemonService.OperateAgent, op("a1", "restart"))
        assert sup.status("a1").pid not in (0, first_pid, second_pid)

        cases = {
            ("a1", ""): "AgentOperationRequest.operation: empty (start, stop or restart)",
            ("a1", "kill"): "AgentOperationRequest.operation: unknown operation 'kill'",
            ("a1", "STOP"): "AgentOperationRequest.operation: unknown operation 'STOP'",
            ("", "stop"): "AgentOperationRequest.agent_id: empty",
        }
        for (agent_id, operation), message in cases.items():
            status, details = await code_of(
                call(DaemonService.OperateAgent, op(agent_id, operation))
            )
            assert status is StatusCode.INVALID_ARGUMENT
            assert details.startswith(message)
        status, details = await code_of(call(DaemonService.OperateAgent, op("nope", "stop")))
        assert (status, details) == (StatusCode.NOT_FOUND, "unknown agent 'nope'")


async def test_failed_operation_is_internal_with_the_reason_and_start_clears_failed(
    tmp_path: Path, sock_dir: Path
) -> None:
    """A start that cannot spawn answers INTERNAL with the reason; once the binary is back,
    start clears `failed`."""
    binary = tmp_path / "agent.sh"
    binary.write_text("#!/bin/sh\nexec sleep 1000\n")
    binary.chmod(0o755)
    spec = shell_agent("a1", SLEEPER, tmp_path, restart=RestartSpec(policy=RestartPolicy.NEVER))
    spec = dataclasses.replace(spec, binary_path=str(binary), args=())
    async with serving(tmp_path, sock_dir, [spec]) as s:
        sup = s.supervisor
        await sup.wait_state("a1", AgentState.RUNNING)
        await sup.stop("a1")
        binary.chmod(0o644)  # no longer executable: the next spawn fails
        request = d.AgentOperationRequest(agent_id="a1", operation="start")
        status, details = await code_of(s.tcp.call(DaemonService.OperateAgent, request))
        assert status is StatusCode.INTERNAL
        assert details.startswith("start of agent 'a1' failed: ") and "(now failed)" in details
        assert sup.status("a1").status is AgentState.FAILED
        binary.chmod(0o755)
        reply = await s.unix.call(DaemonService.OperateAgent, request)
        assert reply.success
        assert sup.status("a1").status in (AgentState.STARTING, AgentState.RUNNING)


async def test_a_client_that_cancels_mid_operation_leaves_it_complete(
    tmp_path: Path, sock_dir: Path
) -> None:
    """A stop whose client gives up while the agent is still stopping completes anyway:
    the agent ends stopped, and the daemon keeps answering."""
    spec = shell_agent("slow", SLOW_STOP, tmp_path, stop_timeout_s=10.0)
    async with serving(tmp_path, sock_dir, [spec]) as s:
        sup = s.supervisor
        await sup.wait_state("slow", AgentState.RUNNING)
        await wait_for_file(Path(sup.status("slow").log_file), "up")
        request = d.AgentOperationRequest(agent_id="slow", operation="stop")
        with trio.move_on_after(0.3) as scope:  # the agent takes 1 s to stop
            await s.tcp.call(DaemonService.OperateAgent, request)
        assert scope.cancelled_caught, "the call was cancelled before the stop was over"
        assert sup.status("slow").status is AgentState.STOPPING
        info = await sup.wait_state("slow", AgentState.STOPPED, AgentState.FAILED)
        assert info.status is AgentState.STOPPED
        reply = await s.tcp.call(DaemonService.ListAgents, d.ListAgentsRequest())
        assert reply.agents[0].status == "stopped"


async def test_a_deadline_mid_operation_also_completes_it(tmp_path: Path, sock_dir: Path) -> None:
    """The same with a gRPC deadline instead of a local cancel: DEADLINE_EXCEEDED for the
    client, a complete restart for the agent."""
    spec = shell_agent("slow", SLOW_STOP, tmp_path, stop_timeout_s=10.0)
    async with serving(tmp_path, sock_dir, [spec]) as s:
        sup = s.supervisor
        await sup.wait_state("slow", AgentState.RUNNING)
        await wait_for_file(Path(sup.status("slow").log_file), "up")
        old = sup.status("slow").pid
        request = d.AgentOperationRequest(agent_id="slow", operation="restart")
        status, _ = await code_of(s.unix.call(DaemonService.OperateAgent, request, timeout_s=0.3))
        assert status is StatusCode.DEADLINE_EXCEEDED
        await wait_until(lambda: sup.status("slow").pid not in (0, old))


async def test_get_agent_metrics_fills_every_field(tmp_path: Path, sock_dir: Path) -> None:
    """Samples of the whole tree, oldest first; duration_seconds <= 0 means an hour; empty
    agent_id INVALID_ARGUMENT, unknown NOT_FOUND."""
    spec = shell_agent(
        "busy",
        TICKER,
        tmp_path,
        health_check=HealthCheckSpec(interval_s=0.05, heartbeat_timeout_s=0),
    )
    async with serving(tmp_path, sock_dir, [spec]) as s:
        await wait_until(lambda: len(s.supervisor.metrics("busy", 3600)) >= 3)
        samples = s.supervisor.metrics("busy", 3600)
        replies = {
            seconds: await s.tcp.call(
                DaemonService.GetAgentMetrics,
                d.AgentMetricsRequest(agent_id="busy", duration_seconds=seconds),
            )
            for seconds in (0, -5, 3600, 1)
        }
        status, details = await code_of(
            s.tcp.call(DaemonService.GetAgentMetrics, d.AgentMetricsRequest(agent_id=""))
        )
        assert (status, details) == (
            StatusCode.INVALID_ARGUMENT,
            "AgentMetricsRequest.agent_id: empty",
        )
        status, _ = await code_of(
            s.tcp.call(DaemonService.GetAgentMetrics, d.AgentMetricsRequest(agent_id="x"))
        )
        assert status is StatusCode.NOT_FOUND
    hour = replies[3600]
    assert hour.agent_id == "busy"
    assert len(replies[0].data_points) == len(replies[-5].data_points) >= len(samples)
    assert len(hour.data_points) >= len(samples)
    stamps = [p.timestamp for p in hour.data_points]
    assert stamps == sorted(stamps) and stamps[0] > 1_600_000_000
    point = hour.data_points[-1]
    assert point.memory_rss > 0 and point.cpu >= 0
    assert point.memory_vms >= point.memory_rss and point.open_files >= 3
    # Every field of every sample reaches the wire (a ticker reads and writes no disk:
    # its counters are the measured zeros, not missing values).
    measured = {(x.disk_read_bytes, x.disk_write_bytes) for x in samples}
    sent = {(p.disk_read_bytes, p.disk_write_bytes) for p in hour.data_points}
    assert measured & sent
    assert len(replies[1].data_points) <= len(hour.data_points)


async def test_get_config_redacts_secrets(tmp_path: Path, sock_dir: Path) -> None:
    """daemon: every section but the agents; agent: the agents; secrets hidden; any other
    config_type INVALID_ARGUMENT."""
    spec = shell_agent(
        "a1",
        SLEEPER,
        tmp_path,
        env={"DB_PASSWORD": "hunter2", "LOG_LEVEL": "debug", "PROXY": "http://u:pw@proxy:3128"},
    )
    spec = dataclasses.replace(spec, args=("-c", SLEEPER, "--token=abc"))
    daemon = DaemonSpec(id="node-7", work_dir=str(tmp_path / "work"))
    async with serving(tmp_path, sock_dir, [spec], daemon=daemon) as s:
        daemon = await s.unix.call(DaemonService.GetConfig, d.ConfigRequest(config_type="daemon"))
        agent = await s.unix.call(DaemonService.GetConfig, d.ConfigRequest(config_type="agent"))
        for bad, message in (("", "empty"), ("all", "unknown config_type 'all'")):
            status, details = await code_of(
                s.unix.call(DaemonService.GetConfig, d.ConfigRequest(config_type=bad))
            )
            assert status is StatusCode.INVALID_ARGUMENT
            assert details == f"ConfigRequest.config_type: {message} (daemon or agent)"
        status, details = await code_of(
            s.unix.call(
                DaemonService.GetConfig, d.ConfigRequest(config_type="agent", node_id="other")
            )
        )
        assert (status, details) == (
            StatusCode.INVALID_ARGUMENT,
            "ConfigRequest.node_id: this daemon is node 'node-7', not 'other'",
        )
        mine = d.ConfigRequest(config_type="agent", node_id="node-7")
        assert (await s.tcp.call(DaemonService.GetConfig, mine)).success
    assert daemon.success and agent.success
    daemon_doc = json.loads(daemon.config_data)
    assert "agents" not in daemon_doc and daemon_doc["daemon"]["grpc_port"] == 9091
    (entry,) = json.loads(agent.config_data)["agents"]
    assert entry["env"] == {
        "DB_PASSWORD": REDACTED,
        "LOG_LEVEL": "debug",
        "PROXY": f"http://u:{REDACTED}@proxy:3128",
    }
    assert entry["args"][-1] == f"--token={REDACTED}"
    assert b"hunter2" not in agent.config_data and b"abc" not in agent.config_data


async def test_the_managers_methods_and_sync(tmp_path: Path, sock_dir: Path) -> None:
    """Register, Heartbeat and ReportMetrics are UNIMPLEMENTED; SyncAgentStates validates
    node_id (and the states) and accepts; no update: block is FAILED_PRECONDITION."""
    async with serving(tmp_path, sock_dir, []) as s:
        call = s.tcp.call
        for method, request in (
            (DaemonService.Register, d.RegisterRequest(hostname="x")),
            (DaemonService.Heartbeat, d.HeartbeatRequest(node_id="n")),
            (DaemonService.ReportMetrics, d.MetricsRequest(node_id="n")),
        ):
            status, details = await code_of(call(method, request))  # type: ignore[arg-type]
            assert status is StatusCode.UNIMPLEMENTED and "Manager" in details
        states = [d.AgentState(agent_id="a1", status="running", pid=5)]
        reply = await call(
            DaemonService.SyncAgentStates, d.SyncAgentStatesRequest(node_id="n1", states=states)
        )
        assert reply.success
        status, details = await code_of(
            call(DaemonService.SyncAgentStates, d.SyncAgentStatesRequest(states=states))
        )
        assert (status, details) == (
            StatusCode.INVALID_ARGUMENT,
            "SyncAgentStatesRequest.node_id: empty",
        )
        bad = [d.AgentState(agent_id="a1", status="exploded")]
        status, details = await code_of(
            call(DaemonService.SyncAgentStates, d.SyncAgentStatesRequest(node_id="n", states=bad))
        )
        assert status is StatusCode.INVALID_ARGUMENT and details.startswith("AgentState.status")
        update = d.UpdateRequest(component="a1", version="2", download_url="https://x/y")
        status, details = await code_of(call(DaemonService.PushUpdate, update))
        assert status is StatusCode.FAILED_PRECONDITION and "no update: block" in details
        status, _ = await code_of(
            call(HostvisorService.GetUpdateResult, h.GetUpdateResultRequest(update_id="x"))
        )
        assert status is StatusCode.FAILED_PRECONDITION


async def test_logs_and_details(tmp_path: Path, sock_dir: Path) -> None:
    """GetAgentLogs: the last lines (0 means 100; 1 to 1000); ListAgentDetails: health and
    errors, in the order asked; bad ids refused."""
    async with serving(tmp_path, sock_dir, [shell_agent("t", TICKER, tmp_path)]) as s:
        log = Path(s.supervisor.status("t").log_file)
        await wait_for_file(log, "line 120")
        reply = await s.tcp.call(
            HostvisorService.GetAgentLogs, h.GetAgentLogsRequest(agent_id="t", lines=3)
        )
        default = await s.tcp.call(
            HostvisorService.GetAgentLogs, h.GetAgentLogsRequest(agent_id="t")
        )
        for lines, field in ((1001, "lines"), (-1, "lines")):
            status, details = await code_of(
                s.tcp.call(
                    HostvisorService.GetAgentLogs, h.GetAgentLogsRequest(agent_id="t", lines=lines)
                )
            )
            assert status is StatusCode.INVALID_ARGUMENT
            assert details.startswith(f"GetAgentLogsRequest.{field}")
        status, _ = await code_of(
            s.tcp.call(HostvisorService.GetAgentLogs, h.GetAgentLogsRequest(agent_id="x"))
        )
        assert status is StatusCode.NOT_FOUND
        details_reply = await s.unix.call(
            HostvisorService.ListAgentDetails, h.ListAgentDetailsRequest(agent_ids=["t", "t"])
        )
        status, message = await code_of(
            s.unix.call(
                HostvisorService.ListAgentDetails, h.ListAgentDetailsRequest(agent_ids=["t", ""])
            )
        )
        assert (status, message) == (
            StatusCode.INVALID_ARGUMENT,
            "ListAgentDetailsRequest.agent_ids[1]: empty",
        )
        status, _ = await code_of(
            s.unix.call(
                HostvisorService.ListAgentDetails, h.ListAgentDetailsRequest(agent_ids=["nope"])
            )
        )
        assert status is StatusCode.NOT_FOUND
    numbers = [int(line.split()[1]) for line in reply.lines]
    assert len(numbers) == 3 and numbers == list(range(numbers[0], numbers[0] + 3))
    assert len(default.lines) == 100
    (detail,) = details_reply.agents
    assert (detail.info.id, detail.info.status, detail.enabled) == ("t", "running", True)
    assert detail.health == h.HEALTH_HEALTHY and detail.health_summary.startswith("healthy")


async def test_follow_agent_logs_across_rotations(tmp_path: Path, sock_dir: Path) -> None:
    """The history first, then every new line, through a copy-then-truncate and a rename
    rotation, in order and without a loss."""
    spec = shell_agent("quiet", SLEEPER, tmp_path)
    async with serving(tmp_path, sock_dir, [spec]) as s:
        log = Path(s.supervisor.status("quiet").log_file)
        with log.open("a") as file:
            file.write("old 1\nold 2\nold 3\n")
        request = h.FollowAgentLogsRequest(agent_id="quiet", tail_lines=2)
        received: list[str] = []
        async with s.unix.stream(HostvisorService.FollowAgentLogs, request) as chunks:
            first = await chunks.__anext__()
            assert list(first.lines) == ["old 2", "old 3"]

            async def expect(*lines: str) -> None:
                while len(received) < len(lines):
                    chunk = await chunks.__anext__()
                    assert chunk.dropped_lines == 0
                    received.extend(chunk.lines)
                assert received == list(lines)
                received.clear()

            with log.open("a") as file:
                file.write("new 1\nnew 2\npart")
            await expect("new 1", "new 2")
            with log.open("a") as file:
                file.write("ial\n")
            await expect("partial")
            # copy-then-truncate, with a line written between our last read and the copy
            with log.open("a") as file:
                file.write("before truncate\n")
            (Path(f"{log}.1")).write_bytes(log.read_bytes())
            os.truncate(log, 0)
            with log.open("a") as file:
                file.write("after truncate\n")
            await expect("before truncate", "after truncate")
            # rename: the old file gets a last line, then a new file appears
            os.replace(log, f"{log}.1")
            with open(f"{log}.1", "a") as file:
                file.write("last of old\n")
            log.write_text("first of new\n")
            await expect("last of old", "first of new")
        status, _ = await code_of(
            _first(s.unix, h.FollowAgentLogsRequest(agent_id="quiet", tail_lines=1001))
        )
        assert status is StatusCode.INVALID_ARGUMENT
        status, _ = await code_of(_first(s.unix, h.FollowAgentLogsRequest(agent_id="nope")))
        assert status is StatusCode.NOT_FOUND


async def _first(channel: object, request: h.FollowAgentLogsRequest) -> h.LogChunk:
    async with channel.stream(HostvisorService.FollowAgentLogs, request) as chunks:  # type: ignore[attr-defined]
        async for chunk in chunks:
            return chunk  # type: ignore[no-any-return]
    raise AssertionError("the stream ended without a message")


async def test_watch_agent_states(tmp_path: Path, sock_dir: Path) -> None:
    """A snapshot, then each change of status of the agents watched (others filtered)."""
    async with serving(tmp_path, sock_dir, agents(tmp_path)) as s:  # type: ignore[arg-type]
        sup = s.supervisor
        await sup.wait_state("a1", AgentState.RUNNING)
        request = h.WatchAgentStatesRequest(agent_ids=["a1"])
        async with s.tcp.stream(HostvisorService.WatchAgentStates, request) as events:
            first = await events.__anext__()
            assert [a.info.id for a in first.snapshot.agents] == ["a1"]
            assert first.snapshot.agents[0].info.status == "running"
            await sup.start("a2")  # not watched
            await sup.stop("a1")
            changes = []
            while len(changes) < 2:
                event = await events.__anext__()
                assert event.WhichOneof("event") == "change"
                changes.append(
                    (event.change.agent_id, event.change.old_status, event.change.new_status)
                )
        assert changes == [("a1", "running", "stopping"), ("a1", "stopping", "stopped")]
        status, _ = await code_of(_first_event(s.tcp, h.WatchAgentStatesRequest(agent_ids=["zz"])))
        assert status is StatusCode.NOT_FOUND


async def _first_event(channel: object, request: h.WatchAgentStatesRequest) -> h.AgentStateEvent:
    async with channel.stream(HostvisorService.WatchAgentStates, request) as events:  # type: ignore[attr-defined]
        async for event in events:
            return event  # type: ignore[no-any-return]
    raise AssertionError("the stream ended without a message")


def test_resource_point_maps_every_field() -> None:
    """Every field of a sample reaches ResourceDataPoint, the ones ResourceSample is gaining
    (memory_vms, disk read and write bytes, open files) included; a sample whose CPU figure
    is not finite is left out."""
    import collections
    import math

    from transport.daemon._service import resource_point

    Sample = collections.namedtuple(
        "Sample",
        "at cpu_percent rss_bytes memory_vms disk_read_bytes disk_write_bytes open_files",
    )
    point = resource_point(Sample(1_700_000_000.7, 12.5, 1000, 5000, 7, 9, 11))  # type: ignore[arg-type]
    assert point is not None
    assert (
        point.timestamp,
        point.cpu,
        point.memory_rss,
        point.memory_vms,
        point.disk_read_bytes,
        point.disk_write_bytes,
        point.open_files,
    ) == (1_700_000_000, 12.5, 1000, 5000, 7, 9, 11)
    assert resource_point(Sample(1.0, math.nan, 1, 1, 1, 1, 1)) is None  # type: ignore[arg-type]
