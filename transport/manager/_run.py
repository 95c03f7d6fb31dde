"""The composition root of the Manager: every part started, served, and stopped cleanly.

Theory of operation. :func:`serve_manager` reads what may still fail on the configuration
(the JWT secret, the TLS files) before it opens anything, then opens the store (migrating
it, in a worker thread) and, inside one grpc loop and one nursery, starts each part with
``nursery.start``, so that a part that cannot start (a port in use, a database that went
away) raises out of it and the parts already started are cancelled:

1. the :class:`~._events.EventHub`,
2. the ingest service (group commit of every gRPC write, in its writer thread),
3. the gRPC server (``ManagerService`` and ``DaemonService.SyncAgentStates``), with the
   server options below, on an asyncio loop in its own thread
   (:func:`transport._grpc_thread.serve_grpc_in_thread`: one Python call per request,
   no Trio task, which is what lets one process carry a large fleet); with
   ``grpc.workers`` above 1, 2 and 3 run in that many worker processes instead, which
   share the port (:class:`~._workers.WorkerPool`, started once the migrations ran),
4. the daemon client pool,
5. the HTTP server (the REST API, ``/health``, ``/metrics``),
6. the jobs (offline detection, retention).

One :class:`~._events.EventHub` (its task started before the gRPC server) is shared by
the gRPC service (a worker's events are forwarded to it), the REST routes and the jobs:
the console's event stream reads it.

It prints one line per listener and one for the database, on standard output, once each
part is up (``gRPC listening on 0.0.0.0:9090``, ``HTTP listening on
http://0.0.0.0:8080``), and then serves until cancelled. Cancelling stops the parts in
the reverse order of their start: the nursery cancels them together, each closes its own
(the HTTP server lets requests finish, the gRPC server gives calls a grace period), and the
store is closed last, once nothing uses it. :func:`run_manager` adds the signals: SIGTERM
or SIGINT cancel :func:`serve_manager` and it returns normally (exit status 0).

gRPC keepalive: the original daemon pings every 30 s without calls in flight, and ours at
most every 20 s; a server answers pings that come more often than it permits with GOAWAY
(``ENHANCE_YOUR_CALM``), so the server permits pings without calls, every 10 s or slower.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from logging.handlers import RotatingFileHandler
from typing import TYPE_CHECKING, TextIO

import trio

from ._config import ManagerConfig, client_tls, jwt_secret, server_tls
from ._jobs import Jobs

if TYPE_CHECKING:
    from ._events import EventHub
    from ._http._auth import AuthSettings
    from ._ingest import Ingest
    from ._store import Store

__all__ = [
    "GRPC_SERVER_OPTIONS",
    "Listening",
    "auth_settings",
    "open_store",
    "run_manager",
    "serve_manager",
    "setup_logging",
]

logger = logging.getLogger("hostvisor.manager")

GRPC_SERVER_OPTIONS: tuple[tuple[str, int | str], ...] = (
    # Daemons ping idle connections (the original every 30 s, ours at 20 s or slower).
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.max_receive_message_length", 4 << 20),
)
"""grpc options of the Manager's gRPC server."""
GRPC_GRACE_S = 2.0
"""How long gRPC calls in flight may finish when the Manager stops."""


@dataclass(frozen=True, slots=True)
class Listening:
    """Where a started Manager listens.

    Attributes:
        grpc: The gRPC server's bound address (``host:port``).
        http: The HTTP server's URL (``http://host:port``).
        database: The database URL, password hidden.
    """

    grpc: str
    http: str
    database: str


# --------------------------------------------------------------------------- pieces


def open_store(config: ManagerConfig, *, migrate: bool = True) -> Store:
    """Open (and migrate) the configured database; blocking.

    ``database.log_level: info`` logs every statement (SQLAlchemy's engine logger).

    The SQLite file's directory is created (mode 0700) if needed.

    Args:
        config: The configuration.
        migrate: Run the migrations (a gRPC worker does not: the main process did).

    Returns:
        The store; close it.

    Raises:
        StoreError: The database cannot be reached, or a migration failed.
    """
    from ._store import Store

    levels = {"silent": logging.CRITICAL + 1, "error": logging.ERROR, "warn": logging.WARNING}
    level = levels.get(config.database.log_level, logging.INFO)
    logging.getLogger("sqlalchemy.engine").setLevel(level)
    if config.database.driver == "sqlite":  # the file's directory: data_dir by default
        path = config.database.url.removeprefix("sqlite:///").partition("?")[0]
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    # The original's pool settings: idle connections kept, the most open at once, and
    # their lifetime.
    database = config.database
    pool_size = max(1, database.max_idle_conns)
    return Store.open(
        database.url,
        migrate=migrate,
        pool_size=pool_size,
        max_overflow=max(0, database.max_open_conns - pool_size),
        recycle_s=database.conn_max_lifetime_s or None,
    )


def auth_settings(config: ManagerConfig) -> AuthSettings:
    """The REST API's authentication settings (``jwt.*``, ``auth.*``).

    Raises:
        ManagerConfigError: The generated JWT secret's file is unusable (see
            :func:`~transport.manager._config.jwt_secret`).
    """
    from ._http._auth import AuthSettings

    return AuthSettings(
        jwt_secret=jwt_secret(config),
        expire_s=config.jwt.expire_time_s,
        issuer=config.jwt.issuer,
        allow_register=config.auth.allow_register,
    )


def ingest_reader(ingest: Ingest) -> Callable[[], dict[str, float]]:
    """The ingest's counters for ``/metrics`` (``..._total`` counters; ``queued*`` gauges)."""

    def read() -> dict[str, float]:
        stats = ingest.statistics()
        figures: dict[str, float] = {
            f"calls_{method.lower()}_total": count for method, count in stats.calls.items()
        }
        figures.update(
            (f"refused_{status.lower()}_total", count) for status, count in stats.refused.items()
        )
        for name in (
            "registrations",
            "heartbeats",
            "nodes_created",
            "metric_rows",
            "metric_duplicates",
            "agent_states",
            "batches",
            "batch_items",
            "batch_failures",
            "write_seconds",
        ):
            figures[f"{name}_total"] = float(getattr(stats, name))
        figures["queued"] = float(stats.queued)
        figures["queued_weight"] = float(stats.queued_weight)
        return figures

    return read


def jobs_of(config: ManagerConfig, store: Store, events: EventHub | None = None) -> Jobs:
    """The offline detection and retention jobs of the configuration (nodes marked
    offline are published to ``events``)."""
    return Jobs(
        store,
        offline_after_s=config.node.offline_duration_minutes * 60,
        offline_schedule=config.node.offline_check_schedule,
        retention_s=config.metrics.retention_days * 86400.0,
        cleanup_schedule=config.metrics.cleanup_schedule,
        events=events,
    )


def _gzip_rotator(source: str, destination: str) -> None:
    with open(source, "rb") as plain, gzip.open(destination, "wb") as packed:
        shutil.copyfileobj(plain, packed)
    os.unlink(source)


class _LogFile(RotatingFileHandler):
    """``log.output_path``: rotated at ``max_size``, ``max_backups`` kept, optionally
    gzipped, backups older than ``max_age`` days deleted at each rotation."""

    def __init__(self, path: str, *, max_bytes: int, backups: int, max_age_s: float, gz: bool):
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._max_age_s = max_age_s
        if gz:
            self.namer = lambda name: f"{name}.gz"
            self.rotator = _gzip_rotator

    def doRollover(self) -> None:
        """Rotate, then delete backups older than ``max_age``."""
        super().doRollover()
        if not self._max_age_s:
            return
        directory, base = os.path.split(self.baseFilename)
        cutoff = time.time() - self._max_age_s
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if name.startswith(f"{base}.") and os.path.getmtime(path) < cutoff:
                with contextlib.suppress(OSError):
                    os.unlink(path)


def setup_logging(config: ManagerConfig) -> None:
    """Log to standard error, and to ``log.output_path`` when set.

    ``server.mode: debug`` logs at debug level whatever ``log.level`` says.

    Args:
        config: The configuration.
    """
    level = "debug" if config.server.mode == "debug" else config.log.level
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    spec = config.log
    if spec.output_path is not None:
        os.makedirs(os.path.dirname(spec.output_path) or ".", exist_ok=True)
        handlers.append(
            _LogFile(
                spec.output_path,
                max_bytes=spec.max_size_mb * 1024 * 1024,
                backups=spec.max_backups,
                max_age_s=spec.max_age_days * 86400.0,
                gz=spec.compress,
            )
        )
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    # Alembic announces each of its plugins at INFO on every start; its migrations stay.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


# --------------------------------------------------------------------------- serving


def _check_bindable(config: ManagerConfig) -> None:
    """Fail early, and without leaking a socket, when the HTTP address cannot be bound.

    Hypercorn leaves the socket of a failed bind open (a ResourceWarning later); binding
    once here, as hypercorn will (``SO_REUSEADDR``), finds a port in use before it does.

    Raises:
        ListenError: The address cannot be bound.
    """
    from transport import ListenError

    host, port = config.server.host, config.server.port
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            where = config.server.address
            raise ListenError(f"cannot listen on {where!r} (HTTP): {exc.strerror}") from exc


async def serve_manager(
    config: ManagerConfig,
    *,
    out: TextIO | None = None,
    open_loop: bool = True,
    task_status: trio.TaskStatus[Listening] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run every part of the Manager until cancelled (see the module doc).

    Args:
        config: The configuration.
        out: Where the "listening" lines go (default: standard output).
        open_loop: Open the grpc loop (:func:`transport.open_grpc_loop`); False when the
            caller runs inside one already (one per process: a program that also makes
            gRPC calls of its own opens it around both).
        task_status: Started with the bound addresses once every part is up.

    Raises:
        ManagerConfigError: A TLS file or the JWT secret file is unusable.
        StoreError: The database cannot be opened or migrated.
        ListenError: The gRPC or the HTTP address cannot be bound.
    """
    from transport import Listener, ListenError, open_grpc_loop
    from transport._grpc_thread import serve_grpc_in_thread

    from ._events import EventHub
    from ._http._app import build_app, serve_http
    from ._ingest import Ingest, store_writer
    from ._pool import DaemonPool
    from ._service import manager_routes
    from ._workers import WorkerPool

    def say(line: str) -> None:
        print(line, file=out or sys.stdout, flush=True)

    _check_bindable(config)
    auth = auth_settings(config)
    grpc_tls = server_tls(config)
    pool_tls = client_tls(config)
    store = await trio.to_thread.run_sync(open_store, config)
    database = f"{config.database.driver} {config.database.display_url}"
    say(f"database {database}")
    try:
        loop = open_grpc_loop() if open_loop else contextlib.nullcontext()
        async with loop, trio.open_nursery() as nursery:
            events = EventHub()
            await nursery.start(events.run, store.list_agents)
            ingest_stats: Callable[[], dict[str, float]]
            if config.grpc.workers > 1:
                workers = WorkerPool(config, events=events)
                grpc_address = await nursery.start(workers.run)
                ingest_stats = workers.statistics
            else:
                ingest = Ingest(store_writer(store))
                await nursery.start(ingest.run)
                routes = manager_routes(
                    ingest, bind_node_identity=config.grpc.tls.bind_node_identity, events=events
                )
                listener = Listener(config.grpc.address, grpc_tls)
                serve = partial(
                    serve_grpc_in_thread,
                    routes,
                    [listener],
                    options=GRPC_SERVER_OPTIONS,
                    grace_s=GRPC_GRACE_S,
                )
                (grpc_address,) = await nursery.start(serve)
                ingest_stats = ingest_reader(ingest)
            say(f"gRPC listening on {grpc_address}{' (TLS)' if grpc_tls else ''}")
            pool = DaemonPool(
                pool_tls,
                max_channels=config.daemon_client.max_channels,
                timeout_s=config.daemon_client.timeout_s,
                operate_timeout_s=config.daemon_client.operate_timeout_s,
                default_port=config.daemon_client.port,
            )
            await nursery.start(pool.run)
            app = build_app(
                store,
                pool,
                auth,
                ingest_stats=ingest_stats,
                offline_after_s=config.node.offline_duration_minutes * 60,
                events=events,
                thresholds=config.alerts,
            )
            serve_api = partial(serve_http, app, config.server.host, config.server.port)
            try:
                binds = await nursery.start(serve_api)
            except* OSError as group:
                problem = group.exceptions[0]
                where = config.server.address
                raise ListenError(f"cannot listen on {where!r} (HTTP): {problem}") from problem
            say(f"HTTP listening on {binds[0]}")
            await nursery.start(jobs_of(config, store, events).run)
            logger.info("Manager started: gRPC %s, HTTP %s, %s", grpc_address, binds[0], database)
            task_status.started(Listening(grpc_address, binds[0], database))
    finally:
        store.close()


GIL_SWITCH_INTERVAL_S = 0.001
"""How long a thread holds the GIL while another waits for it (Python's default: 5 ms)."""


def tune_for_serving() -> None:
    """Settings of the interpreter for a process that serves the fleet; called by the
    programs (the Manager and its gRPC workers) once they serve, not by
    :func:`serve_manager`, which other programs and tests embed.

    * ``gc.freeze()`` after a collection takes what start-up allocated out of the cycle
      collector's sight. A full collection walks every container the process holds;
      after start-up that is mostly modules, classes and functions that live as long as
      the process, and at a fleet's rate of calls the walk (measured: 50-130 ms of CPU
      per full collection in a gRPC worker, several a minute) stalled every call in
      flight. Frozen, a full collection walks only what was allocated after (2-3 ms).
    * A GIL switch interval of :data:`GIL_SWITCH_INTERVAL_S`: the gRPC thread and the
      ingest's writer thread take turns, and a call is handed between them twice (the
      request to the writer, the answer back); with the default 5 ms each hand-over could
      wait that long behind the other thread's Python work.

    Both are among the changes that took p99 at 10,000 simulated nodes from 130-160 ms to
    57-75 ms (``benchmarks/README.md``).
    """
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


async def run_manager(config: ManagerConfig, *, out: TextIO | None = None) -> None:
    """Run the Manager until SIGTERM or SIGINT, then stop every part cleanly.

    This is the program's body: once every part serves it tunes the process's interpreter
    (:func:`tune_for_serving`: ``gc.freeze()`` and a 1 ms GIL switch interval). A program
    that embeds the Manager beside work of its own and wants neither runs
    :func:`serve_manager` instead.

    Args:
        config: The configuration.
        out: Where the "listening" lines go (default: standard output).

    Raises:
        ManagerConfigError: A TLS file or the JWT secret file is unusable.
        StoreError: The database cannot be opened or migrated.
        ListenError: A listener cannot be bound.
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_manager, config, out=out))
            tune_for_serving()
            async for signum in signals:
                logger.info("received %s; stopping", signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()
    logger.info("Manager stopped")
