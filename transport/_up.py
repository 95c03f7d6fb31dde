"""``hostvisor up``: the whole system on one machine, for a first look.

Theory of operation
-------------------
:func:`up` brings up, under one directory (``./.hostvisor-up`` by default):

1. ``manager.yaml`` and ``daemon.yaml``, written at every start: the Manager on its
   embedded SQLite database (``manager/``), gRPC and HTTP on loopback; the bundled example
   agents (``transport/daemon/examples/daemon.yaml``) with a ``manager:`` section pointing
   at it, a ``collectors:`` section, and intervals short enough for a demonstration.
2. The Manager (``hostvisor-manager run``), ready once ``GET /health`` answers (it has
   created or migrated its database by then).
3. The daemon (``hostvisor run``), and meanwhile the admin user ``admin`` with a new random
   password, through the Manager's own command line (``create-user``, or
   ``reset-password`` when the database has it already; the password on standard input).
   The daemon is ready once its node is online through the REST API, as the admin sees
   it. Each child's standard output and error go to ``manager.log`` or ``daemon.log``.
4. The console's URL and the password, printed once; then it waits.

SIGINT (Ctrl-C) or SIGTERM stops the daemon first (``stop_agents_on_exit`` stops its
agents), then the Manager, each with SIGTERM, and SIGKILL after a grace period; ``up``
exits 0. If either child ends on its own, ``up`` says so with the end of its log, stops the
other and exits 1. Every wait is on a real condition (an answer, an exit) and bounded.

**Ownership** (:mod:`transport._owned`). The children run in their own process group (a
Ctrl-C on the terminal reaches ``up`` alone, which stops them in order) and get SIGTERM
when ``up`` ends, however it ends (``PR_SET_PDEATHSIG``, even after a SIGKILL); the daemon
treats it as any other SIGTERM: it stops its agents and exits. ``up`` is also a child
subreaper: if the daemon is killed, its agents become ``up``'s children, and ``up`` stops
them before it exits.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import h11
import trio
import yaml

from supervisor import set_child_subreaper

from ._owned import Child, spawn, stop_orphans

__all__ = ["ADMIN_USER", "UpError", "UpSettings", "up"]

ADMIN_USER = "admin"
"""The user :func:`up` creates (or whose password it resets)."""

READY_TIMEOUT_S = 120.0
"""How long the Manager may take to answer, and the node to be online, before ``up`` gives
up (generous: a first start migrates a new database on a possibly busy machine)."""

POLL_S = 0.1
"""Between two readiness checks."""


class UpError(Exception):
    """``up`` cannot go on; the message says why, for the user."""


@dataclass(frozen=True, slots=True)
class UpSettings:
    """What ``hostvisor up`` was asked for.

    Attributes:
        directory: Where everything goes (configurations, data, logs).
        http_port: The Manager's HTTP port (the console and the REST API).
        grpc_port: The Manager's gRPC port (for daemons).
        daemon_port: The daemon's gRPC port (for the Manager).
        node_id: The daemon's node id; empty: this host's name.
        out: Where the banner and messages go (None: standard output).
    """

    directory: Path
    http_port: int = 8080
    grpc_port: int = 9090
    daemon_port: int = 9091
    node_id: str = ""
    out: TextIO | None = None


@dataclass(frozen=True, slots=True)
class _Layout:
    """The files and directories of one ``up`` directory."""

    root: Path

    @property
    def manager_config(self) -> Path:
        return self.root / "manager.yaml"

    @property
    def daemon_config(self) -> Path:
        return self.root / "daemon.yaml"

    @property
    def manager_data(self) -> Path:
        return self.root / "manager"

    @property
    def daemon_work(self) -> Path:
        return self.root / "daemon"

    @property
    def manager_log(self) -> Path:
        return self.root / "manager.log"

    @property
    def daemon_log(self) -> Path:
        return self.root / "daemon.log"


# --------------------------------------------------------------------------- configurations


def manager_document(layout: _Layout, settings: UpSettings) -> dict[str, Any]:
    """The Manager's configuration: SQLite in the directory, both listeners on loopback."""
    return {
        "data_dir": str(layout.manager_data),
        "server": {"host": "127.0.0.1", "port": settings.http_port},
        "grpc": {"host": "127.0.0.1", "port": settings.grpc_port},
        "daemon_client": {"port": settings.daemon_port},
        "log": {"level": "info"},
    }


def daemon_document(
    example: dict[str, Any], layout: _Layout, settings: UpSettings, node_id: str
) -> dict[str, Any]:
    """The bundled example, reporting to the Manager at demonstration intervals."""
    document = dict(example)
    daemon = dict(document.get("daemon") or {})
    daemon.update(
        id=node_id,
        work_dir=str(layout.daemon_work),
        grpc_host="127.0.0.1",
        grpc_port=settings.daemon_port,
        stop_agents_on_exit=True,  # up leaves nothing running
    )
    document["daemon"] = daemon
    document["manager"] = {
        "address": f"127.0.0.1:{settings.grpc_port}",
        "heartbeat_interval": "10s",
        "sync_interval": "10s",
        "reconnect_interval": "2s",
    }
    every = {"enabled": True, "interval": "10s"}
    document["collectors"] = {name: dict(every) for name in ("cpu", "memory", "disk", "network")}
    return document


def _write_yaml(path: Path, document: dict[str, Any], origin: str = "") -> None:
    header = (
        f"# Written by `hostvisor up` at every start{origin}; edits here are lost.\n"
        "# Copy it elsewhere to run the same thing by hand.\n"
    )
    path.write_text(header + yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def _example() -> tuple[str, dict[str, Any]]:
    from transport.daemon._cli import example_config_path

    path = example_config_path()
    with open(path, encoding="utf-8") as f:
        document = yaml.safe_load(f)
    if not isinstance(document, dict):
        raise UpError(f"{path}: the bundled example is not a mapping")
    return path, document


# --------------------------------------------------------------------------- ports


@dataclass(frozen=True, slots=True)
class _Port:
    number: int
    what: str
    option: str


def busy_ports(ports: Sequence[_Port], host: str = "127.0.0.1") -> list[str]:
    """A message for each port that cannot be bound on ``host`` now (as its server would)."""
    problems = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port.number))
            except OSError as exc:
                reason = "in use" if exc.errno == errno.EADDRINUSE else os.strerror(exc.errno or 0)
                problems.append(
                    f"port {port.number} ({port.what}) on {host}: {reason}; pass"
                    f" {port.option} PORT to use another one"
                )
    return problems


def _tail(path: Path, lines: int = 15) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


# --------------------------------------------------------------------------- HTTP


async def http_json(
    port: int, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    """One HTTP/1.1 request to 127.0.0.1:``port``; the status and the JSON answer (or None).

    Raises:
        OSError: The connection failed.
        trio.BrokenResourceError: The connection broke.
        h11.ProtocolError: The answer is not HTTP.
    """
    payload = b"" if body is None else json.dumps(body).encode()
    headers = [
        ("Host", f"127.0.0.1:{port}"),
        ("Connection", "close"),
        ("Content-Length", str(len(payload))),
    ]
    if body is not None:
        headers.append(("Content-Type", "application/json"))
    if token is not None:
        headers.append(("Authorization", f"Bearer {token}"))
    connection = h11.Connection(h11.CLIENT)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        request = h11.Request(method=method, target=path, headers=headers)
        await stream.send_all(
            connection.send(request) + connection.send(h11.Data(data=payload))
            + connection.send(h11.EndOfMessage())
        )  # fmt: skip
        status, chunks = 0, []
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    try:
        return status, json.loads(b"".join(chunks))
    except ValueError:
        return status, None


_HTTP_ERRORS = (OSError, h11.ProtocolError, trio.BrokenResourceError)
"""What :func:`http_json` raises when the server is not (yet, or no longer) answering."""


# --------------------------------------------------------------------------- the run


class _PartEnded(Exception):
    def __init__(self, child: Child) -> None:
        super().__init__(child.name)
        self.child = child


@dataclass(eq=False)
class _Up:
    settings: UpSettings
    layout: _Layout
    node_id: str
    write: Callable[[str], None]
    children: list[Child] = field(default_factory=list)
    nursery: trio.Nursery | None = None
    any_ended: trio.Event = field(default_factory=trio.Event)

    def start(self, name: str, argv: Sequence[str], log: Path, stdin: bytes | None = None) -> Child:
        """Spawn a child and watch it; one that is a part of the system (not a command,
        ``stdin`` None) sets :attr:`any_ended` when it ends."""
        assert self.nursery is not None
        try:
            pid, pidfd = spawn(argv, log, stdin)
        except OSError as exc:
            raise UpError(f"cannot start {name}: {exc}") from exc
        child = Child(name, pid, log, pidfd)
        self.children.append(child)
        self.nursery.start_soon(self._watch, child, stdin is None)
        return child

    async def _watch(self, child: Child, part: bool) -> None:
        await child.watch()
        if part:
            self.any_ended.set()

    async def stop_all(self) -> None:
        """Stop the children, the newest first (the daemon before the Manager), then any
        process left behind by a daemon that did not stop its agents (it was killed)."""
        for child in reversed(self.children):
            await child.stop()
        left = await stop_orphans()
        if left:
            self.write(f"stopped {left} process(es) the daemon had left running")

    def check_running(self, *children: Child) -> None:
        for child in children:
            if child.status is not None:
                raise _PartEnded(child)

    async def until(self, what: str, ready: Callable[[], Any], watched: Child) -> Any:
        """Poll ``ready`` (an async function returning a result or None) while ``watched``
        runs; its result."""
        with trio.move_on_after(READY_TIMEOUT_S):
            while True:
                self.check_running(watched)
                result = await ready()
                if result is not None:
                    return result
                await trio.sleep(POLL_S)
        raise UpError(f"{what} within {READY_TIMEOUT_S:g} s (see {watched.log})")

    # ---- steps

    async def admin_password(self) -> str:
        """Create the admin user, or reset its password; the new password."""
        password = secrets.token_urlsafe(12)
        config = ["--config", str(self.layout.manager_config)]
        create = ["-m", "transport.manager", "create-user", ADMIN_USER, "--role", "admin"]
        reset = ["-m", "transport.manager", "reset-password", ADMIN_USER]
        line = (password + "\n").encode()
        for argv in (create, reset):
            child = self.start("hostvisor-manager", [*argv, *config], self.layout.manager_log, line)
            await child.ended.wait()
            self.children.remove(child)
            if child.status == 0:
                return password
            if child.status != _MANAGER_USER_EXISTS:
                break
        raise UpError(
            f"`hostvisor-manager {argv[2]} {ADMIN_USER}` {child.describe_end()}; the end of"
            f" {child.log}:\n{_tail(child.log)}"
        )

    async def health(self) -> bool | None:
        try:
            status, _ = await http_json(self.settings.http_port, "GET", "/health")
        except _HTTP_ERRORS:
            return None
        return True if status == 200 else None

    async def login(self, password: str) -> str:
        body = {"username": ADMIN_USER, "password": password}
        status, answer = await http_json(
            self.settings.http_port, "POST", "/api/v1/auth/login", body
        )
        try:
            return str(answer["data"]["token"])
        except (TypeError, KeyError):
            raise UpError(
                f"the Manager refused the admin's login: HTTP {status} {answer}"
            ) from None

    async def node_online(self, token: str) -> dict[str, Any] | None:
        path = f"/api/v1/nodes/{self.node_id}"
        try:
            status, answer = await http_json(self.settings.http_port, "GET", path, token=token)
        except _HTTP_ERRORS:
            return None
        data = answer.get("data") if status == 200 and isinstance(answer, dict) else None
        node = data.get("node") if isinstance(data, dict) else None
        return node if isinstance(node, dict) and node.get("status") == "online" else None

    async def sequence(self) -> None:
        """Bring everything up, print the banner, and wait for a part to end."""
        s, layout = self.settings, self.layout
        manager = self.start(
            "the Manager",
            ["-m", "transport.manager", "run", "--config", str(layout.manager_config)],
            layout.manager_log,
        )
        await self.until("the Manager did not answer", self.health, manager)
        # The user command opens the database the Manager has migrated by now, while the
        # daemon starts.
        daemon = self.start(
            "the daemon",
            ["-m", "transport.daemon", "run", "--config", str(layout.daemon_config)],
            layout.daemon_log,
        )
        password = await self.admin_password()
        self.check_running(manager, daemon)
        token = await self.login(password)
        await self.until(
            f"node {self.node_id} did not come online", lambda: self.node_online(token), daemon
        )
        self.check_running(manager, daemon)
        self.write(
            "\n".join(
                [
                    "",
                    "hostvisor is up.",
                    "",
                    f"  Console   http://127.0.0.1:{s.http_port}/",
                    f"            user {ADMIN_USER}, password {password}",
                    "            (shown once: `hostvisor up` sets a new one at every start)",
                    "",
                    f"  Manager   pid {manager.pid}: HTTP 127.0.0.1:{s.http_port} (console,"
                    f" REST API), gRPC 127.0.0.1:{s.grpc_port} (daemons)",
                    f"            data {layout.manager_data}, log {layout.manager_log}",
                    f"  Daemon    pid {daemon.pid}: node {self.node_id}, the example agents,"
                    f" gRPC 127.0.0.1:{s.daemon_port}",
                    f"            work dir {layout.daemon_work}, log {layout.daemon_log}",
                    f"            try: hostvisor status --config {layout.daemon_config}",
                    "",
                    "Ctrl-C stops everything.",
                    "",
                ]
            )
        )
        await self.any_ended.wait()
        self.check_running(manager, daemon)


_MANAGER_USER_EXISTS = 9  # transport.manager._cli.EXIT_EXISTS (not imported: it loads SQLAlchemy)


async def up(settings: UpSettings) -> int:
    """Run the whole system until SIGINT or SIGTERM (0), or until a part fails (1).

    Args:
        settings: What to run and where.

    Returns:
        The exit code: 0 after a signal, 1 when a part could not start or ended.
    """
    out = settings.out if settings.out is not None else sys.stdout

    def write(text: str) -> None:
        print(text, file=out, flush=True)

    def fail(text: str) -> int:
        print(f"hostvisor up: {text}", file=sys.stderr, flush=True)
        return 1

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            run = _prepare(settings, write)
            set_child_subreaper()
        except UpError as exc:
            return fail(str(exc))
        stopped_by: list[int] = []
        problem: list[str] = []
        async with trio.open_nursery() as nursery:
            run.nursery = nursery
            with trio.CancelScope() as main:

                async def on_signal() -> None:
                    async for number in signals:
                        stopped_by.append(number)
                        main.cancel()
                        return

                nursery.start_soon(on_signal)
                try:
                    await run.sequence()
                except _PartEnded as exc:
                    child = exc.child
                    problem.append(
                        f"{child.name} {child.describe_end()}; the end of {child.log}:\n"
                        f"{_tail(child.log)}"
                    )
                except UpError as exc:
                    problem.append(str(exc))
                finally:
                    if stopped_by:
                        write(f"\n{signal.Signals(stopped_by[0]).name}: stopping...")
                    with trio.CancelScope(shield=True):
                        await run.stop_all()
            nursery.cancel_scope.cancel()
        if problem:
            return fail(problem[0] + "\n(everything else was stopped)")
        for child in reversed(run.children):
            write(f"{child.name} {child.describe_end()}")
        return 0


def _prepare(settings: UpSettings, write: Callable[[str], None]) -> _Up:
    """Check the ports and write the configurations; the run, not started."""
    ports = [
        _Port(settings.http_port, "the Manager's HTTP: console and REST API", "--http-port"),
        _Port(settings.grpc_port, "the Manager's gRPC, for daemons", "--grpc-port"),
        _Port(settings.daemon_port, "the daemon's gRPC, for the Manager", "--daemon-port"),
    ]
    numbers = [port.number for port in ports]
    if len(set(numbers)) < len(numbers):
        raise UpError(f"the ports must differ: {', '.join(map(str, numbers))}")
    busy = busy_ports(ports)
    if busy:
        raise UpError("\n  ".join(["cannot start:", *busy]))
    layout = _Layout(settings.directory.absolute())
    node_id = settings.node_id or socket.gethostname() or "localhost"
    try:
        for directory in (layout.root, layout.manager_data, layout.daemon_work):
            directory.mkdir(parents=True, exist_ok=True)
        source, example = _example()
        _write_yaml(layout.manager_config, manager_document(layout, settings))
        document = daemon_document(example, layout, settings, node_id)
        _write_yaml(layout.daemon_config, document, f", from {source}")
    except OSError as exc:
        raise UpError(f"{layout.root}: {exc}") from exc
    write(f"Starting the Manager and a daemon in {layout.root} ...")
    return _Up(settings, layout, node_id, write)
