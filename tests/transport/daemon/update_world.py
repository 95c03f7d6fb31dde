"""A host configured for updates: agent binary, keyring, daemon install, config file, and
the artifact server; shared by the daemon's update tests."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio
import yaml

from tests.supervisor.helpers import wait_until
from tests.updater.fault_server import FaultServer, serve
from tests.updater.updater_testlib import PLATFORM, Signer, agent_script, make_signer
from updater import DaemonInstall, DownloadLimits, UpdateConfig, UpdateManager, UpdateRequest
from updater._envelope import encode_keyring

AGENT = "agent"  # the component (the test keys may sign for "agent" and "daemon")


@pytest.fixture(scope="module")
def signer() -> Signer:
    return make_signer()


@pytest.fixture
async def http_server(nursery: trio.Nursery) -> FaultServer:
    return await serve(nursery, FaultServer())


def archive(files: dict[str, bytes]) -> bytes:
    """A gzipped tar of ``files`` (all executable)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class World:
    """A configured host: agent binary, keyring, daemon install, config file."""

    tmp: Path
    server: FaultServer
    signer: Signer
    config: Path
    counter: int = 10
    daemons: list[trio.Process] = field(default_factory=list)

    @property
    def work(self) -> Path:
        return self.tmp / "work"

    @property
    def binary(self) -> Path:
        return self.tmp / "bin" / "agent"

    @property
    def root(self) -> Path:
        return self.tmp / "opt"

    @property
    def state(self) -> Path:
        return self.tmp / "upd" / "state"

    def write_config(self, **update: object) -> None:
        document = {
            "daemon": {"work_dir": str(self.work), "log_level": "info"},
            "agents": [
                {
                    "id": "a1",
                    "binary_path": str(self.binary),
                    "start_seconds": "0.2s",
                    "stop_timeout": "5s",
                    "health_check": {"heartbeat_timeout": 0},
                }
            ],
            "update": {
                "download_dir": "upd/downloads",  # relative: to the config file's directory
                "backup_dir": "upd/backups",
                "state_dir": "upd/state",
                "keyring_file": "keyring.json",
                "platform": PLATFORM,
                "verify_timeout": "1s",
                "max_backups": 2,
                "install_root": "opt",
                "limits": {"allow_http_hosts": ["127.0.0.1"], "disk_reserve_bytes": 0},
                "agents": {AGENT: {"agent": "a1"}},
                **update,
            },
        }
        self.config.write_text(yaml.safe_dump(document))

    def request(self, data: bytes, component: str = AGENT, key: str = "release") -> Path:
        """Serve ``data``; write a signed request file for it; return the file."""
        self.counter += 1
        name = f"x{self.counter}"
        self.server.files[name] = data
        statement = self.signer.statement(
            data, component=component, counter=self.counter, version=f"1.{self.counter}.0"
        )
        request = UpdateRequest(
            component=component,
            version=statement.version,
            download_url=self.server.url(f"/f/{name}"),
            hash=statement.sha256,
            envelope=self.signer.envelope(statement, key).decode(),
        )
        path = self.tmp / f"{name}.json"
        path.write_text(json.dumps(request.to_dict()))
        return path

    async def start_daemon(self, log: str = "daemon.log") -> trio.Process:
        with (self.tmp / log).open("ab") as stderr:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "transport.daemon", "run", "--config", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        self.daemons.append(process)
        return process

    async def start_serving(self) -> trio.Process:
        """Start the daemon and wait until a1 runs and the spool exists."""
        daemon = await self.start_daemon()
        await wait_until(lambda: "supervising 1 agent(s)" in self.log())
        await wait_until(lambda: (self.work / "updates").is_dir())
        await self.running_version()
        return daemon

    async def update(self, request: Path, *extra: str) -> tuple[int, dict[str, Any] | None, str]:
        """`hostvisor update`: its exit code, printed result, stderr."""
        done = await trio.run_process(
            [sys.executable, "-m", "transport.daemon", "update", "--config", str(self.config),
             str(request), *(extra or ("--timeout", "60"))],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )  # fmt: skip
        out = done.stdout.decode()
        return done.returncode, json.loads(out) if out.strip() else None, done.stderr.decode()

    def log(self, name: str = "daemon.log") -> str:
        try:
            return (self.tmp / name).read_text()
        except FileNotFoundError:
            return ""

    def agent_log(self) -> list[str]:
        try:
            return (self.work / "logs" / "a1.log").read_text().splitlines()
        except FileNotFoundError:
            return []

    async def running_version(self) -> str:
        """The version a1's latest process printed, once it is ready."""

        def started() -> bool:
            lines = self.agent_log()
            starts = [i for i, line in enumerate(lines) if line.endswith(" starting")]
            return bool(starts) and "READY" in lines[starts[-1] :]

        await wait_until(started)
        return [line for line in self.agent_log() if line.endswith(" starting")][-1].split()[1]

    async def agent_pid(self) -> int:
        """a1's PID, once the daemon has persisted it."""

        def recorded() -> int | None:
            try:
                state = json.loads((self.work / "state.json").read_text())
                return int(state["agents"]["a1"]["process"]["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                return None

        await wait_until(lambda: recorded() is not None)
        pid = recorded()
        assert pid is not None
        return pid

    def manager(self, trial_s: float = 600.0) -> tuple[UpdateManager, DaemonInstall]:
        """An in-process manager on the daemon's state (to prepare a self-update trial)."""
        install = DaemonInstall(self.root, trial_s=trial_s)
        config = UpdateConfig(
            state_dir=self.state,
            download_dir=self.tmp / "upd" / "downloads",
            backup_dir=self.tmp / "upd" / "backups",
            platform=PLATFORM,
            keyring_file=self.tmp / "keyring.json",
            limits=DownloadLimits(allow_http_hosts=frozenset({"127.0.0.1"}), disk_reserve_bytes=0),
        )
        return UpdateManager(config, daemon=install), install


def leftovers(root: Path) -> list[psutil.Process]:
    """Processes whose working directory lies under ``root`` (agents, version checks)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.cwd().startswith(str(root)):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture
async def world(http_server: FaultServer, signer: Signer, tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path, http_server, signer, tmp_path / "daemon.yaml")
    w.binary.parent.mkdir()
    w.binary.write_bytes(agent_script("1.0.0"))
    w.binary.chmod(0o755)
    (tmp_path / "keyring.json").write_bytes(encode_keyring(signer.keyring))
    v1 = w.root / "versions" / "1.0.0"
    v1.mkdir(parents=True)
    (v1 / "hostvisor").write_text("#!/bin/sh\n")
    (w.root / "current").symlink_to("versions/1.0.0")
    w.write_config()
    try:
        yield w
    finally:
        with trio.CancelScope(shield=True):
            for daemon in w.daemons:
                if daemon.returncode is None:
                    daemon.kill()
                await daemon.wait()
            for process in leftovers(tmp_path):
                process.kill()
