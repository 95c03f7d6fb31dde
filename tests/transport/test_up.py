"""``hostvisor up``: the real command as a process, with its real Manager, daemon and agents.

Each test runs ``up`` on free ports in a short directory of its own; every process still
working in it is killed at the end (a test that fails must not leave a Manager behind).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import trio

from tests.supervisor.helpers import alive, free_port, kill_all
from tests.transport.daemon.conftest import working_in
from transport._owned import Child, spawn
from transport._up import UpSettings, _prepare
from transport.daemon import load_config as load_daemon
from transport.daemon._manager_config import parse_manager
from transport.daemon._run import collectors_config
from transport.manager._config import load_config as load_manager

SAFETY_S = 120.0
AGENTS = {"ticker", "crasher", "graceful"}


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = SAFETY_S) -> Any:
    """Poll a condition on real processes; its first true value, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return result


@dataclass
class Up:
    """A running ``hostvisor up`` and what it printed."""

    proc: subprocess.Popen[str]
    directory: Path
    http_port: int
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)

    def stdout(self) -> str:
        return "".join(self.out)

    def stderr(self) -> str:
        return "".join(self.err)

    def wait_banner(self) -> tuple[str, str]:
        """Wait for the banner; the console's URL and the admin password."""
        wait_until(
            lambda: "Ctrl-C stops everything." in self.stdout() or self.proc.poll() is not None,
            "the banner",
        )
        text = self.stdout()
        assert "Ctrl-C stops everything." in text, text + self.stderr()
        url = re.search(r"Console +(\S+)", text)
        password = re.search(r"user admin, password (\S+)", text)
        assert url and password, text
        return url.group(1), password.group(1)

    def part_pid(self, part: str) -> int:
        found = re.search(rf"{part} +pid (\d+)", self.stdout())
        assert found, self.stdout()
        return int(found.group(1))

    def wait_exit(self) -> int:
        return self.proc.wait(timeout=SAFETY_S)


def _pump(stream: Any, into: list[str]) -> None:
    for line in stream:
        into.append(line)


@pytest.fixture
def place() -> Iterator[Path]:
    """A short directory for ``up`` (the daemon's control socket path must be short)."""
    path = Path(tempfile.mkdtemp(prefix="hvup-", dir="/tmp"))
    yield path
    kill_all(working_in(path))
    wait_until(lambda: nothing_left(path), "the killed processes to end")
    shutil.rmtree(path)


@contextmanager
def start_up(place: Path, http_port: int | None = None) -> Iterator[Up]:
    """``hostvisor up`` in ``place`` for the block; killed at the end if still running."""
    http_port = http_port or free_port()
    argv = [sys.executable, "-m", "transport.daemon", "up", "--dir", str(place / "up")]
    argv += ["--http-port", str(http_port), "--grpc-port", str(free_port())]
    argv += ["--daemon-port", str(free_port())]
    proc = subprocess.Popen(
        argv, cwd=place, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    up = Up(proc, place, http_port)
    pumps = [
        threading.Thread(target=_pump, args=(stream, into), daemon=True)
        for stream, into in ((proc.stdout, up.out), (proc.stderr, up.err))
    ]
    for pump in pumps:
        pump.start()
    with proc:  # closes the pipes
        try:
            yield up
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=SAFETY_S)
            for pump in pumps:
                pump.join(timeout=SAFETY_S)


@pytest.fixture
def running(place: Path) -> Iterator[Up]:
    with start_up(place) as up:
        yield up


def nothing_left(place: Path) -> bool:
    return not [pid for pid in working_in(place) if alive(pid)]


@pytest.mark.slow
def test_up_runs_the_system_and_ctrl_c_stops_everything(running: Up) -> None:
    """The banner's password logs into the REST API, where the node and its example agents
    appear; SIGINT ends ``up`` with 0 and leaves no Manager, daemon or agent running."""
    url, password = running.wait_banner()
    assert url == f"http://127.0.0.1:{running.http_port}/"
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/").status_code == 200  # the console
        bad = client.post("/api/v1/auth/login", json={"username": "admin", "password": "x"})
        assert bad.status_code == 401
        login = client.post("/api/v1/auth/login", json={"username": "admin", "password": password})
        assert login.status_code == 200, login.text
        client.headers["Authorization"] = f"Bearer {login.json()['data']['token']}"
        nodes = client.get("/api/v1/nodes").json()["data"]["list"]
        assert [n["status"] for n in nodes] == ["online"]
        node_id = nodes[0]["node_id"]

        def agents() -> set[str]:
            answer = client.get(f"/api/v1/nodes/{node_id}/agents").json()
            return {a["agent_id"] for a in answer["data"]["agents"]}

        wait_until(lambda: agents() == AGENTS, "the example agents through the REST API")
    workers = [pid for pid in working_in(running.directory) if pid != running.proc.pid]
    agent_pids = [p for p in workers if "/agents/" in psutil.Process(p).cwd()]
    assert agent_pids, "no agent process found"

    running.proc.send_signal(signal.SIGINT)
    assert running.wait_exit() == 0, running.stderr()
    assert "SIGINT: stopping" in running.stdout()
    assert "the daemon exited with status 0" in running.stdout()
    assert "the Manager exited with status 0" in running.stdout()
    assert not [pid for pid in workers if alive(pid)]
    assert nothing_left(running.directory)


@pytest.mark.slow
def test_a_dead_part_stops_the_other_and_sigkill_of_up_takes_its_children(
    place: Path,
) -> None:
    """The daemon killed (so it leaves its agents running): ``up`` says so, stops the
    Manager and the orphaned agents, and exits 1. ``up`` again in the same directory: the
    admin's new password works, the old one does not. Then ``up`` itself is SIGKILLed: the
    Manager, the daemon and the agents still end (their parent-death signal is SIGTERM, on
    which the daemon stops its agents)."""
    with start_up(place) as first:
        _, old = first.wait_banner()
        agents = [p for p in working_in(place) if "/agents/" in psutil.Process(p).cwd()]
        assert agents
        os.kill(first.part_pid("Daemon"), signal.SIGKILL)
        assert first.wait_exit() == 1
        assert "the daemon was killed by SIGKILL; the end of" in first.stderr()
        assert "(everything else was stopped)" in first.stderr()
        assert "process(es) the daemon had left running" in first.stdout()
        assert not [pid for pid in agents if alive(pid)]
        assert nothing_left(place)
    with start_up(place) as second:
        url, new = second.wait_banner()
        assert new != old
        with httpx.Client(base_url=url, timeout=30) as client:
            for password, status in ((old, 401), (new, 200)):
                answer = client.post(
                    "/api/v1/auth/login", json={"username": "admin", "password": password}
                )
                assert answer.status_code == status, answer.text
        workers = [pid for pid in working_in(place) if pid != second.proc.pid]
        assert {second.part_pid("Manager"), second.part_pid("Daemon")} <= set(workers)
        assert any("/agents/" in psutil.Process(pid).cwd() for pid in workers)
        second.proc.kill()
        second.wait_exit()
        wait_until(lambda: not [pid for pid in workers if alive(pid)], "the children to end")
        assert nothing_left(place)


def test_a_busy_port_is_named_and_nothing_starts(place: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with start_up(place, http_port=port) as up:
            assert up.wait_exit() == 1
    assert (
        f"port {port} (the Manager's HTTP: console and REST API) on 127.0.0.1: in use;"
        " pass --http-port PORT to use another one"
    ) in up.stderr()
    assert "hostvisor is up" not in up.stdout()
    assert nothing_left(place)
    assert not (place / "up" / "manager.log").exists()


def test_the_written_configurations_are_valid_and_loopback_only(tmp_path: Path) -> None:
    """What ``up`` writes before it starts anything: both files load, everything listens on
    loopback at the ports asked for, the daemon reports to the Manager and stops its agents
    when it ends."""
    http, grpc, daemon_port = free_port(), free_port(), free_port()
    settings = UpSettings(tmp_path / "up", http, grpc, daemon_port, node_id="demo")
    printed: list[str] = []
    run = _prepare(settings, printed.append)
    manager = load_manager(run.layout.manager_config)
    assert (manager.server.host, manager.server.port) == ("127.0.0.1", http)
    assert (manager.grpc.host, manager.grpc.port) == ("127.0.0.1", grpc)
    assert manager.data_dir == str(tmp_path / "up" / "manager")
    config = load_daemon(run.layout.daemon_config)
    assert config.daemon.id == "demo"
    assert (config.daemon.grpc_host, config.daemon.grpc_port) == ("127.0.0.1", daemon_port)
    assert config.daemon.stop_agents_on_exit
    assert config.daemon.work_dir == str(tmp_path / "up" / "daemon")
    reporting = parse_manager(config.manager, base_dir=str(tmp_path))
    assert reporting.address == f"127.0.0.1:{grpc}"
    assert reporting.tls.enabled is False
    assert collectors_config(config) is not None
    assert {spec.id for spec in config.agents} == AGENTS
    assert printed == [f"Starting the Manager and a daemon in {tmp_path / 'up'} ..."]


async def test_an_owned_child_reads_its_input_and_is_killed_if_it_ignores_sigterm(
    tmp_path: Path,
) -> None:
    """``spawn``: the child gets ``stdin`` and writes to the log; ``Child.stop`` sends
    SIGTERM, and SIGKILL once the grace period is over."""
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('read', sys.stdin.readline().strip(), flush=True)\n"
        "time.sleep(600)\n"
    )
    log = tmp_path / "child.log"
    pid, pidfd = spawn(["-c", code], log, b"hello\n")
    child = Child("the child", pid, log, pidfd)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(child.watch)
        with trio.fail_after(SAFETY_S):
            while "read hello" not in log.read_text():
                await trio.sleep(0.05)
            await child.stop(timeout_s=0.5)
    assert child.status == -signal.SIGKILL
    assert child.describe_end() == "was killed by SIGKILL"
    assert not alive(pid)
