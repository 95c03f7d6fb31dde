"""gRPC ingest worker processes (``grpc.workers``): real worker processes sharing a port,
their events, log records and counters forwarded, restarts, TLS, and their end."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import psutil
import pytest
import trio
import yaml
from hypothesis import given

from tests.supervisor.helpers import kill_all
from tests.transport.daemon.reporter_helpers import make_pki
from transport import (
    ClientTls,
    DaemonService,
    ListenError,
    ManagerService,
    RemoteError,
    StatusCode,
    daemon_pb2,
    manager_pb2,
    open_channel,
    open_grpc_loop,
)
from transport.manager import ManagerConfigError
from transport.manager._config import ManagerConfig, parse_config
from transport.manager._run import open_store
from transport.manager._workers import WorkerPool
from transport.manager._workers_policy import RestartPolicy

from .test_run import busy_port, manager_command, read_until, refused

SAFETY_S = 120  # a safety net against a hung test, never a timing assertion
FAST = RestartPolicy(first_delay_s=0.05, max_delay_s=0.05)


def config_of(tmp_path: Path, workers: int = 2, **grpc: Any) -> ManagerConfig:
    document = {
        "data_dir": str(tmp_path / "data"),
        "server": {"host": "127.0.0.1", "port": 0},
        "grpc": {"host": "127.0.0.1", "port": 0, "workers": workers, **grpc},
    }
    return parse_config(document)


class Recorder:
    """The event hub's calls a pool forwards, recorded (the hub itself is tested apart)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def node_status(self, node_id: str, status: str) -> None:
        self.calls.append(("node_status", (node_id, status)))

    def node_seen(self, node_id: str) -> None:
        self.calls.append(("node_seen", (node_id,)))

    def agents_reported(self, node_id: str, states: Sequence[Any]) -> bool:
        self.calls.append(("agents_reported", (node_id, tuple(s.agent_id for s in states))))
        return True


@asynccontextmanager
async def pool_of(
    config: ManagerConfig, events: Recorder | None = None
) -> AsyncIterator[tuple[WorkerPool, str]]:
    """A migrated database and a running pool; every worker reaped after."""
    open_store(config).close()
    pool = WorkerPool(config, events=events, policy=FAST)
    seen: set[int] = set()
    try:
        with trio.fail_after(SAFETY_S):
            async with open_grpc_loop(), trio.open_nursery() as nursery:
                address = await nursery.start(pool.run)
                seen.update(pool.pids().values())
                yield pool, address
                seen.update(pool.pids().values())
                nursery.cancel_scope.cancel()
        assert pool.pids() == {}
        assert not [pid for pid in seen if alive(pid)]
    finally:
        kill_all(seen)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def wait_for(predicate: Any) -> None:
    """Poll ``predicate`` (what another process does has no event here)."""
    while not predicate():
        await trio.sleep(0.05)


async def every_call(address: str, node_id: str, client: ClientTls | None = None) -> list[Any]:
    """RegisterNode, Heartbeat, ReportMetrics and SyncAgentStates for ``node_id`` on a
    new connection; the answers, or the RemoteError of each refused call."""
    metric = manager_pb2.MetricData(type="cpu", timestamp=10, values={"usage_percent": 1.0})
    agent = daemon_pb2.AgentState(agent_id="web", status="running", pid=42)
    calls: list[tuple[Any, Any]] = [
        (
            ManagerService.RegisterNode,
            manager_pb2.RegisterNodeRequest(node_id=node_id, hostname="h", ip="127.0.0.1"),
        ),
        (ManagerService.Heartbeat, manager_pb2.HeartbeatRequest(node_id=node_id)),
        (
            ManagerService.ReportMetrics,
            manager_pb2.ReportMetricsRequest(node_id=node_id, metrics=[metric]),
        ),
        (
            DaemonService.SyncAgentStates,
            daemon_pb2.SyncAgentStatesRequest(node_id=node_id, states=[agent]),
        ),
    ]
    answers: list[Any] = []
    async with open_channel(address, tls=client) as channel:
        for method, request in calls:
            try:
                answers.append(await channel.call(method, request, timeout_s=30))
            except RemoteError as exc:
                answers.append(exc)
    return answers


# --------------------------------------------------------------------------- the pool


async def test_workers_serve_and_forward_events_logs_and_counters(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hostvisor.manager")
    config = config_of(tmp_path)
    events = Recorder()
    async with pool_of(config, events) as (pool, address):
        assert len(pool.pids()) == 2
        assert os.getpid() not in pool.pids().values()
        for number in range(8):  # new connections: the kernel spreads them over both
            answers = await every_call(address, f"node-{number}")
            assert all(answer.success for answer in answers)
        # A heartbeat of an unknown node creates it, and the worker logs that.
        async with open_channel(address) as channel:
            request = manager_pb2.HeartbeatRequest(node_id="stray")
            await channel.call(ManagerService.Heartbeat, request, timeout_s=30)
        await wait_for(lambda: pool.statistics().get("calls_heartbeat_total") == 9)
        figures = pool.statistics()
        assert figures["calls_registernode_total"] == 8
        assert figures["calls_syncagentstates_total"] == 8
        assert figures["metric_rows_total"] == 8
        assert figures["nodes_created_total"] == 1
        await wait_for(lambda: ("node_status", ("stray", "online")) in events.calls)
        for number in range(8):
            node = f"node-{number}"
            assert ("node_status", (node, "online")) in events.calls
            assert ("node_seen", (node,)) in events.calls
            assert ("agents_reported", (node, ("web",))) in events.calls
        await wait_for(lambda: "was unknown" in caplog.text)
        assert "[worker " in caplog.text
        assert "node stray was unknown: created from its heartbeat" in caplog.text
    assert refused(address)
    with open_store(config) as store:
        assert {n.node_id for n in store.list_nodes(page=1, page_size=50).items} == {
            *(f"node-{n}" for n in range(8)),
            "stray",
        }


async def test_a_killed_worker_is_started_again_and_serves(tmp_path: Path) -> None:
    config = config_of(tmp_path)
    async with pool_of(config) as (pool, address):
        assert all(a.success for a in await every_call(address, "node-a"))
        await wait_for(lambda: pool.statistics().get("calls_registernode_total") == 1)
        before = pool.pids()
        os.kill(before[0], signal.SIGKILL)
        await wait_for(lambda: pool.restarts == 1 and len(pool.pids()) == 2)
        assert pool.pids()[0] != before[0]
        assert pool.pids()[1] == before[1]
        for number in range(6):
            answers = await every_call(address, f"node-b{number}")
            assert all(answer.success for answer in answers)
        # The dead worker's counters are kept beside the live ones.
        await wait_for(lambda: pool.statistics().get("calls_registernode_total") == 7)


async def test_a_busy_port_fails_the_start(tmp_path: Path) -> None:
    with busy_port() as port:
        config = config_of(tmp_path, port=port)
        with pytest.RaisesGroup(ListenError, allow_unwrapped=True, flatten_subgroups=True):
            async with pool_of(config):
                pytest.fail("started on a busy port")


async def test_tls_and_node_bound_identities_in_a_worker(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    tls = {
        "enabled": True,
        "cert_file": str(pki.server_cert),
        "key_file": str(pki.server_key),
        "ca_file": str(pki.ca),
        "bind_node_identity": True,
    }
    config = config_of(tmp_path, tls=tls)
    client = ClientTls(
        server_ca=pki.ca.read_bytes(),
        cert_chain=pki.client_cert.read_bytes(),
        private_key=pki.client_key.read_bytes(),
        server_name="manager.test",
    )
    async with pool_of(config) as (pool, address):
        assert all(answer.success for answer in await every_call(address, "node-1", client))
        for answer in await every_call(address, "node-2", client):
            assert isinstance(answer, RemoteError)
            assert answer.status is StatusCode.PERMISSION_DENIED
        await wait_for(lambda: pool.statistics().get("refused_permission_denied_total") == 4)


# --------------------------------------------------------------------------- the Manager


async def test_the_manager_with_workers_and_its_sigkill(tmp_path: Path) -> None:
    """``run`` with two workers serves gRPC through them; SIGKILL of the Manager leaves
    no worker running."""
    config = tmp_path / "manager.yaml"
    document = {
        "data_dir": str(tmp_path / "data"),
        "server": {"host": "127.0.0.1", "port": 0},
        "grpc": {"host": "127.0.0.1", "port": 0, "workers": 2},
    }
    config.write_text(yaml.safe_dump(document))
    workers: list[int] = []
    with trio.fail_after(SAFETY_S), (tmp_path / "stderr.log").open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            manager_command(config, "run"),
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert process.stdout is not None
            line = await read_until(process.stdout, bytearray(), b"gRPC listening on ")
            address = line.removeprefix("gRPC listening on ")
            workers = [child.pid for child in psutil.Process(process.pid).children()]
            assert len(workers) == 2
            async with open_grpc_loop():
                assert all(a.success for a in await every_call(address, "node-1"))
            process.kill()
            await process.wait()
            await wait_for(lambda: not any(alive(pid) for pid in workers))
            await process.stdout.aclose()
        finally:
            kill_all([process.pid, *workers])
            await process.wait()
    assert refused(address)


# --------------------------------------------------------------------------- configuration


def test_grpc_workers_is_checked_where_it_is_written(tmp_path: Path) -> None:
    assert config_of(tmp_path, workers=1).grpc.workers == 1
    assert parse_config({}).grpc.workers == 1
    for wrong in (0, 65, "2", True):
        with pytest.raises(ManagerConfigError) as caught:
            config_of(tmp_path, workers=wrong)
        assert caught.value.issues[0][0] == "grpc.workers"
        assert "must be an integer from 1 to 64" in caught.value.issues[0][1]


# --------------------------------------------------------------------------- restart policy

policies = st.builds(
    lambda first, spread, stable: RestartPolicy(first, first + spread, stable),
    st.floats(0, 10),
    st.floats(0, 100),
    st.floats(0, 1000),
)


@given(policies, st.integers(1, 200))
def test_the_backoff_grows_and_is_capped(policy: RestartPolicy, failures: int) -> None:
    delay = policy.delay_s(failures)
    assert policy.first_delay_s <= delay <= policy.max_delay_s
    assert policy.delay_s(failures + 1) >= delay
    assert policy.delay_s(1) == policy.first_delay_s


@given(policies, st.integers(0, 200), st.floats(0, 1e6), st.floats(0, 1e4))
def test_a_stable_run_starts_the_count_again(
    policy: RestartPolicy, before: int, started: float, ran: float
) -> None:
    now = started + ran
    failures = policy.failures(before, started=started, now=now)
    if now - started >= policy.stable_after_s:
        assert failures == 1
    else:
        assert failures == before + 1


@pytest.mark.parametrize(
    "arguments", [(-1.0, 1.0, 1.0), (2.0, 1.0, 1.0), (0.5, 1.0, -1.0), (float("nan"), 1.0, 1.0)]
)
def test_a_policy_out_of_range_is_refused(arguments: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError, match="RestartPolicy"):
        RestartPolicy(*arguments)
