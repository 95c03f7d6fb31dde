"""The daemon's composition root: ``hostvisor run``.

Start-up in the seed's order (004 section 3.1): configuration (already loaded by the
command line), logging, the work-directory lock and the PID file, update recovery, the
supervisor (agents adopted or started), the collectors, the update service, then the
signal loop. SIGHUP re-reads the configuration and applies what it can; SIGUSR1 pokes the
update spool; SIGTERM and SIGINT end the daemon, leaving agents running unless
``daemon.stop_agents_on_exit`` is true.

Then, after the supervisor, the gRPC server (``proto.DaemonService`` and
``hostvisor.v1.HostvisorService`` on ``daemon.grpc_host:grpc_port`` and the control
socket; see :mod:`transport.daemon._server`), unless both are disabled: only then are
grpc and trio-asyncio imported.

Nursery ownership::

    serve (the daemon's root nursery; SIGTERM cancels it)
    ├─ Supervisor.run        owns the agents
    ├─ CollectorManager.run  when a ``collectors`` or ``manager`` section is present
    ├─ DaemonUpdates.run     when an ``update`` section is present
    ├─ GrpcServer.run        owns the asyncio loop and the listeners, when enabled
    └─ Reporter.run          the Manager client, when a ``manager`` section is present
                             (see :mod:`transport.daemon._reporter`)
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

import trio

from supervisor import ConfigError, Supervisor

from ._config import DaemonConfig, load_config
from ._state import DaemonLock, StateFile

if TYPE_CHECKING:
    from collectors import CollectorManager, CollectorsConfig
    from updater import UpdateSettings

    from ._reporter import Reporter
    from ._server import GrpcServer
    from ._updates import DaemonUpdates

__all__ = ["Daemon", "collectors_config", "hold_pid_file", "return_free_memory"]

logger = logging.getLogger("hostvisor")

#: How long an update under way may take to end at shutdown (the updater bounds its own
#: cleanup at 30 s; systemd's TimeoutStopSec is 60 s).
UPDATE_SHUTDOWN_S = 40.0
#: Settings of the ``daemon`` section that only a restart applies.
RESTART_ONLY = (
    "id",
    "log_file",
    "pid_file",
    "work_dir",
    "grpc_host",
    "grpc_port",
    "grpc_allow_insecure",
    "control_socket",
    "tls",
    "labels",
)


def collectors_config(config: DaemonConfig) -> CollectorsConfig | None:
    """The validated ``collectors`` section, or None when the daemon runs none.

    The collectors run when the configuration has a ``collectors`` or a ``manager``
    section (they feed the Manager); a standalone daemon without either never imports them.

    Raises:
        ConfigError: the section is invalid (paths such as ``collectors.disk.interval``).
    """
    if not config.collectors and not config.manager:
        return None
    import collectors
    from supervisor import ConfigIssue

    try:
        parsed = collectors.parse_collectors_config(config.collectors or None)
    except collectors.CollectorConfigError as exc:
        issues = [(path, message) for path, message in exc.issues]
        raise ConfigError([ConfigIssue(p, m) for p, m in issues], source=config.source) from exc
    if config.manager:
        too_often = [
            ConfigIssue(
                f"collectors.{name}.interval",
                f"{interval_s:g}s is below 1s: a report's timestamp is in whole seconds and"
                " the Manager keeps one report per node, metric type and second",
            )
            for name, interval_s in _enabled_intervals(parsed)
            if interval_s < 1.0
        ]
        if too_often:
            raise ConfigError(too_often, source=config.source)
    return parsed


def _enabled_intervals(parsed: CollectorsConfig) -> list[tuple[str, float]]:
    """``(path below collectors, interval)`` of every enabled collector."""
    found = [
        (name, section.interval_s)
        for name, section in (
            ("cpu", parsed.cpu),
            ("memory", parsed.memory),
            ("disk", parsed.disk),
            ("network", parsed.network),
        )
        if section.enabled
    ]
    found += [(f"plugins.{p.name}", p.interval_s) for p in parsed.plugins if p.enabled]
    return found


@contextlib.contextmanager
def hold_pid_file(path: str | None) -> Iterator[None]:
    """Write our PID to ``path`` for as long as the context lasts; remove it afterwards.

    Only a daemon that holds the work directory's lock enters this, so a second daemon
    refused at the lock never touches the first one's PID file. The file is removed only
    if it still holds our PID.
    """
    if not path:
        yield
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    mine = f"{os.getpid()}\n"
    with open(path, "w") as file:
        file.write(mine)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            with open(path) as file:
                still_mine = file.read() == mine
            if still_mine:
                os.unlink(path)


def return_free_memory() -> None:
    """Hand the heap's free pages back to the OS after the start-up burst.

    Imports, configuration parsing and hundreds of concurrent spawns leave freed memory
    that glibc keeps; a long-lived daemon should not carry it.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL(None).malloc_trim(0)


@dataclass
class Daemon:
    """One run of the reference daemon.

    Args:
        config: The loaded configuration.
        settings: The validated ``update`` section, or None.
        path: The configuration file (re-read on SIGHUP).
        work_dir_override: The command line's ``--work-dir``, applied on every re-read.
    """

    config: DaemonConfig
    settings: UpdateSettings | None
    path: str
    work_dir_override: str | None = None
    exit_code: int = 0

    async def serve(self, *, restart_code: int) -> int:
        """Run until SIGTERM/SIGINT (0) or until a self-update asks for a restart.

        Raises:
            DaemonLockedError: another daemon holds the work directory.
            StateFileError: the state file is unusable.
        """
        config = self.config
        work_dir = config.daemon.work_dir
        lock = DaemonLock(os.path.join(work_dir, "daemon.lock"))
        lock.acquire()
        try:
            with hold_pid_file(config.daemon.pid_file):
                return await self._serve_locked(restart_code)
        finally:
            lock.release()

    async def _serve_locked(self, restart_code: int) -> int:
        config = self.config
        work_dir = config.daemon.work_dir
        logger.info(
            "hostvisor %s: pid %d, work dir %s, configuration %s",
            _version(),
            os.getpid(),
            work_dir,
            self.path,
        )
        supervisor = Supervisor(
            config.agents,
            work_dir=work_dir,
            store=StateFile(os.path.join(work_dir, "state.json")),
            subreaper=True,
        )
        updates = self._updates(supervisor)
        metrics = self._collectors()
        grpc = self._grpc(supervisor, updates)  # TLS files are read here: ConfigError
        reporter = self._reporter(supervisor, metrics, updates, grpc)  # ConfigError too
        watched = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
        with trio.open_signal_receiver(*watched) as signals:
            if updates is not None and await updates.recover():
                return restart_code
            if grpc is not None:
                grpc.open_loop = reporter is None
            # One grpc loop per process, shared by the server and the Manager client.
            shared = grpc is not None and reporter is not None
            loop = _grpc_loop() if shared else contextlib.nullcontext()
            async with loop, trio.open_nursery() as nursery:
                leave = not config.daemon.stop_agents_on_exit
                await nursery.start(partial(supervisor.run, leave_running=leave))
                logger.info("supervising %d agent(s)", len(config.agents))
                if metrics is not None:
                    await nursery.start(metrics.run)
                updates_scope, updates_done = trio.CancelScope(), trio.Event()
                if updates is not None:
                    await nursery.start(self._serve_updates, updates, updates_scope, updates_done)
                    nursery.start_soon(self._restart_when_requested, updates, nursery, restart_code)
                else:
                    updates_done.set()
                if grpc is not None:
                    await nursery.start(grpc.run)
                if reporter is not None:
                    await nursery.start(reporter.run)
                return_free_memory()
                async for signum in signals:
                    if signum == signal.SIGUSR1:
                        if updates is not None:
                            updates.poke()
                        continue
                    if signum != signal.SIGHUP:
                        logger.info("received %s; exiting", signal.Signals(signum).name)
                        break
                    await self._reload(supervisor)
                # An update under way ends first, while the supervisor still runs: its
                # cleanup stops the new version and starts the old one through it.
                updates_scope.cancel()
                with trio.move_on_after(UPDATE_SHUTDOWN_S):
                    await updates_done.wait()
                nursery.cancel_scope.cancel()
        return self.exit_code

    @staticmethod
    async def _serve_updates(
        updates: DaemonUpdates,
        scope: trio.CancelScope,
        done: trio.Event,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with scope:
                await updates.run(task_status=task_status)
        finally:
            done.set()

    async def _restart_when_requested(
        self, updates: DaemonUpdates, nursery: trio.Nursery, restart_code: int
    ) -> None:
        await updates.restart_requested.wait()
        self.exit_code = restart_code
        nursery.cancel_scope.cancel()

    def _updates(self, supervisor: Supervisor) -> DaemonUpdates | None:
        if self.settings is None:
            return None
        from ._updates import DaemonUpdates

        return DaemonUpdates(self.settings, supervisor, supervisor.work_dir)

    def _grpc(self, supervisor: Supervisor, updates: DaemonUpdates | None) -> GrpcServer | None:
        if not self.config.daemon.grpc_enabled:
            return None  # grpc is not even imported
        from ._server import build_server

        return build_server(supervisor, lambda: self.config, updates)

    def _reporter(
        self,
        supervisor: Supervisor,
        metrics: CollectorManager | None,
        updates: DaemonUpdates | None,
        grpc: GrpcServer | None,
    ) -> Reporter | None:
        if not self.config.manager:
            return None  # the gRPC client is not even imported
        from ._reporter import build_reporter

        reporter = build_reporter(
            self.config,
            supervisor,
            metrics,
            updates,
            daemon_version=_version(),
            open_loop=grpc is None,  # with the server, both share the loop opened in serve
        )
        return reporter

    def _collectors(self) -> CollectorManager | None:
        config = collectors_config(self.config)
        if config is None:
            return None
        from collectors import CollectorManager

        return CollectorManager.from_config(config)

    async def _reload(self, supervisor: Supervisor) -> None:
        logger.info("SIGHUP: re-reading %s", self.path)
        try:
            config = await trio.to_thread.run_sync(
                lambda: load_config(self.path, work_dir=self.work_dir_override)
            )
            collectors_config(config)  # refused as a whole when a section is invalid
        except ConfigError as exc:
            logger.error("reload refused, keeping the running configuration: %s", exc)
            return
        old = self.config
        self._apply_daemon_settings(old, config, supervisor)
        for section in ("update", "collectors", "manager"):
            if getattr(config, section) != getattr(old, section):
                logger.warning("the %s section changed; it takes effect at the next start", section)
        plan = await supervisor.reload(config.agents)
        # Keep what cannot change without a restart, so the next reload compares with it.
        kept = {key: getattr(old.daemon, key) for key in RESTART_ONLY}
        self.config = replace(
            config,
            daemon=replace(config.daemon, **kept),
            update=old.update,
            collectors=old.collectors,
            manager=old.manager,
        )
        logger.info(
            "reload applied: %d added, %d removed, %d restarted, %d updated, %d unchanged",
            len(plan.add),
            len(plan.remove),
            len(plan.restart),
            len(plan.update),
            len(plan.unchanged),
        )

    @staticmethod
    def _apply_daemon_settings(
        old: DaemonConfig, new: DaemonConfig, supervisor: Supervisor
    ) -> None:
        if new.daemon.log_level != old.daemon.log_level:
            logging.getLogger().setLevel(level_of(new.daemon.log_level))
            logger.info("daemon.log_level is now %s", new.daemon.log_level)
        if new.daemon.stop_agents_on_exit != old.daemon.stop_agents_on_exit:
            supervisor.leave_running = not new.daemon.stop_agents_on_exit
            logger.info(
                "daemon.stop_agents_on_exit is now %s", str(new.daemon.stop_agents_on_exit).lower()
            )
        for key in RESTART_ONLY:
            if getattr(new.daemon, key) != getattr(old.daemon, key):
                logger.warning("daemon.%s changed; it takes effect at the next start", key)


def _grpc_loop() -> contextlib.AbstractAsyncContextManager[object]:
    from transport import open_grpc_loop

    return open_grpc_loop()


def level_of(name: str) -> int:
    """The logging level of a validated ``daemon.log_level``."""
    level: int = getattr(logging, name.upper(), logging.INFO)
    return level


def _version() -> str:
    from ._cli import version

    return version()
