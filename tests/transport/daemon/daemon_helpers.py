"""The daemon as a real process for the gRPC and control-command tests: its configuration,
`hostvisor run`, and `hostvisor` commands against it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.supervisor.helpers import free_port
from tests.transport.daemon.test_cli import Daemon, wait_until

SLEEPER = "exec sleep 1000"
HOSTVISOR = (sys.executable, "-m", "transport.daemon")


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``hostvisor ARGS`` as a process: its exit code, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "transport.daemon", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def agent(agent_id: str, script: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": agent_id,
        "binary_path": "/bin/sh",
        "args": ["-c", script],
        "start_seconds": "0s",
        "stop_timeout": "5s",
        "health_check": {"heartbeat_timeout": 0, "interval": "0.2s"},
        **extra,
    }


class Host:
    """A configuration file, the daemon running it, and the agents' pids to clean up."""

    def __init__(self, tmp: Path, work: Path) -> None:
        self.tmp, self.work = tmp, work
        self.config = tmp / "daemon.yaml"
        self.daemon: Daemon | None = None
        self.port = free_port()

    def write(self, agents: list[dict[str, Any]], **daemon: Any) -> None:
        document = {
            "daemon": {"work_dir": str(self.work), "grpc_port": self.port, **daemon},
            "agents": agents,
        }
        self.config.write_text(yaml.safe_dump(document))

    def start(self, log: str = "daemon.log") -> Daemon:
        self.daemon = Daemon(self.config, self.tmp / log)
        return self.daemon

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli(*args, "--config", str(self.config))

    def wait_serving(self) -> None:
        assert self.daemon is not None
        wait_until(lambda: "gRPC: serving the command line" in self.daemon.text(), "the socket")

    def pids(self) -> list[int]:
        try:
            state = json.loads((self.work / "state.json").read_text())
        except (OSError, ValueError):
            return []
        return [
            entry["process"]["pid"] for entry in state["agents"].values() if entry.get("process")
        ]
