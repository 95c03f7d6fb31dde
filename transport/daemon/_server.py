"""The daemon's gRPC server: where it listens, with which credentials, and for how long.

Theory of operation
-------------------
The services (:mod:`transport.daemon._service`, :mod:`transport.daemon._streams`) are
served on up to two listeners, each by its own grpc.aio server so that one failing to
bind never takes the other down:

* **TCP** at ``daemon.grpc_host:daemon.grpc_port`` (the original's 9091; 0 disables it).
  With ``daemon.tls`` every client must present a certificate signed by ``ca_file``
  (mutual TLS); without it the configuration only allows a loopback address unless
  ``grpc_allow_insecure`` (see :mod:`transport.daemon._config`). A port that cannot be
  bound (in use, an address this host does not have) does not stop the daemon: its
  agents stay supervised, the error is logged and binding is retried with a growing
  delay (:data:`TCP_RETRY_S`).
* **The control socket**, a Unix socket for the ``hostvisor`` command line on the host,
  without TLS: ``{work_dir}/control/hostvisor.sock`` in a directory only the daemon's
  user may enter (0700), the socket itself 0600. When that path is longer than a Unix
  socket path may be (107 bytes), a private directory under ``/tmp`` named after a hash
  of the work directory is used instead (:func:`control_socket_path`; the command line
  computes the same path from the same configuration).

Both run inside one trio-asyncio loop (:func:`transport.open_grpc_loop`) that lives as
long as :meth:`GrpcServer.run`; cancelling it stops both servers (unary calls in flight
get :data:`GRACE_S` to finish; streams end at once with ``UNAVAILABLE``).

Importing this module imports grpc (about 11 MiB); the daemon imports it only when
``daemon.grpc_enabled``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, NoReturn

import trio

from supervisor import ConfigError, ConfigIssue
from transport import (
    Listener,
    ListenError,
    Route,
    ServerTls,
    open_grpc_loop,
    serve_grpc,
)

from ._config import DaemonConfig, DaemonSpec, TlsSpec

if TYPE_CHECKING:
    from supervisor import Supervisor

    from ._updates import DaemonUpdates

__all__ = [
    "CONTROL_SOCKET_NAME",
    "GRACE_S",
    "SERVER_OPTIONS",
    "TCP_RETRY_S",
    "GrpcServer",
    "build_server",
    "control_socket_path",
    "load_server_tls",
    "tcp_address",
]

logger = logging.getLogger("hostvisor.grpc")

CONTROL_SOCKET_NAME = "hostvisor.sock"
"""The control socket's file name."""
SUN_PATH_MAX = 107
"""The longest Unix socket path (sizeof(sun_path) minus the terminating NUL)."""
GRACE_S = 2.0
"""How long unary calls in flight may finish when the daemon stops."""
TCP_RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
"""Delays between attempts to bind the TCP listener after a failure (the last repeats)."""
SERVER_OPTIONS: tuple[tuple[str, int | str], ...] = (
    # The original daemon pings every 30 s; a Manager may ping every 10 s while idle.
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # A client cannot open an unbounded number of log or state streams on one connection.
    ("grpc.max_concurrent_streams", 64),
    ("grpc.max_receive_message_length", 1 << 20),  # an UpdateRequest envelope is < 64 KiB
)
"""grpc options of both servers."""


def control_socket_path(work_dir: str) -> str:
    """Where the daemon with this work directory puts its control socket.

    ``{work_dir}/control/hostvisor.sock`` when that fits in a Unix socket address;
    otherwise ``/tmp/hostvisor-{euid}-{hash of work_dir}/hostvisor.sock``. Only ``/tmp``
    (never ``$TMPDIR`` or ``$XDG_RUNTIME_DIR``): the command line, run from another
    environment, must find the same path.

    Args:
        work_dir: The daemon's work directory (``daemon.work_dir``).

    Returns:
        The socket's path.
    """
    work_dir = os.path.abspath(work_dir)
    preferred = os.path.join(work_dir, "control", CONTROL_SOCKET_NAME)
    if len(os.fsencode(preferred)) <= SUN_PATH_MAX:
        return preferred
    digest = hashlib.sha256(os.fsencode(work_dir)).hexdigest()[:16]
    return os.path.join("/tmp", f"hostvisor-{os.geteuid()}-{digest}", CONTROL_SOCKET_NAME)


def _private_dir(directory: str, *, ours: bool) -> None:
    """Create ``directory`` (0700) or check that it is ours and private.

    Args:
        directory: The control socket's directory.
        ours: It lies in the daemon's work directory: a looser mode is tightened. Under
            ``/tmp`` it is refused instead: there a directory we did not make is someone
            else's trap.

    Raises:
        OSError: It cannot be created, or it is a symlink, not a directory, someone
            else's, or (under ``/tmp``) open to group or others.
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise OSError(f"{directory} is not a directory (symlinks are refused)")
    if info.st_uid != os.geteuid():
        raise OSError(f"{directory} belongs to uid {info.st_uid}, not {os.geteuid()}")
    if info.st_mode & 0o077:
        if ours:
            os.chmod(directory, 0o700)
            return
        mode = stat.S_IMODE(info.st_mode)
        raise OSError(f"{directory} is open to group or others (mode {mode:04o}); expected 0700")


def load_server_tls(spec: TlsSpec) -> ServerTls | None:
    """Read the listener's certificate, key and client CA (``daemon.tls``).

    Args:
        spec: The validated ``daemon.tls`` block.

    Returns:
        The server's TLS settings, or None when TLS is not configured.

    Raises:
        ConfigError: A file cannot be read (issues at ``daemon.tls.cert_file`` etc.).
    """
    if not spec.enabled:
        return None
    data: dict[str, bytes] = {}
    issues: list[ConfigIssue] = []
    for key in ("cert_file", "key_file", "ca_file"):
        path = getattr(spec, key)
        try:
            with open(path, "rb") as file:
                data[key] = file.read()
        except OSError as exc:
            issues.append(
                ConfigIssue(f"daemon.tls.{key}", f"cannot be read: {path!r} ({exc.strerror})")
            )
    if issues:
        raise ConfigError(issues)
    return ServerTls(data["cert_file"], data["key_file"], data["ca_file"])


def tcp_address(host: str, port: int) -> str:
    """``host:port`` as grpc reads it (IPv6 literals in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build_server(
    supervisor: Supervisor,
    config: Callable[[], DaemonConfig],
    updates: DaemonUpdates | None,
) -> GrpcServer:
    """The daemon's gRPC server: both services over its supervisor, config and updates.

    Args:
        supervisor: The daemon's supervisor.
        config: The daemon's current configuration (it changes on SIGHUP; the listeners
            keep the settings they started with).
        updates: The update service, or None.

    Returns:
        The server, to be run with :meth:`GrpcServer.run`.

    Raises:
        ConfigError: A TLS file cannot be read.
    """
    from ._service import Backend, DaemonServiceHandlers
    from ._streams import HostvisorHandlers

    desk = None
    if updates is not None:
        from ._update_rpc import UpdateDesk

        desk = UpdateDesk(updates)
    backend = Backend(supervisor, config, desk)
    routes = DaemonServiceHandlers(backend).routes() + HostvisorHandlers(backend).routes()
    spec = config().daemon
    return GrpcServer(spec, routes, load_server_tls(spec.tls))


@dataclass
class GrpcServer:
    """The daemon's gRPC listeners, serving ``routes``.

    Args:
        spec: The ``daemon`` section (host, port, control socket).
        routes: What to serve.
        tls: The TCP listener's TLS (from :func:`load_server_tls`), or None.
        open_loop: Open the grpc loop in :meth:`run`; False when the caller runs it inside
            an ``open_grpc_loop()`` it shares (one grpc loop per process: two trio-asyncio
            loops fight over grpc's poller).
    """

    spec: DaemonSpec
    routes: Sequence[Route]
    tls: ServerTls | None = None
    open_loop: bool = True
    addresses: dict[str, str] = field(default_factory=dict)
    """What is being served now: ``tcp`` and ``unix`` -> the bound address."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; started once each listener is bound or found unbindable.

        Never raises for an address that cannot be bound (logged; TCP is retried).
        """
        loop = open_grpc_loop() if self.open_loop else contextlib.nullcontext()
        async with loop, trio.open_nursery() as nursery:
            if self.spec.control_socket:
                await nursery.start(self._serve_control_socket)
            if self.spec.grpc_port:
                await nursery.start(self._serve_tcp)
            task_status.started()
            await trio.sleep_forever()

    async def _serve_control_socket(self, *, task_status: trio.TaskStatus[None]) -> None:
        path = control_socket_path(self.spec.work_dir)

        def bound(addresses: tuple[str, ...]) -> None:
            os.chmod(path, 0o600)  # in a 0700 directory: private from the start anyway
            self.addresses["unix"] = addresses[0]
            logger.info("gRPC: serving the command line on %s", addresses[0])
            task_status.started()

        try:
            directory = os.path.dirname(path)
            ours = directory == os.path.join(self.spec.work_dir, "control")  # absolute
            await trio.to_thread.run_sync(partial(_private_dir, directory, ours=ours))
            await self._serve(Listener(f"unix:{path}"), bound)
        except (OSError, ListenError) as exc:
            logger.error("no control socket (the command line cannot reach the daemon): %s", exc)
            task_status.started()
        finally:
            self.addresses.pop("unix", None)

    async def _serve_tcp(self, *, task_status: trio.TaskStatus[None]) -> None:
        listener = Listener(tcp_address(self.spec.grpc_host, self.spec.grpc_port), self.tls)
        started = False

        def bound(addresses: tuple[str, ...]) -> None:
            nonlocal started
            self.addresses["tcp"] = addresses[0]
            security = "mutual TLS" if self.tls is not None else "no TLS"
            logger.info("gRPC: serving on %s (%s)", addresses[0], security)
            if not started:
                started = True
                task_status.started()

        attempt = 0
        while True:
            try:
                await self._serve(listener, bound)
            except ListenError as exc:
                delay = TCP_RETRY_S[min(attempt, len(TCP_RETRY_S) - 1)]
                attempt += 1
                logger.error(
                    "gRPC: %s; the daemon goes on without it and tries again in %g s", exc, delay
                )
                if not started:
                    started = True
                    task_status.started()
                await trio.sleep(delay)
            finally:
                self.addresses.pop("tcp", None)

    async def _serve(
        self, listener: Listener, bound: Callable[[tuple[str, ...]], None]
    ) -> NoReturn:
        """``serve_grpc`` in this task, so that a ListenError reaches the caller as itself."""
        await serve_grpc(
            self.routes,
            [listener],
            options=SERVER_OPTIONS,
            grace_s=GRACE_S,
            task_status=_OnStarted(bound),
        )


class _OnStarted:
    """A ``task_status`` that calls back instead of handing the value to a nursery."""

    def __init__(self, callback: Callable[[tuple[str, ...]], None]) -> None:
        self._callback = callback

    def started(self, value: tuple[str, ...] | None = None) -> None:
        self._callback(value or ())
