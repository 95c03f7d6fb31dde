"""The reference daemon's updates: the ``update:`` block, recovery, trial, and the spool.

Theory of operation
-------------------
The daemon's only module that imports ``updater``; :mod:`transport.daemon._cli` imports it
only for a configuration with an ``update:`` block and for the ``update`` command, so a
daemon without updates never loads the updater (nor ``cryptography``).

**Configuration.** :func:`parse_update_settings` turns ``DaemonConfig.update`` (kept verbatim by
the loader) into :class:`updater.UpdateSettings` (the updater's keys, the updatable agents,
``install_root`` for self-update, ``restart``). Problems become
:class:`~supervisor.ConfigError` issues with paths such as ``update.limits.deadline``, so
``check-config`` reports them with every other error.

**The service.** :class:`DaemonUpdates`, in the order the daemon calls it:

1. :meth:`~DaemonUpdates.recover`, before any agent is started: finish or undo what a
   crash interrupted. If that rolled the daemon itself back (a trial past its deadline or
   out of starts), it returns True: the daemon must exit at once with 75 and be started
   again, by the service manager, from the restored version.
2. :meth:`~DaemonUpdates.run`, once the supervisor is up. An open self-update trial is
   confirmed as soon as the daemon is healthy: every enabled agent has reached
   ``running``, or rests ``stopped`` (stopped by the user, or ended under its restart
   policy). An agent that keeps failing keeps the trial open until its deadline; then the
   new version is rolled back and :attr:`~DaemonUpdates.restart_requested` is set. After
   that, requests in the spool (``{work_dir}/updates``, see :class:`updater.Spool`) are
   run one at a time: those pending at start, then after every :meth:`~DaemonUpdates.poke`
   (SIGUSR1). A successful update of the daemon itself ends the service with
   ``restart_requested`` set: the daemon stops, leaving its agents running, and exits
   with 75 (or re-executes itself, with ``restart: reexec``).

**Submitting** (the ``update`` command): :func:`read_request_file` validates the file,
:func:`daemon_pid` finds the process holding ``{work_dir}/daemon.lock``, and
:func:`submit_and_wait` drops the request into the spool, signals the daemon and waits for
the result.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import platform
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

import updater
from supervisor import AgentState, ConfigError, ConfigIssue
from updater import (
    DaemonInstall,
    Outcome,
    Spool,
    UpdateManager,
    UpdateRequest,
    UpdateResult,
    UpdateSettings,
)

from ._control import UpdateControl
from ._errors import DaemonError

if TYPE_CHECKING:
    from supervisor import Supervisor

    from ._config import DaemonConfig

__all__ = [
    "DaemonUpdates",
    "NoDaemonError",
    "RequestFileError",
    "SpoolUnusableError",
    "daemon_pid",
    "parse_update_settings",
    "read_request_file",
    "reexec_daemon",
    "submit_and_wait",
]

logger = logging.getLogger("hostvisor.updates")

DAEMON_COMPONENT = "daemon"
"""The component name of the daemon's own install (as in ``updater``)."""
SPOOL_DIR = "updates"
"""The spool's directory under ``daemon.work_dir``."""


class NoDaemonError(DaemonError):
    """No daemon holds the work directory's lock (or it exited while we waited)."""


class RequestFileError(DaemonError, ValueError):
    """An update request file is unreadable or not a valid request."""


class SpoolUnusableError(DaemonError):
    """The daemon's update spool is missing, not private, or cannot be written."""


# --- configuration ----------------------------------------------------------------------


def parse_update_settings(config: DaemonConfig) -> UpdateSettings | None:
    """Validate ``config.update``; None when it is empty (updates disabled).

    Relative paths are resolved against the configuration file's directory. Without
    ``update.agents`` every configured agent may be updated, as the component named by its
    id, at its ``binary_path`` (see :class:`updater.UpdateSettings`).

    Raises:
        ConfigError: Every problem of the block, with paths like ``update.max_backups``.
    """
    if not config.update:
        return None
    base = Path(os.path.dirname(os.path.abspath(config.source))) if config.source else None
    agents = {spec.id: Path(spec.binary_path) for spec in config.agents}
    try:
        return UpdateSettings.from_mapping(
            config.update, agents=agents, platform=_platform(), base_dir=base
        )
    except updater.UpdateConfigError as exc:
        issues = [ConfigIssue(f"update.{key}" if key else "update", m) for key, m in exc.issues]
        raise ConfigError(issues, source=config.source) from exc


def _platform() -> str:
    """This host's platform string, as release engineers sign it: ``linux-x86_64``."""
    return f"{sys.platform}-{platform.machine()}"


# --- fault injection for the crash tests ------------------------------------------------

#: Test-only: ``N`` makes the daemon SIGKILL itself just before the N-th action of its
#: first install (counted from the install's first journal write), so that tests can
#: crash a real daemon at every step of an update. Never set in production: the daemon
#: warns when it is.
CRASH_HOOK_ENV = "HOSTVISOR_TEST_CRASH_BEFORE_ACTION"


def crash_hook(spec: str) -> Callable[[object], None] | None:
    """The hook ``HOSTVISOR_TEST_CRASH_BEFORE_ACTION`` asks for; None when it is unset."""
    if not spec:
        return None
    if not spec.isdigit() or int(spec) < 1:
        raise ValueError(f"{CRASH_HOOK_ENV} must be a positive number; got {spec!r}")
    target, seen = int(spec), 0
    logger.warning("%s=%s: this daemon kills itself in updates (tests)", CRASH_HOOK_ENV, spec)

    def hook(action: object) -> None:
        nonlocal seen
        if not seen and type(action).__name__ != "WriteJournal":
            return  # recovery and pruning at start: count from an install's first journal
        seen += 1
        if seen == target:
            logger.warning("crashing before action %d (%s)", seen, type(action).__name__)
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


# --- the daemon's service ---------------------------------------------------------------


class DaemonUpdates:
    """The daemon's update service (see the module docstring for the order of calls).

    Args:
        settings: The validated ``update:`` block.
        supervisor: The daemon's supervisor (not yet running when this is built).
        work_dir: The daemon's work directory (the spool is ``work_dir/updates``).
    """

    def __init__(self, settings: UpdateSettings, supervisor: Supervisor, work_dir: str) -> None:
        self.settings = settings
        self.supervisor = supervisor
        root = settings.install_root
        self.install = (
            DaemonInstall(root, settings.daemon_trial_s, settings.daemon_max_starts)
            if root is not None
            else None
        )
        self.manager = UpdateManager(
            settings.config,
            agents=settings.targets,
            control=UpdateControl(supervisor),
            daemon=self.install,
            hook=crash_hook(os.environ.get(CRASH_HOOK_ENV, "")),
        )
        self.spool = Spool(Path(work_dir) / SPOOL_DIR)
        self.restart_requested = trio.Event()
        self.current: str | None = None
        """The spool name of the request being run now, if any (GetUpdateResult)."""
        self._trial_open = False
        self._poke_send, self._pokes = trio.open_memory_channel[None](1)

    def installed_versions(self) -> dict[str, str]:
        """The version the updater recorded as installed, by **agent id** (blocking: it
        reads the updater's records; call it in a thread).

        A target whose component is named apart from its agent
        (``update.agents: {toolkit: {agent: tool}}``) is reported under the agent's id,
        the key every reader (ListAgents, the agent-state syncs, RegisterNode's
        ``agent_version``) looks up. An unreadable record is logged and left out.
        """
        found: dict[str, str] = {}
        for target in self.settings.targets:
            try:
                version = self.manager.current_version(target.component)
            except (OSError, ValueError, updater.UpdaterError) as exc:
                logger.warning("cannot read the installed version of %s: %s", target.component, exc)
                continue
            if version:
                found[target.agent_id] = version
        return found

    async def recover(self) -> bool:
        """Finish or undo an interrupted update (call before any agent is started).

        Also creates the spool, so that it exists once the daemon is found running.

        Returns:
            True if the daemon itself was rolled back: it must restart now.
        """
        try:
            await trio.to_thread.run_sync(self.spool.create)
        except updater.SpoolError as exc:
            logger.error("update requests cannot be accepted: %s", exc)
        try:
            report = await self.manager.recover()
        except updater.RollbackError as exc:
            logger.critical("update recovery failed, a human is needed: %s", exc)
            return False
        except updater.UpdaterError as exc:
            logger.error("update recovery did not run: %s", exc)
            return False
        on_trial = (
            report is not None
            and report.component == DAEMON_COMPONENT
            and report.outcome is Outcome.CONTINUE_TRIAL
        )
        self._trial_open = on_trial and self.install is not None
        if on_trial:
            assert report is not None
            logger.warning(
                "daemon %s is on trial: %s",
                report.version,
                "it is confirmed once every agent is up"
                if self._trial_open
                else "update.install_root is not set, so it stays open for the next start",
            )
        elif report is not None:
            reason = f" ({report.reason.value})" if report.reason else ""
            logger.warning(
                "interrupted update of %s: %s%s; %s is in place",
                report.component,
                report.outcome.value,
                reason,
                report.version,
            )
        if updater.needs_restart(report):
            logger.error("this daemon version was rolled back; exiting to restart the previous one")
            return True
        try:
            for component in await self.manager.adopt_installs():
                version = self.manager.current_version(component)
                logger.info("recorded %s %s as installed", component, version)
        except updater.UpdaterError as exc:
            logger.error("cannot record an installed version: %s", exc)
        return False

    def poke(self) -> None:
        """Ask for a scan of the spool (on SIGUSR1). Never blocks; pokes coalesce."""
        with contextlib.suppress(trio.WouldBlock):
            self._poke_send.send_nowait(None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Settle an open trial, then serve the spool until cancelled or a restart is due."""
        task_status.started()
        if self._trial_open:
            try:
                await self._settle_trial()
            except updater.UpdaterError as exc:  # RollbackError: the journal stays for a human
                logger.critical("the daemon's trial could not be settled: %s", exc)
                return
        while not self.restart_requested.is_set():
            await self._serve_pending()
            if self.restart_requested.is_set():
                return
            await self._pokes.receive()

    async def wait_healthy(self) -> None:
        """Return once every enabled agent has reached ``running`` (or rests ``stopped``)."""
        for info in self.supervisor.statuses():
            if info.enabled:
                await self.supervisor.wait_state(info.id, AgentState.RUNNING, AgentState.STOPPED)

    async def _settle_trial(self) -> None:
        """Confirm the open trial once healthy, or let it expire (then request a restart)."""
        assert self.install is not None  # see recover()
        journal = await trio.to_thread.run_sync(self.manager.store.read_journal)
        if journal is None or journal.trial_deadline is None:
            return
        healthy = False
        with trio.move_on_after(max(0.0, journal.trial_deadline - self.manager.wall_clock())):
            await self.wait_healthy()
            healthy = True
        if healthy:
            report = await self.install.confirm(self.manager)
        else:
            report = await self.install.watch_trial(self.manager)
        if report is not None and report.outcome is Outcome.COMMITTED:
            logger.info("self-update to %s confirmed: every agent is up", report.version)
        elif updater.needs_restart(report):
            assert report is not None
            logger.error(
                "this daemon version did not become healthy within its trial; rolled back to"
                " %s, exiting to restart it",
                report.version,
            )
            self.restart_requested.set()
        else:  # the wall clock disagrees with Trio's: the next start decides
            logger.warning("the daemon's trial is still open after its deadline")

    async def _serve_pending(self) -> None:
        try:
            names = await trio.to_thread.run_sync(self.spool.pending)
        except updater.SpoolError as exc:
            logger.error("update requests cannot be accepted: %s", exc)
            return
        for name in names:
            self.current = name
            try:
                result = await self._handle(name)
            finally:
                self.current = None
            if result.success and result.restart_required:
                logger.warning("switched to daemon %s; exiting to restart it", result.new_version)
                self.restart_requested.set()
                return

    async def _handle(self, name: str) -> UpdateResult:
        """Run request ``name`` and answer it (an interrupted run is answered too)."""
        try:
            request = await trio.to_thread.run_sync(self.spool.read, name)
        except updater.VerificationError as exc:
            result = UpdateResult(False, None, "", error=str(exc), reason=exc.reason, code=exc.code)
            await self._answer(name, result)
            return result
        logger.info(
            "update request %s: %s %s from %s",
            name,
            request.component,
            request.version,
            request.download_url,
        )
        answered = False
        try:
            result = await self.manager.update(request)
            answered = True
        except Exception as exc:  # a bug must cost this request, not the daemon
            logger.exception("update request %s crashed", name)
            failure = updater.ApplyError(updater.Reason.IO_ERROR, f"unexpected error: {exc!r}")
            result = UpdateResult.failed(request, None, failure)
            answered = True
        finally:
            if not answered:  # cancelled: the daemon is stopping
                self._answer_interrupted(name, request)
        await self._answer(name, result)
        return result

    def _answer_interrupted(self, name: str, request: UpdateRequest) -> None:
        """Answer a request the daemon's shutdown cut short, saying what is in place now.

        The updater has by then put the old version back and running if it could, or left
        its journal for the next start; either way the answer and the log say which.
        """
        try:
            in_place = self.manager.current_version(request.component)
        except (updater.UpdaterError, OSError):
            in_place = None
        message = (
            f"the daemon stopped during the update; {in_place or 'the previous version'} is"
            " in place, and its next start completes whatever is left"
        )
        interrupted = updater.ApplyError(updater.Reason.INTERRUPTED, message)
        what = f"{request.component} {request.version}"
        logger.warning("update request %s (%s): %s", name, what, message)
        try:
            self.spool.finish(name, UpdateResult.failed(request, in_place, interrupted))
        except (updater.UpdaterError, OSError) as exc:
            logger.error("update request %s: cannot write its answer: %s", name, exc)

    async def _answer(self, name: str, result: UpdateResult) -> None:
        if result.success:
            logger.info("update request %s: installed %s", name, result.new_version)
        else:
            logger.error("update request %s failed: %s", name, result.error)
        try:
            await trio.to_thread.run_sync(self.spool.finish, name, result)
        except (updater.UpdaterError, OSError) as exc:
            logger.error("cannot write the result of update request %s: %s", name, exc)


def reexec_daemon(settings: UpdateSettings) -> None:
    """Replace this process with the daemon's command line (``restart: reexec``).

    Returns only if that failed (logged); the caller then exits with 75 instead.
    """
    argv = settings.reexec_argv()
    logger.warning("re-executing %s", " ".join(argv))
    for handler in logging.getLogger().handlers:
        handler.flush()
    try:
        updater.reexec(argv)
    except OSError as exc:
        logger.error("cannot re-execute %s: %s; exiting with 75 instead", argv[0], exc)


# --- submitting -------------------------------------------------------------------------


def read_request_file(path: str) -> UpdateRequest:
    """Read and validate an update request file (the fields of :class:`updater.UpdateRequest`).

    Raises:
        RequestFileError: Unreadable, not JSON, or not a valid request.
    """
    try:
        return Spool.load(Path(path))
    except updater.VerificationError as exc:
        raise RequestFileError(str(exc)) from exc


def daemon_pid(work_dir: str) -> int | None:
    """The PID of the daemon holding ``work_dir/daemon.lock``, or None if none does.

    The lock file records its holder's PID; a PID alone could be stale (and then belong to
    another process), so the lock must also be held: ``/proc/locks`` names the holder. If
    it does not list the file (some filesystems report other inode numbers there), a
    non-blocking shared ``flock`` probes it instead.
    """
    path = os.path.join(work_dir, "daemon.lock")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
        recorded = int(text) if text.isdigit() else None
        holders = _flock_holders(info)
        if holders:
            return recorded if recorded in holders else min(holders)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return recorded
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _flock_holders(info: os.stat_result) -> set[int]:
    """PIDs holding a ``flock`` on the file ``info`` describes, from ``/proc/locks``."""
    try:
        with open("/proc/locks") as file:
            lines = file.read().splitlines()
    except OSError:
        return set()
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    holders = set()
    for line in lines:
        fields = line.split()  # "1: FLOCK ADVISORY WRITE <pid> <maj>:<min>:<ino> 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            holders.add(int(fields[4]))
    return holders


def submit_and_wait(
    work_dir: str, request: UpdateRequest, *, timeout_s: float
) -> tuple[str, dict[str, Any] | None]:
    """Drop ``request`` into the daemon's spool, signal it, and wait for the result.

    Returns:
        The request's name and its result document (``UpdateResult`` fields), or None if
        no result came within ``timeout_s`` (the request stays queued).

    Raises:
        NoDaemonError: No daemon holds the work directory, or it exited before answering.
        SpoolUnusableError: The spool is missing, not private, or cannot be written.
    """
    pid = daemon_pid(work_dir)
    if pid is None:
        raise NoDaemonError(f"no daemon is running for {work_dir}")
    spool = Spool(Path(work_dir) / SPOOL_DIR)
    try:
        name = spool.submit(request)
    except updater.UpdaterError as exc:
        raise SpoolUnusableError(str(exc)) from exc
    with contextlib.suppress(ProcessLookupError):  # then found gone just below
        os.kill(pid, signal.SIGUSR1)
    result = spool.wait(name, timeout_s=timeout_s, alive=lambda: daemon_pid(work_dir) == pid)
    if result is None and daemon_pid(work_dir) != pid:
        raise NoDaemonError(
            f"the daemon (pid {pid}) exited before answering; request {name} stays queued"
            f" in {spool.directory}"
        )
    return name, result
