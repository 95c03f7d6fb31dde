"""``hostvisor run`` with a ``manager:`` section, against an in-process Manager served from a
thread of the test: registration, real host metrics with the original keys, agent states,
a clean exit on SIGTERM; and ``check-config`` reporting the section's problems."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import yaml

from transport import open_grpc_loop
from transport.daemon._metric_keys import ORIGINAL_KEYS

from .daemon_helpers import SLEEPER, agent, cli
from .reporter_helpers import FakeManager, manager_server
from .test_cli import Daemon, wait_until


@pytest.fixture
def manager() -> Iterator[tuple[FakeManager, str]]:
    """A fake Manager on loopback, served by its own Trio run in a thread."""
    fake = FakeManager()
    found: queue.Queue[tuple[str, trio.lowlevel.TrioToken]] = queue.Queue()
    stop = threading.Event()

    async def serve() -> None:
        async with open_grpc_loop(), manager_server(fake) as address:
            found.put((address, trio.lowlevel.current_trio_token()))
            while not stop.is_set():
                await trio.sleep(0.05)

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    address, _ = found.get(timeout=30)
    yield fake, address
    stop.set()
    thread.join(timeout=30)


def write(path: Path, work: Path, manager: dict[str, object]) -> None:
    document = {
        "daemon": {"work_dir": str(work), "grpc_port": 0, "control_socket": True,
                   "labels": {"rack": "r1"}},
        "manager": manager,
        "collectors": {name: {"interval": "1s"} for name in ("cpu", "memory", "disk", "network")},
        "agents": [agent("alpha", SLEEPER)],
    }  # fmt: skip
    path.write_text(yaml.safe_dump(document))


def test_daemon_reports_to_the_manager(
    tmp_path: Path, work: Path, manager: tuple[FakeManager, str]
) -> None:
    """The daemon registers with its labels, reports every original metric key of the four
    built-in collectors, syncs its agents, answers the command line meanwhile, and exits
    cleanly on SIGTERM."""
    fake, address = manager
    config = tmp_path / "daemon.yaml"
    write(config, work, {"address": address, "heartbeat_interval": "1s", "sync_interval": "1s"})
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:

        def complete() -> bool:
            types = {m.type for r in fake.of("ReportMetrics") for m in r.metrics}
            synced = [s for r in fake.of("SyncAgentStates") for s in r.states]
            running = any(s.agent_id == "alpha" and s.status == "running" for s in synced)
            return bool(fake.of("Heartbeat")) and types >= set(ORIGINAL_KEYS) and running

        wait_until(complete, "registration, heartbeats, metrics and states", timeout=60)
        # The control socket serves beside the Manager client (one shared grpc loop).
        status = cli("status", "--config", str(config), "--json")
        assert status.returncode == 0, status.stderr
        assert "alpha" in status.stdout
    finally:
        code = daemon.stop()
    assert code == 0, daemon.text()
    registration = fake.of("RegisterNode")[0]
    assert dict(registration.labels) == {"rack": "r1"} and registration.ip == "127.0.0.1"
    assert registration.node_id == (work / "node_id").read_text().strip()
    for report in fake.of("ReportMetrics"):
        for data in report.metrics:
            assert ORIGINAL_KEYS[data.type] <= data.values.keys(), data.type
    assert "registered as node" in daemon.text()


def test_check_config_reports_the_manager_section(tmp_path: Path, work: Path) -> None:
    """check-config names each problem of the manager section by its path."""
    config = tmp_path / "daemon.yaml"
    tls = {"cert_file": str(tmp_path / "missing.pem"), "key_file": str(tmp_path / "k.pem")}
    write(config, work, {"address": "manager:9090", "tls": tls, "keepalive": {"time": "5s"}})
    result = cli("check-config", str(config))
    assert result.returncode == 3, result.stderr
    assert "manager.keepalive.time" in result.stderr
    write(config, work, {"address": "manager:9090", "tls": tls})
    result = cli("check-config", str(config))
    assert result.returncode == 3
    assert "manager.tls.cert_file: not found" in result.stderr
    assert "manager.tls.key_file: not found" in result.stderr
