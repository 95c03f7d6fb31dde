"""The Manager client against an in-process Manager over real loopback gRPC.

Intervals are short and real (the grpc loop runs on asyncio through trio-asyncio, which a
virtual clock cannot drive); the schedules themselves are tested as pure functions in
test_reporter_policy.py. No test asserts a duration: each waits for calls to arrive, with
a safety net against a hang.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from pathlib import Path

import pytest
import trio

from collectors import to_metric_data
from supervisor import AgentState, ConfigError
from transport import MetricPoint, manager_pb2, metric_to_message, open_grpc_loop
from transport.daemon._config import DaemonConfig, DaemonSpec
from transport.daemon._manager_config import ManagerTls, SpoolSpec
from transport.daemon._metric_keys import ORIGINAL_KEYS, original_values
from transport.daemon._reporter import GRPC_PORT_METADATA_KEY, Reporter, build_reporter

from .reporter_helpers import (
    SAFETY_S,
    FakeAgents,
    FakeManager,
    FakeMetrics,
    agent_info,
    cpu,
    make_pki,
    manager_server,
    network,
    reporter,
    running,
    spec,
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def settled(r: Reporter) -> None:
    """Wait until every report made so far is acknowledged (none is in flight: a call cut
    short by the shutdown would be sent again, a duplicate the Manager tolerates)."""
    while r.statistics().waiting:
        await trio.sleep(0.02)


def cpu_times(fake: FakeManager) -> list[int]:
    """The timestamps of every cpu MetricData received, in arrival order."""
    return [m.timestamp for r in fake.of("ReportMetrics") for m in r.metrics if m.type == "cpu"]


async def test_registers_reports_and_syncs(tmp_path: Path) -> None:
    """Registration carries the node's facts; heartbeats, metrics and agent states follow."""
    fake, metrics = FakeManager(), FakeMetrics()
    agents = FakeAgents(agent_info("alpha"), agent_info("beta", AgentState.STOPPED))
    with trio.fail_after(SAFETY_S):
        async with open_grpc_loop(), manager_server(fake) as address:
            r = reporter(spec(address), tmp_path, metrics=metrics, agents=agents)
            async with running(r):
                await fake.wait_for(lambda: len(fake.of("Heartbeat")) >= 2)
                now = time.time()
                metrics.publish(cpu(now))
                metrics.publish(network(now, 1000, 2000))
                await fake.wait_for(lambda: bool(fake.of("ReportMetrics")))
                await fake.wait_for(lambda: bool(fake.of("SyncAgentStates")))
                await settled(r)
                stats = r.statistics()
    registration = fake.of("RegisterNode")[0]
    assert (registration.node_id, registration.hostname, registration.ip) == (
        "node-1", "node-a", "10.1.2.3"
    )  # fmt: skip
    assert (registration.os, registration.arch, registration.daemon_version) == (
        "linux", "amd64", "9.9.9"
    )  # fmt: skip
    assert dict(registration.labels) == {"rack": "r1"}
    assert all(h.node_id == "node-1" and h.timestamp > 0 for h in fake.of("Heartbeat"))
    report = fake.of("ReportMetrics")[0]
    assert report.node_id == "node-1"
    by_type = {m.type: dict(m.values) for m in report.metrics}
    for kind in ("cpu", "network"):
        assert ORIGINAL_KEYS[kind] <= by_type[kind].keys()
    assert by_type["network"]["bytes_recv"] == 2000
    sync = fake.of("SyncAgentStates")[0]
    states = {s.agent_id: s for s in sync.states}
    assert states["alpha"].status == "running" and states["alpha"].pid == 4242
    assert states["alpha"].type == "telegraf" and states["alpha"].last_heartbeat > 0
    assert states["beta"].status == "stopped" and states["beta"].pid == 0
    assert stats.registered and stats.registrations == 1 and stats.reports == 1
    assert stats.errors == {"D2001": 0, "D2002": 0, "D2003": 0}


async def test_state_change_is_synced_soon(tmp_path: Path) -> None:
    """An agent's state change is synced without waiting for the periodic sync."""
    fake = FakeManager()
    agents = FakeAgents(agent_info("alpha"))
    with trio.fail_after(SAFETY_S):
        async with open_grpc_loop(), manager_server(fake) as address:
            manager = spec(address, sync_interval_s=3600.0)
            async with running(reporter(manager, tmp_path, agents=agents)):
                await fake.wait_for(lambda: bool(fake.of("SyncAgentStates")))
                agents.change(agent_info("alpha", AgentState.FAILED), AgentState.RUNNING)
                await fake.wait_for(lambda: fake.of("SyncAgentStates")[-1].states[0].pid == 0)
    last = fake.of("SyncAgentStates")[-1]
    assert [(s.agent_id, s.status, s.pid) for s in last.states] == [("alpha", "failed", 0)]
    assert last.states[0].last_heartbeat > 0  # the last time it was seen alive


async def test_heartbeat_refused_triggers_registration(tmp_path: Path) -> None:
    """A Manager answering success=false to a heartbeat gets the node registered again."""
    fake = FakeManager(heartbeat_success=False)
    with trio.fail_after(SAFETY_S):
        async with (
            open_grpc_loop(),
            manager_server(fake) as address,
            running(reporter(spec(address), tmp_path)) as r,
        ):
            await fake.wait_for(lambda: len(fake.of("RegisterNode")) >= 3)
            stats = r.statistics()
    assert stats.registrations >= 2 and stats.heartbeat_failures >= 2
    names = [c.method for c in fake.calls]
    assert names[:4] == ["RegisterNode", "Heartbeat", "RegisterNode", "Heartbeat"]


async def test_reconnects_after_the_manager_restarts(tmp_path: Path) -> None:
    """When the Manager comes back on its address the node registers again by itself."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    first, second = FakeManager(), FakeManager()
    with trio.fail_after(SAFETY_S):
        async with open_grpc_loop(), running(reporter(spec(address), tmp_path)) as r:
            async with manager_server(first, address):
                await first.wait_for(lambda: bool(first.of("Heartbeat")))
            while r.registered:  # noticed at the next heartbeat
                await trio.sleep(0.05)
            async with manager_server(second, address):
                await second.wait_for(lambda: bool(second.of("Heartbeat")))
            stats = r.statistics()
    assert second.of("RegisterNode")[0].node_id == "node-1"
    assert stats.registrations == 2 and stats.errors["D2001"] >= 1


async def test_outage_refusing_then_hanging_loses_nothing(tmp_path: Path) -> None:
    """Reports made while the Manager refuses connections, then hangs, all arrive after
    it recovers, in the order they were made."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    fake, metrics = FakeManager(), FakeMetrics()
    stamps = [1_700_000_000 + i for i in range(12)]
    with trio.fail_after(SAFETY_S):
        async with open_grpc_loop():
            r = reporter(spec(address, timeout_s=0.3), tmp_path, metrics=metrics)
            async with running(r):
                async with manager_server(fake, address):
                    await fake.wait_for(lambda: bool(fake.of("Heartbeat")))
                    metrics.publish(cpu(stamps[0]))
                    await fake.wait_for(lambda: bool(fake.of("ReportMetrics")))
                for stamp in stamps[1:6]:  # refused: nothing listens
                    metrics.publish(cpu(stamp))
                    await trio.sleep(0.15)
                fake.mode = "hang"
                async with manager_server(fake, address):
                    for stamp in stamps[6:10]:  # accepted, never answered
                        metrics.publish(cpu(stamp))
                        await trio.sleep(0.15)
                    while r.registered:
                        await trio.sleep(0.05)
                    fake.mode = "ok"
                    for stamp in stamps[10:]:
                        metrics.publish(cpu(stamp))
                    await fake.wait_for(lambda: len(cpu_times(fake)) >= len(stamps))
                    await settled(r)
                    stats = r.statistics()
    assert cpu_times(fake) == stamps
    assert stats.spool.written >= 5 and stats.spool.dropped == 0
    assert stats.errors["D2001"] >= 1


async def test_spool_survives_a_restart(tmp_path: Path) -> None:
    """Reports spooled by one run are delivered, in order, by the next one."""
    address = f"127.0.0.1:{free_port()}"
    fake, metrics = FakeManager(), FakeMetrics()
    stamps = [1_700_000_100 + i for i in range(4)]
    with trio.fail_after(SAFETY_S):
        async with open_grpc_loop():
            async with running(reporter(spec(address), tmp_path, metrics=metrics)) as first:
                for stamp in stamps:
                    metrics.publish(cpu(stamp))
                while first.statistics().spool.entries < len(stamps):
                    await trio.sleep(0.05)
            files = sorted(os.listdir(tmp_path / "spool"))
            assert [f.rsplit(".", 1)[1] for f in files] == ["metrics"] * len(stamps)
            async with (
                manager_server(fake, address),
                running(reporter(spec(address), tmp_path)) as second,
            ):
                await fake.wait_for(lambda: len(cpu_times(fake)) >= len(stamps))
                while second.statistics().spool.entries:
                    await trio.sleep(0.05)
    assert cpu_times(fake) == stamps
    assert os.listdir(tmp_path / "spool") == []


async def test_full_spool_drops_the_oldest_and_counts(tmp_path: Path) -> None:
    """A spool at its byte bound drops its oldest reports, counted; the rest arrive."""
    address = f"127.0.0.1:{free_port()}"
    fake, metrics = FakeManager(), FakeMetrics()
    stamps = [1_700_000_200 + i for i in range(10)]
    size = len(_one_report(stamps[0]))
    bounded = dataclasses.replace(spec(address), spool=SpoolSpec(max_bytes=size * 3 + size // 2))
    with trio.fail_after(SAFETY_S):
        async with open_grpc_loop():
            r = reporter(bounded, tmp_path, metrics=metrics)
            async with running(r):
                for stamp in stamps:
                    metrics.publish(cpu(stamp))
                while r.statistics().spool.written < len(stamps):
                    await trio.sleep(0.05)
                async with manager_server(fake, address):
                    await fake.wait_for(lambda: len(cpu_times(fake)) >= 3)
                    while r.statistics().waiting:
                        await trio.sleep(0.05)
                stats = r.statistics()
    assert cpu_times(fake) == stamps[-3:]
    assert stats.spool.evicted == len(stamps) - 3


async def test_invalid_argument_is_dropped_and_counted(tmp_path: Path) -> None:
    """A report the Manager rejects as INVALID_ARGUMENT is not retried: counted, logged."""
    fake, metrics = FakeManager(), FakeMetrics()
    with trio.fail_after(SAFETY_S):
        async with (
            open_grpc_loop(),
            manager_server(fake) as address,
            running(reporter(spec(address), tmp_path, metrics=metrics)) as r,
        ):
            await fake.wait_for(lambda: bool(fake.of("Heartbeat")))
            fake.mode = "invalid"
            metrics.publish(cpu(1_700_000_300))
            while not r.statistics().invalid:
                await trio.sleep(0.05)
            fake.mode = "ok"
            metrics.publish(cpu(1_700_000_301))
            await fake.wait_for(lambda: bool(cpu_times(fake)))
            await settled(r)
            stats = r.statistics()
    assert cpu_times(fake) == [1_700_000_301]
    assert stats.invalid == 1 and stats.errors["D2003"] == 1 and stats.registered
    assert "INVALID_ARGUMENT" in (stats.last_error or "")


@pytest.mark.parametrize("client_certificate", [True, False])
async def test_tls(tmp_path: Path, client_certificate: bool) -> None:
    """With TLS the node registers, with a client certificate when the Manager requires
    one, with only the CA when it does not."""
    pki = make_pki(tmp_path)
    fake = FakeManager()
    tls = ManagerTls(
        cert_file=str(pki.client_cert) if client_certificate else None,
        key_file=str(pki.client_key) if client_certificate else None,
        ca_file=str(pki.ca),
        server_name="manager.test",
    )
    server = pki.server_tls(require_client=client_certificate)
    with trio.fail_after(SAFETY_S):
        async with (
            open_grpc_loop(),
            manager_server(fake, tls=server) as address,
            running(reporter(spec(address, tls=tls), tmp_path / "w")),
        ):
            await fake.wait_for(lambda: bool(fake.of("Heartbeat")))
    assert fake.of("RegisterNode")[0].node_id == "node-1"


async def test_tls_without_client_certificate_is_refused(tmp_path: Path) -> None:
    """A Manager that requires client certificates refuses a node without one (D2001)."""
    pki = make_pki(tmp_path)
    fake = FakeManager()
    tls = ManagerTls(ca_file=str(pki.ca), server_name="manager.test")
    server = pki.server_tls(require_client=True)
    with trio.fail_after(SAFETY_S):
        async with (
            open_grpc_loop(),
            manager_server(fake, tls=server) as address,
            running(reporter(spec(address, tls=tls), tmp_path / "w")) as r,
        ):
            while r.statistics().errors["D2001"] < 2:
                await trio.sleep(0.05)
    assert fake.calls == [] and not r.registered


def test_missing_certificate_is_a_configuration_error(tmp_path: Path) -> None:
    """A missing client key is refused when the reporter is built: never plaintext."""
    pki = make_pki(tmp_path)
    tls = ManagerTls(cert_file=str(pki.client_cert), key_file=str(tmp_path / "nope.pem"))
    with pytest.raises(ConfigError) as caught:
        reporter(spec("127.0.0.1:9", tls=tls), tmp_path / "w")
    assert [i.path for i in caught.value.issues] == ["manager.tls.key_file"]
    assert "not found" in caught.value.issues[0].message


# --------------------------------------------------------------------------- helpers


def _one_report(stamp: int) -> bytes:
    """The serialized size of one cpu-only report (for sizing a spool bound)."""
    metrics = cpu(stamp)
    added, _ = original_values(metrics)
    data = to_metric_data(metrics)
    point = MetricPoint.finite(data.type, data.timestamp, {**data.values, **added})
    request = manager_pb2.ReportMetricsRequest(node_id="node-1", metrics=[metric_to_message(point)])
    return request.SerializeToString()


async def test_registration_announces_the_grpc_port(tmp_path: Path) -> None:
    """A daemon serving gRPC on TCP names its port in RegisterNode's metadata, so that our
    Manager dials it there; without a TCP listener nothing is announced."""

    def built(port: int) -> Reporter | None:
        work = tmp_path / str(port)
        work.mkdir()
        config = DaemonConfig(
            daemon=DaemonSpec(id="node-1", work_dir=str(work), grpc_port=port),
            manager={"address": "127.0.0.1:9090"},
        )
        return build_reporter(config, FakeAgents(), None)

    assert [getattr(built(p), "grpc_port", "-") for p in (9191, 0)] == [9191, None]
    fake = FakeManager()

    def registered(node: str) -> list[tuple[tuple[str, str], ...]]:
        return [c.metadata for c in fake.calls if c.request.node_id == node]

    with trio.fail_after(SAFETY_S):
        async with open_grpc_loop(), manager_server(fake) as address:
            for port, node in ((9191, "a"), (None, "b")):
                (tmp_path / node).mkdir()
                r = reporter(spec(address), tmp_path / node, node_id=node, grpc_port=port)
                async with running(r):
                    await fake.wait_for(lambda node=node: bool(registered(node)))  # type: ignore[misc]
    assert (GRPC_PORT_METADATA_KEY, "9191") in registered("a")[0]
    assert GRPC_PORT_METADATA_KEY not in dict(registered("b")[0])
