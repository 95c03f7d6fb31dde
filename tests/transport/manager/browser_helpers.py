"""The world of the console's browser tests: a real Manager, real daemons with real agents,
and a real headless Chromium driven by Playwright.

Theory of operation
-------------------
Everything is a separate real process, started and stopped here:

* :class:`ManagerProcess`: ``python -m transport.manager create-user`` for each account
  (the password on standard input), then ``python -m transport.manager run`` on free ports
  (port 0) with a temporary data directory; its addresses are read from the "listening"
  lines it prints. Stopped with SIGTERM.
* :class:`Node`: ``hostvisor run`` with a ``manager:`` section pointing at the Manager's
  gRPC port and its own TCP ``grpc_port`` (registered with the Manager, which dials it back
  to operate agents and follow logs). Its agents are small shell scripts; the ``echo`` agent
  (:func:`echo_agent`) prints every line written to its FIFO, so a test can make it write
  a line of its choosing at the moment it chooses. The daemon leaves its agents running on
  SIGTERM (by design), so :meth:`Node.stop` kills the agent pids it last recorded.
* :func:`open_browser`: Debian's ``/usr/bin/chromium`` launched by Playwright through
  ``executable_path`` (Playwright downloads no browser of its own), headless, with the
  flags of a machine without network and a fresh ``--user-data-dir``.

Screenshots go to :func:`artifacts_dir`: ``$HOSTVISOR_ARTIFACTS`` when set, else
``tests/artifacts/console/`` (gitignored). Waiting is always on a condition (a line, a
file, a selector), never on a duration.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
import pytest
import yaml

from tests.supervisor.helpers import alive, free_port, kill_all
from tests.transport.daemon.daemon_helpers import agent
from tests.transport.manager.test_run import manager_command

ROOT = Path(__file__).resolve().parents[3]
SAFETY_S = 90.0  # a safety net against a hung process, never a timing assertion
PASSWORD = "correct horse battery"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
REQUIRE_ENV = "HOSTVISOR_REQUIRE_BROWSER"


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = SAFETY_S) -> None:
    """Poll a condition on real processes, files or the database.

    Raises:
        AssertionError: ``what`` did not happen within ``timeout`` seconds (a safety net).
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def artifacts_dir() -> Path:
    """Where screenshots go: ``$HOSTVISOR_ARTIFACTS``, else ``tests/artifacts/console``."""
    configured = os.environ.get("HOSTVISOR_ARTIFACTS")
    path = Path(configured) if configured else ROOT / "tests" / "artifacts" / "console"
    path.mkdir(parents=True, exist_ok=True)
    return path


def browser_or_skip() -> str:
    """The Chromium executable; skip without one, or fail when ``$HOSTVISOR_REQUIRE_BROWSER``
    is set (CI installs Debian's chromium and sets it).

    Raises:
        pytest.fail.Exception: No browser or no Playwright, and one is required.
    """
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (Debian's chromium package)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package")
    if missing:
        reason = "browser tests need " + " and ".join(missing)
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


# --------------------------------------------------------------------------- the Manager


def read_line(stream: IO[bytes], buffer: bytearray, marker: bytes, timeout: float) -> str:
    """Read ``stream`` into ``buffer`` until a line containing ``marker``; return it.

    Raises:
        AssertionError: The stream ended, or the line did not come within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while True:
            for line in bytes(buffer).split(b"\n")[:-1]:
                if marker in line:
                    return line.decode()
            if not selector.select(max(0.0, deadline - time.monotonic())):
                raise AssertionError(f"no {marker!r} within {timeout} s: {bytes(buffer)!r}")
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"output ended before {marker!r}: {bytes(buffer)!r}")
            buffer += chunk


def terminate(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM ``process`` and wait; SIGKILL it when it does not stop.

    Returns:
        Its exit code.
    """
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=SAFETY_S)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=SAFETY_S)


@dataclass
class ManagerProcess:
    """``python -m transport.manager run`` as a real process, with its accounts.

    Args:
        tmp: A directory of its own (configuration, data, standard error).
        users: User name to role; each gets :data:`PASSWORD`.
    """

    tmp: Path
    users: dict[str, str]
    grpc: str = ""
    http: str = ""
    process: subprocess.Popen[bytes] | None = None
    _stderr: IO[bytes] | None = None

    @property
    def document(self) -> dict[str, Any]:
        """The configuration (also what :func:`open_store` style readers parse)."""
        return {
            "data_dir": str(self.tmp / "data"),
            "server": {"host": "127.0.0.1", "port": 0},
            "grpc": {"host": "127.0.0.1", "port": 0},
        }

    @property
    def config(self) -> Path:
        return self.tmp / "manager.yaml"

    def start(self) -> None:
        """Write the configuration, create the users, start and wait for both listeners.

        Raises:
            AssertionError: A user could not be created, or the Manager did not start.
        """
        self.config.write_text(yaml.safe_dump(self.document))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name, role in self.users.items():
            created = subprocess.run(
                manager_command(self.config, "create-user", name, "--role", role),
                input=f"{PASSWORD}\n".encode(),
                capture_output=True,
                cwd=ROOT,
                env=env,
                timeout=SAFETY_S,
                check=False,
            )
            assert created.returncode == 0, created.stderr.decode()
        self._stderr = (self.tmp / "manager.log").open("wb")
        self.process = subprocess.Popen(
            manager_command(self.config, "run"),
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=ROOT,
            env=env,
        )
        assert self.process.stdout is not None
        output = bytearray()
        try:
            grpc = read_line(self.process.stdout, output, b"gRPC listening on ", SAFETY_S)
            http = read_line(self.process.stdout, output, b"HTTP listening on ", SAFETY_S)
        except AssertionError as failed:
            raise AssertionError(f"{failed}\nthe Manager's log:\n{self.log()}") from None
        self.grpc = grpc.removeprefix("gRPC listening on ")
        self.http = http.removeprefix("HTTP listening on ")

    def log(self) -> str:
        """What the Manager wrote on standard error so far."""
        return (self.tmp / "manager.log").read_text(errors="replace")

    def stop(self) -> int | None:
        """SIGTERM, wait, close the pipes; SIGKILL when it does not stop.

        Returns:
            The exit code (None when it was never started).
        """
        if self.process is None:
            return None
        code = terminate(self.process)
        assert self.process.stdout is not None
        self.process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
        return code

    def token(self, username: str) -> str:
        """A JWT for ``username`` from ``POST /api/v1/auth/login``."""
        with httpx.Client(base_url=self.http, timeout=SAFETY_S) as client:
            response = client.post(
                "/api/v1/auth/login", json={"username": username, "password": PASSWORD}
            )
        assert response.status_code == 200, response.text
        token: str = response.json()["data"]["token"]
        return token

    def api(self, token: str) -> httpx.Client:
        """An HTTP client of the REST API sending ``token`` (close it)."""
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.http, headers=headers, timeout=SAFETY_S)


# --------------------------------------------------------------------------- the daemons


def echo_agent(agent_id: str, fifo: Path) -> dict[str, Any]:
    """An agent printing "ready" then every line written to ``fifo`` (opened read-write,
    so it never sees an end of file and a writer never waits for it)."""
    script = (
        f'echo "{agent_id} $$ ready"; exec 3<>"{fifo}"; '
        f'while IFS= read -r line <&3; do echo "{agent_id} says $line"; done'
    )
    return agent(agent_id, script)


def sleeper_agent(agent_id: str) -> dict[str, Any]:
    """An agent printing one line, then sleeping (one process: its pid is the agent's)."""
    return agent(agent_id, f'echo "{agent_id} $$ started"; exec sleep 100000')


@dataclass
class Node:
    """``hostvisor run`` reporting to a Manager, with its agents.

    Args:
        tmp: A directory of its own.
        node_id: ``daemon.id`` (the node's id at the Manager).
        agents: The agents' configurations.
    """

    tmp: Path
    node_id: str
    agents: list[dict[str, Any]]
    process: subprocess.Popen[bytes] | None = None
    seen_pids: set[int] = field(default_factory=set)

    @property
    def work(self) -> Path:
        return self.tmp / "work"

    @property
    def log_path(self) -> Path:
        return self.tmp / "daemon.log"

    def start(self, manager_grpc: str) -> None:
        """Write the configuration and start the daemon (it registers on its own)."""
        document = {
            "daemon": {
                "id": self.node_id,
                "work_dir": str(self.work),
                "grpc_port": free_port(),
                "labels": {"rack": "r1"},
            },
            "manager": {
                "address": manager_grpc,
                "heartbeat_interval": "1s",
                "sync_interval": "1s",
            },
            "collectors": {
                name: {"interval": "1s"} for name in ("cpu", "memory", "disk", "network")
            },
            "agents": self.agents,
        }
        config = self.tmp / "daemon.yaml"
        config.write_text(yaml.safe_dump(document))
        with self.log_path.open("ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "transport.daemon", "run", "--config", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
                cwd=ROOT,
            )

    def log(self) -> str:
        """What the daemon wrote on standard error so far."""
        return self.log_path.read_text(errors="replace")

    def pids(self) -> dict[str, int]:
        """The agents' pids from the daemon's state file (remembered for :meth:`stop`)."""
        try:
            state = json.loads((self.work / "state.json").read_text())
        except (OSError, ValueError):
            return {}
        found = {
            agent_id: int(entry["process"]["pid"])
            for agent_id, entry in state["agents"].items()
            if entry.get("process")
        }
        self.seen_pids.update(found.values())
        return found

    def stop(self) -> int | None:
        """Stop the daemon (SIGTERM), then kill every agent pid it ever recorded.

        Returns:
            The daemon's exit code (None when it was never started).
        """
        self.pids()
        code = None if self.process is None else terminate(self.process)
        self.pids()
        kill_all(self.seen_pids)
        wait_for(lambda: not any(alive(pid) for pid in self.seen_pids), "the agents to exit")
        return code


def write_line(fifo: Path, text: str) -> None:
    """Give the echo agent a line to print (fails at once when no agent holds the FIFO).

    Raises:
        OSError: ENXIO when nobody has the FIFO open for reading.
    """
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, f"{text}\n".encode())
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the browser


def processes_using(marker: str) -> list[int]:
    """The pids whose command line mentions ``marker`` (to check nothing was left)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in process.info["cmdline"] or ()):
            found.append(process.pid)
    return found


@contextmanager
def open_browser(profile: Path) -> Iterator[Any]:
    """Headless Debian Chromium with a fresh profile in ``profile``; a Playwright
    ``BrowserContext`` (each page of it has its own sessionStorage, so its own login).

    Raises:
        AssertionError: A Chromium process outlived the context.
    """
    from playwright.sync_api import sync_playwright

    executable = browser_or_skip()
    profile.mkdir(parents=True, exist_ok=True)
    # Playwright's synchronous API runs a plain asyncio loop of its own; importing
    # transport installs trio_asyncio's loop policy, whose loops cannot serve it.
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(profile),
                executable_path=executable,
                headless=True,
                args=list(CHROMIUM_FLAGS),
                viewport={"width": 1400, "height": 900},
            )
            context.set_default_timeout(SAFETY_S * 1000 / 3)
            try:
                yield context
            finally:
                context.close()
    finally:
        asyncio.set_event_loop_policy(policy)
    wait_for(lambda: not processes_using(str(profile)), "Chromium to exit")


def safe_name(text: str) -> str:
    """``text`` as a file name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def screenshot(page: Any, name: str) -> Path:
    """A full-page PNG of ``page`` in :func:`artifacts_dir` as ``<name>.png``."""
    path = artifacts_dir() / f"{safe_name(name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
