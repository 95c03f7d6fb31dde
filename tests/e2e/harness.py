"""The whole system as real processes: a Manager, N daemons, their agents, a REST client.

Everything here is synchronous and plain :mod:`subprocess`; tests may be sync or trio.

API
---
``Fleet(root, *, nodes=3, tls=False, intervals=FAST, agents=None, manager_extra=None,
daemon_extra=None, prepare=None, extra_agents=None)`` is a context manager
(``with Fleet(tmp) as fleet:``). Entering it writes every configuration, creates the
users, starts the Manager and the daemons, and returns once every daemon serves and every
node is listed by the REST API. Leaving it stops every daemon (SIGTERM, SIGKILL after
:data:`GRACE_S`), then the Manager, then kills every process left whose working directory
is under ``root`` or a daemon's work directory (daemons leave their agents running by
design): nothing remains (:meth:`Fleet.leftovers`).

* ``agents(i) -> list[dict]``: node ``i``'s (1-based) ``agents:`` entries, instead of
  :func:`default_agents`; ``extra_agents(i)``: entries added to those.
* ``daemon_extra(i) -> dict`` and ``manager_extra`` are merged into the generated
  documents key by key (:func:`merged`), e.g. ``{"daemon": {"grpc_host": "0.0.0.0"}}``
  or ``{"update": {...}}``. Relative paths in a daemon's document are resolved against
  its directory :meth:`Fleet.node_dir`; ``prepare(i, node_dir)`` is called first, to put
  there the files the document names (an agent's binary, a keyring).
* ``fleet.manager``: :class:`ManagerProc` (``hostvisor-manager run``; SQLite in its data
  directory; gRPC and HTTP on loopback ports chosen once, kept across restarts):
  ``.grpc_address``, ``.http_url``, ``.start()``, ``.stop()``, ``.kill()``,
  ``.restart()``, ``.log_text()``.
* ``fleet.daemons``: :class:`DaemonProc` per node (ids ``node-1`` .. ``node-N``), each
  with its own directory, a short work directory under /tmp and its own gRPC port:
  ``.start()``, ``.stop()``, ``.kill()``, ``.pids()``, ``.agent_pid(id)``,
  ``.agent_log(id)``, ``.state()``, ``.log_text()``, ``.run_text()`` (this run's),
  ``.ctl(*args)``, ``.write(document)``; ``fleet.daemon("node-2")``.
* ``fleet.api(role="admin")``: a logged-in :class:`Api`. The users ``admin``,
  ``operator`` and ``viewer`` (password :data:`PASSWORD`) exist: ``admin`` made by
  ``hostvisor-manager create-user`` before the Manager starts, the others through the
  REST API. ``.get(path, **params)`` returns the envelope's ``data`` (asserting code 0),
  ``.raw(method, path, **kw)`` the httpx response, and helpers ``nodes()``, ``node(id)``,
  ``agents(id)``, ``agent(id, agent)``, ``latest_metrics(id)``,
  ``operate(id, agent, action)``, ``logs(id, agent, lines)``, ``push_update(**fields)``,
  ``update_job(number)``. Paths are under ``/api/v1`` (``/nodes``) unless they start
  with ``/api/`` or are ``/health`` or ``/metrics``. A non-zero code raises
  :class:`ApiError` (an ``AssertionError``).
* ``fleet.wait(predicate, what, timeout=SAFETY_S)``: polls every 0.1 s; on timeout fails
  with ``what`` and the tails of the Manager's and the daemons' logs. Never a timing
  assertion: the timeout is a safety net.
* ``tls=True``: certificates made by ``hostvisor certs``'s function
  (:func:`transport._certs.make_fleet_certificates`, wrapped by :class:`FleetPki`,
  ``fleet.pki``): the fleet's CA signs the Manager's server certificate (names
  127.0.0.1 and :data:`MANAGER_NAME`) and each node's certificate (common name and DNS
  name = node id, and 127.0.0.1), which serves as the daemon's server certificate and
  as its client certificate towards the Manager; a second CA signs only the Manager's
  client certificate, the one daemons accept. The Manager requires client certificates
  and binds them to node ids (``bind_node_identity``).
* :class:`Intervals`: heartbeat, collectors, state sync and reconnection, in seconds;
  :data:`FAST` is 1 s each, so "within one interval" waits are short.
* Default agents (:func:`default_agents`): ``ticker`` (prints ``tick N`` every 0.2 s) and
  ``sleeper`` on every node; node 1 also runs Debian's prometheus-node-exporter
  (``node-exporter``, HTTP check on ``fleet.node_exporter_port``) when
  :data:`NODE_EXPORTER` is installed; with ``HOSTVISOR_REQUIRE_NODE_EXPORTER`` set, its
  absence is an error instead.
* :class:`ArtifactServer`: a threaded HTTP server on 127.0.0.1 serving bytes (update
  artifacts), a context manager.
* Helpers: :func:`shell_agent`, :func:`default_agents`, :func:`merged`,
  :func:`processes_under`.

Pytest fixtures (``tests/e2e/conftest.py``): ``fleet`` (module scope, one fleet shared by
a module's functional tests; a module may override the module-scoped ``fleet_options``
fixture to pass keyword arguments), ``fresh_fleet`` (a factory for destructive tests,
function scope), ``fleet_root`` (a fresh short directory).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx
import psutil
import yaml

from tests.supervisor.helpers import free_port, kill_all
from tests.transport.daemon.daemon_helpers import agent as daemon_agent
from transport._certs import FleetCertificates, KeyPair, make_fleet_certificates

__all__ = [
    "FAST",
    "GRACE_S",
    "MANAGER_NAME",
    "NODE_EXPORTER",
    "PASSWORD",
    "ROLES",
    "SAFETY_S",
    "Api",
    "ApiError",
    "ArtifactServer",
    "DaemonProc",
    "Fleet",
    "FleetPki",
    "Intervals",
    "ManagerProc",
    "default_agents",
    "merged",
    "processes_under",
    "shell_agent",
    "want_node_exporter",
]

SAFETY_S = 120.0
"""The longest any wait lasts: a safety net against a hung test, never a timing."""
GRACE_S = 20.0
"""How long a SIGTERMed process may take before it is SIGKILLed at cleanup."""
PASSWORD = "e2e-fleet-password"
ROLES = ("admin", "operator", "viewer")
"""The users created in every fleet, each with the role of its name."""
MANAGER_NAME = "localhost"
"""A name in the Manager's server certificate, beside 127.0.0.1."""
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
"""Debian's prometheus-node-exporter, if installed."""
TICKER = 'n=0; while :; do n=$((n + 1)); echo "tick $n"; sleep 0.2; done'
_POLL_S = 0.1
_LOG_TAIL = 30


@dataclass(frozen=True, slots=True)
class Intervals:
    """How often the daemons talk to the Manager, in seconds.

    Attributes:
        heartbeat_s: ``manager.heartbeat_interval``.
        metrics_s: Every collector's ``interval`` (one ReportMetrics per round).
        sync_s: ``manager.sync_interval`` (full agent-state sync).
        reconnect_s: ``manager.reconnect_interval`` (the longest wait between attempts).
    """

    heartbeat_s: float = 1.0
    metrics_s: float = 1.0
    sync_s: float = 1.0
    reconnect_s: float = 1.0


FAST = Intervals()


# --------------------------------------------------------------------------- helpers


def merged(base: Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """``base`` with ``extra`` merged in: mappings key by key, anything else replaced."""
    result = dict(base)
    for key, value in (extra or {}).items():
        old = result.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            result[key] = merged(old, value)
        else:
            result[key] = value
    return result


def processes_under(*roots: Path) -> list[psutil.Process]:
    """The processes whose working directory is one of ``roots`` or below one."""
    prefixes = [str(root) for root in roots]
    found = []
    for process in psutil.process_iter():
        try:
            cwd = process.cwd()
        except (psutil.Error, OSError):
            continue
        if any(cwd == p or cwd.startswith(f"{p}/") for p in prefixes):
            found.append(process)
    return found


def _tail(path: Path, lines: int = _LOG_TAIL) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _stop(proc: subprocess.Popen[bytes], sig: int, grace: float) -> int:
    """Send ``sig`` unless the process ended; SIGKILL it after ``grace``; reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout=SAFETY_S)


def _stop_all(procs: list[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM every process still running at once, then reap each (SIGKILL after
    ``grace``)."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=SAFETY_S)


def shell_agent(agent_id: str, script: str, **extra: Any) -> dict[str, Any]:
    """An ``agents:`` entry running ``/bin/sh -c script``, started at once, no heartbeat,
    checked every second."""
    health = {"heartbeat_timeout": "0s", "interval": "1s"}
    return daemon_agent(agent_id, script, **{"health_check": health, **extra})


def node_exporter_agent(port: int) -> dict[str, Any]:
    """prometheus-node-exporter on ``127.0.0.1:port`` with its HTTP check."""
    assert NODE_EXPORTER is not None
    return {
        "id": "node-exporter",
        "type": "node_exporter",
        "binary_path": NODE_EXPORTER,
        "args": [f"--web.listen-address=127.0.0.1:{port}", "--path.procfs=/proc"],
        "start_seconds": "0.5s",
        "stop_timeout": "10s",
        "health_check": {
            "interval": "1s",
            "heartbeat_timeout": "0s",
            "http_endpoint": f"http://127.0.0.1:{port}/metrics",
            "timeout": "5s",
            "failures": 3,
        },
    }


def default_agents(index: int, node_exporter_port: int | None = None) -> list[dict[str, Any]]:
    """Node ``index``'s default agents: ``ticker`` and ``sleeper``, and on node 1
    ``node-exporter`` when a port is given."""
    agents = [shell_agent("ticker", TICKER), shell_agent("sleeper", "exec sleep 100000")]
    if index == 1 and node_exporter_port is not None:
        agents.append(node_exporter_agent(node_exporter_port))
    return agents


def want_node_exporter() -> bool:
    """Whether prometheus-node-exporter is installed (an error if it must be and is not)."""
    if NODE_EXPORTER is not None:
        return True
    if os.environ.get("HOSTVISOR_REQUIRE_NODE_EXPORTER"):
        raise AssertionError(
            "HOSTVISOR_REQUIRE_NODE_EXPORTER is set but prometheus-node-exporter is not"
            " installed (apt-get install prometheus-node-exporter)"
        )
    return False


class _Ports:
    """Free loopback ports, never the same one twice in a fleet."""

    def __init__(self) -> None:
        self.taken: set[int] = set()

    def __call__(self) -> int:
        while (port := free_port()) in self.taken:
            pass
        self.taken.add(port)
        return port


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True, slots=True)
class FleetPki:
    """A fleet's certificates (:class:`transport._certs.FleetCertificates`) by name.

    Attributes:
        files: What :func:`~transport._certs.make_fleet_certificates` wrote.
    """

    files: FleetCertificates

    @property
    def dir(self) -> Path:
        return self.files.directory

    @property
    def ca(self) -> Path:
        """The fleet's CA: the Manager's server certificate and the nodes' chain to it."""
        return self.files.ca.cert

    @property
    def daemon_clients_ca(self) -> Path:
        """The CA of the Manager's client certificate (daemons trust only it)."""
        return self.files.daemon_clients_ca.cert

    def pair(self, name: str) -> KeyPair:
        """``manager`` (server), ``manager-client``, or a node id."""
        if name == "manager":
            return self.files.manager
        if name == "manager-client":
            return self.files.manager_client
        return self.files.nodes[name]

    def cert(self, name: str) -> Path:
        return self.pair(name).cert

    def key(self, name: str) -> Path:
        return self.pair(name).key

    @classmethod
    def create(cls, directory: Path, node_ids: list[str]) -> FleetPki:
        """Make the certificates of a Manager and nodes all reached at 127.0.0.1."""
        files = make_fleet_certificates(
            directory,
            manager_hosts=["127.0.0.1", MANAGER_NAME],
            node_ids=node_ids,
            node_hosts=dict.fromkeys(node_ids, ("127.0.0.1",)),
            days=1,
        )
        return cls(files)

    def client_files(self, name: str) -> dict[str, str]:
        """A ``tls`` block presenting ``name``'s certificate and trusting the fleet's CA
        (``manager.tls``, ``daemon_client.tls``)."""
        return {
            "cert_file": str(self.cert(name)),
            "key_file": str(self.key(name)),
            "ca_file": str(self.ca),
        }


# --------------------------------------------------------------------------- processes


class _Process:
    """A program started with its output appended to one log file."""

    name = "process"

    def __init__(self, directory: Path, log: Path) -> None:
        self.dir = directory
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._mark = 0  # where the current run's log starts

    def _spawn(self, argv: list[str]) -> None:
        assert not self.running, f"{self.name} is running already"
        self._mark = _size(self.log)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.dir,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def log_text(self) -> str:
        """Everything the program wrote, all runs."""
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def run_text(self) -> str:
        """What the current (or last) run wrote."""
        return _read_from(self.log, self._mark)

    def _wait_for(self, marker: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.run_text():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode} before {marker!r}:\n"
                    + _tail(self.log)
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {marker!r} in time:\n" + _tail(self.log))
            time.sleep(_POLL_S)

    def stop(self, sig: int = signal.SIGTERM, grace: float = GRACE_S) -> int:
        """Send ``sig`` (SIGKILL after ``grace``); return the exit code."""
        assert self.proc is not None, f"{self.name} was never started"
        return _stop(self.proc, sig, grace)

    def kill(self) -> int:
        """SIGKILL; return the exit code (-9)."""
        return self.stop(signal.SIGKILL)


class ManagerProc(_Process):
    """``hostvisor-manager run`` (``python -m transport.manager``) on its own directory."""

    name = "manager"

    def __init__(
        self,
        directory: Path,
        ports: Callable[[], int],
        *,
        pki: FleetPki | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(directory, directory / "manager.log")
        self.config = directory / "manager.yaml"
        self.grpc_port, self.http_port = ports(), ports()
        document: dict[str, Any] = {
            "data_dir": str(directory / "data"),
            "server": {"host": "127.0.0.1", "port": self.http_port},
            "grpc": {"host": "127.0.0.1", "port": self.grpc_port},
            "log": {"level": "info"},
            "daemon_client": {"timeout": "30s", "operate_timeout": "60s"},
        }
        if pki is not None:
            document["grpc"]["tls"] = {
                "enabled": True,
                "cert_file": str(pki.cert("manager")),
                "key_file": str(pki.key("manager")),
                "ca_file": str(pki.ca),
                "bind_node_identity": True,
            }
            document["daemon_client"]["tls"] = pki.client_files("manager-client")
        self.document = merged(document, extra)
        self.config.write_text(yaml.safe_dump(self.document))

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def command(self, *argv: str) -> list[str]:
        return [sys.executable, "-m", "transport.manager", *argv, "--config", str(self.config)]

    def create_user(self, name: str, role: str) -> subprocess.Popen[str]:
        """Start ``create-user NAME --role ROLE`` (password :data:`PASSWORD` on stdin)."""
        process = subprocess.Popen(
            self.command("create-user", name, "--role", role),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.dir,
        )
        assert process.stdin is not None
        process.stdin.write(f"{PASSWORD}\n")
        process.stdin.close()
        return process

    def start(self, *, wait: bool = True) -> None:
        """Start it; with ``wait``, return once both listeners are up."""
        self._spawn(self.command("run"))
        if wait:
            self.wait_listening()

    def wait_listening(self, timeout: float = SAFETY_S) -> None:
        self._wait_for("HTTP listening on ", timeout)

    def restart(self) -> None:
        """SIGTERM, then start again on the same ports and data directory."""
        self.stop()
        self.start()


class DaemonProc(_Process):
    """``hostvisor run`` for one node: its directory, work directory and configuration.

    Attributes:
        node_id: ``daemon.id``.
        dir: The node's directory (the configuration, the daemon's log).
        work: Its work directory (short, under /tmp).
        port: Its gRPC port.
        document: The configuration as written.
    """

    name = "daemon"

    def __init__(
        self,
        node_id: str,
        directory: Path,
        document: Mapping[str, Any],
        port: int,
        work: Path,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(directory, directory / "daemon.log")
        self.name = f"daemon {node_id}"
        self.node_id, self.port, self.work = node_id, port, work
        self.config = directory / "daemon.yaml"
        self.document = dict(document)
        self.write()

    def write(self, document: Mapping[str, Any] | None = None) -> None:
        """(Re)write the configuration file, ``document`` if given."""
        if document is not None:
            self.document = dict(document)
        self.config.write_text(yaml.safe_dump(self.document))

    def command(self, *argv: str) -> list[str]:
        return [sys.executable, "-m", "transport.daemon", *argv, "--config", str(self.config)]

    def start(self, *, wait: bool = True) -> None:
        """Start ``hostvisor run``; with ``wait``, return once it serves gRPC."""
        self._spawn(self.command("run"))
        if wait:
            self.wait_serving()

    def wait_serving(self, timeout: float = SAFETY_S) -> None:
        self._wait_for("gRPC: serving the command line", timeout)

    def ctl(self, *args: str, timeout: float = SAFETY_S) -> subprocess.CompletedProcess[str]:
        """``hostvisor ARGS --config ...``: exit code, stdout, stderr."""
        return subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.dir,
        )

    def state(self) -> dict[str, Any]:
        """The daemon's ``state.json`` (empty before it first wrote one)."""
        try:
            loaded: dict[str, Any] = json.loads((self.work / "state.json").read_text())
        except (OSError, ValueError):
            return {}
        return loaded

    def pids(self) -> dict[str, int]:
        """Agent id -> pid of every agent process ``state.json`` records."""
        agents = self.state().get("agents", {})
        return {
            agent_id: int(entry["process"]["pid"])
            for agent_id, entry in agents.items()
            if entry.get("process")
        }

    def agent_pid(self, agent_id: str) -> int | None:
        """The agent's pid as ``state.json`` records it, or None."""
        return self.pids().get(agent_id)

    def agent_log(self, agent_id: str) -> str:
        """The agent's log file (``{work}/logs/{id}.log``)."""
        try:
            return (self.work / "logs" / f"{agent_id}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""


# --------------------------------------------------------------------------- REST


class ApiError(AssertionError):
    """A REST call answered a non-zero code."""


class Api:
    """A REST client logged in as one user (httpx, synchronous)."""

    def __init__(self, base_url: str, username: str, password: str = PASSWORD) -> None:
        self.username = username
        self.client = httpx.Client(base_url=base_url, timeout=SAFETY_S)
        login = self.client.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
        assert login.status_code == 200, login.text
        self.token: str = login.json()["data"]["token"]
        self.client.headers["Authorization"] = f"Bearer {self.token}"

    def close(self) -> None:
        self.client.close()

    @staticmethod
    def url(path: str) -> str:
        if path.startswith("/api/") or path in ("/health", "/metrics"):
            return path
        return f"/api/v1{path}"

    def raw(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response as it came."""
        return self.client.request(method, self.url(path), **kwargs)

    def _data(self, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            raise ApiError(f"{response.request.url}: not JSON: {response.text[:500]}") from None
        if body.get("code") != 0:
            raise ApiError(f"{response.request.url}: HTTP {response.status_code}: {body}")
        return body["data"]

    def get(self, path: str, **params: Any) -> Any:
        """GET: the envelope's ``data`` (fails unless code 0)."""
        return self._data(self.raw("GET", path, params=params))

    def post(self, path: str, body: Any = None) -> Any:
        """POST JSON: the envelope's ``data`` (fails unless code 0)."""
        return self._data(self.raw("POST", path, json=body))

    def nodes(self) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = self.get("/nodes", page_size=100)["list"]
        return nodes

    def node(self, node_id: str) -> dict[str, Any]:
        node: dict[str, Any] = self.get(f"/nodes/{node_id}")["node"]
        return node

    def agents(self, node_id: str) -> list[dict[str, Any]]:
        agents: list[dict[str, Any]] = self.get(f"/nodes/{node_id}/agents")["agents"]
        return agents

    def agent(self, node_id: str, agent_id: str) -> dict[str, Any] | None:
        """One agent as the Manager stored it, or None."""
        found = [a for a in self.agents(node_id) if a["agent_id"] == agent_id]
        return found[0] if found else None

    def latest_metrics(self, node_id: str) -> dict[str, Any]:
        """``{cpu, memory, disk, network}``: each the latest row or None."""
        latest: dict[str, Any] = self.get(f"/metrics/nodes/{node_id}/latest")
        return latest

    def operate(self, node_id: str, agent_id: str, action: str) -> Any:
        return self.post(f"/nodes/{node_id}/agents/{agent_id}/operate", {"operation": action})

    def logs(self, node_id: str, agent_id: str, lines: int = 100) -> list[str]:
        logs: list[str] = self.get(f"/nodes/{node_id}/agents/{agent_id}/logs", lines=lines)["logs"]
        return logs

    def push_update(self, **fields: Any) -> dict[str, Any]:
        """POST /updates (``node_ids, component, version, download_url, hash,
        signature``): the job with every target's state."""
        job: dict[str, Any] = self.post("/updates", fields)["update"]
        return job

    def update_job(self, number: int) -> dict[str, Any]:
        """GET /updates/NUMBER (the Manager asks the daemons of unfinished targets)."""
        job: dict[str, Any] = self.get(f"/updates/{number}")["update"]
        return job


# --------------------------------------------------------------------------- artifacts


class ArtifactServer:
    """Bytes served over plain HTTP on 127.0.0.1 (``/NAME``), in a thread."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits: list[str] = []
        files, hits = self.files, self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                hits.append(name)
                data = files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def __enter__(self) -> ArtifactServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=SAFETY_S)


# --------------------------------------------------------------------------- the fleet


class Fleet:
    """A Manager and ``nodes`` daemons as real processes (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        *,
        nodes: int = 3,
        tls: bool = False,
        intervals: Intervals = FAST,
        agents: Callable[[int], list[dict[str, Any]]] | None = None,
        manager_extra: Mapping[str, Any] | None = None,
        daemon_extra: Callable[[int], Mapping[str, Any]] | None = None,
        prepare: Callable[[int, Path], None] | None = None,
        extra_agents: Callable[[int], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.root = root
        self.count = nodes
        self.tls = tls
        self.intervals = intervals
        self._agents = agents
        self._manager_extra = manager_extra
        self._daemon_extra = daemon_extra
        self._prepare = prepare
        self._extra_agents = extra_agents
        self.ports = _Ports()
        self.node_ids = [f"node-{i}" for i in range(1, nodes + 1)]
        self.pki: FleetPki | None = None
        self.manager: ManagerProc
        self.daemons: list[DaemonProc] = []
        self.node_exporter_port: int | None = None
        self._works: list[Path] = []
        self._apis: dict[str, Api] = {}

    # ----------------------------------------------------------------- set-up

    def node_dir(self, index: int) -> Path:
        """Node ``index``'s directory (1-based): its configuration and log."""
        return self.root / f"node-{index}"

    def daemon_document(self, index: int, port: int, work: Path) -> dict[str, Any]:
        """Node ``index``'s ``daemon.yaml`` before ``daemon_extra`` is merged in."""
        node_id = self.node_ids[index - 1]
        every = f"{self.intervals.metrics_s}s"
        manager: dict[str, Any] = {
            "address": self.manager.grpc_address,
            "heartbeat_interval": f"{self.intervals.heartbeat_s}s",
            "sync_interval": f"{self.intervals.sync_s}s",
            "reconnect_interval": f"{self.intervals.reconnect_s}s",
            "timeout": "10s",
        }
        daemon: dict[str, Any] = {
            "id": node_id,
            "work_dir": str(work),
            "log_level": "info",
            "grpc_host": "127.0.0.1",
            "grpc_port": port,
            "labels": {"fleet": "e2e", "index": str(index)},
        }
        if self.pki is not None:
            manager["tls"] = self.pki.client_files(node_id)
            daemon["tls"] = {
                "cert_file": str(self.pki.cert(node_id)),
                "key_file": str(self.pki.key(node_id)),
                "ca_file": str(self.pki.daemon_clients_ca),
            }
        if self._agents is not None:
            agents = self._agents(index)
        else:
            agents = default_agents(index, self.node_exporter_port)
        if self._extra_agents is not None:
            agents = [*agents, *self._extra_agents(index)]
        return {
            "daemon": daemon,
            "manager": manager,
            "collectors": {
                name: {"interval": every} for name in ("cpu", "memory", "disk", "network")
            },
            "agents": agents,
        }

    def start(self) -> None:
        """Write everything, start the Manager and the daemons; return once every node is
        listed by the REST API."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.tls:
            self.pki = FleetPki.create(self.root / "pki", self.node_ids)
        if self._agents is None and want_node_exporter():
            self.node_exporter_port = self.ports()
        self.manager = ManagerProc(
            self.root / "manager", self.ports, pki=self.pki, extra=self._manager_extra
        )
        _check_created(self.manager.create_user("admin", "admin"))
        self.manager.start(wait=False)
        for index in range(1, self.count + 1):
            self.node_dir(index).mkdir(parents=True, exist_ok=True)
            if self._prepare is not None:
                self._prepare(index, self.node_dir(index))
            work = Path(tempfile.mkdtemp(prefix="hve-", dir="/tmp"))
            self._works.append(work)
            port = self.ports()
            document = self.daemon_document(index, port, work)
            if self._daemon_extra is not None:
                document = merged(document, self._daemon_extra(index))
            daemon = DaemonProc(
                self.node_ids[index - 1], self.node_dir(index), document, port, work
            )
            self.daemons.append(daemon)
            daemon.start(wait=False)
        self.manager.wait_listening()
        admin = self.api()
        for role in ROLES[1:]:
            admin.post("/admin/users", {"username": role, "password": PASSWORD, "role": role})
        for daemon in self.daemons:
            daemon.wait_serving()
        self.wait_registered()

    def wait_registered(self, node_ids: list[str] | None = None) -> None:
        """Wait until the REST API lists every node (or those given)."""
        wanted = set(node_ids or self.node_ids)
        api = self.api()
        self.wait(lambda: wanted <= {n["node_id"] for n in api.nodes()}, f"nodes {wanted}")

    def daemon(self, node_id: str) -> DaemonProc:
        """The daemon of ``node_id``."""
        for daemon in self.daemons:
            if daemon.node_id == node_id:
                return daemon
        raise KeyError(node_id)

    def api(self, role: str = "admin") -> Api:
        """A REST client logged in as the user ``role`` (one per role, kept)."""
        if role not in self._apis:
            self._apis[role] = Api(self.manager.http_url, role)
        return self._apis[role]

    # ----------------------------------------------------------------- waiting

    def logs_tail(self) -> str:
        """The tails of the Manager's and every daemon's log."""
        parts = [f"--- manager ({self.manager.log})\n{_tail(self.manager.log)}"]
        parts += [f"--- {d.name} ({d.log})\n{_tail(d.log)}" for d in self.daemons]
        return "\n".join(parts)

    def wait(self, predicate: Callable[[], object], what: str, timeout: float = SAFETY_S) -> None:
        """Poll ``predicate`` every 0.1 s until it is true; fail naming ``what``.

        An :class:`ApiError` or an httpx transport error counts as "not yet" (the Manager
        may be restarting); the last one is shown if time runs out.
        """
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            try:
                if predicate():
                    return
            except (ApiError, httpx.TransportError) as error:
                last = error
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what} (last error: {last})\n{self.logs_tail()}"
                )
            time.sleep(_POLL_S)

    # ----------------------------------------------------------------- tear-down

    def leftovers(self) -> list[psutil.Process]:
        """Processes still working under the root or a work directory."""
        return processes_under(self.root, *self._works)

    def close(self) -> None:
        """Stop everything and leave nothing running (see the module docstring)."""
        try:
            for api in self._apis.values():
                api.close()
            self._apis.clear()
            _stop_all([d.proc for d in self.daemons if d.proc is not None], GRACE_S)
            if hasattr(self, "manager") and self.manager.proc is not None:
                self.manager.stop()
        finally:
            for _ in range(3):  # a dying shell may have started one more child
                left = self.leftovers()
                if not left:
                    break
                kill_all(p.pid for p in left)
                psutil.wait_procs(left, timeout=10)
            for work in self._works:
                shutil.rmtree(work, ignore_errors=True)

    def __enter__(self) -> Fleet:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _check_created(process: subprocess.Popen[str]) -> None:
    out: IO[str] | None = process.stdout
    text = out.read() if out is not None else ""
    if out is not None:
        out.close()
    code = process.wait(timeout=SAFETY_S)
    assert code == 0, f"create-user failed ({code}): {text}"
