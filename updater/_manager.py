"""The update manager: the seed's UpdateManager as a Trio shell over the pure parts.

Theory of operation
-------------------
``UpdateManager.update()`` runs one request end to end and always returns an
:class:`~updater.UpdateResult` (it raises only on cancellation):

1. **Lock.** One update at a time; a second request gets ``busy`` at once. An unfinished
   journal (recovery pending) also makes requests ``busy``.
2. **Verify the envelope** against the keyring, the floor and the clock *before* any byte
   is downloaded (:func:`updater._verify.verify_statement`).
3. **Download** from the URL, then the mirrors, each under every limit, into a private
   staging file; check its streamed SHA-256 and length against the statement (a legacy
   request: check the seed's signature over the streamed digest). A failing URL moves on to
   the next; the last failure is reported.
4. **Version check** (legacy artifacts always, others if the target asks for it): run the
   new executable with its ``version_args`` in a scratch directory; it must print the
   version being installed (:mod:`updater._versioncheck`). Nothing is switched otherwise.
5. **Install** through the journalled plan (:mod:`updater._plan`), executed on real files
   in a worker thread (:mod:`updater._executor`). For an agent: back up, stop it through
   :class:`~updater.AgentControl`, switch, start it, and run the trial: within ``trial_s`` it
   must become ready and must not exit. Then commit (raise the floor, prune backups) or
   roll back (restore, restart the previous version, report the failed version's log tail).
6. **Recovery.** :meth:`UpdateManager.recover` is called once at daemon start, before the
   agents start: it finishes or undoes whatever a crash interrupted and says what it did.

The daemon itself is updated by :mod:`updater._selfupdate`, which shares steps 1 to 3.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio

from ._config import AgentTarget, UpdateConfig
from ._control import AgentControl
from ._download import ChunkWriter, Downloaded, FreeSpace, _free_space, download
from ._envelope import Keyring, Statement
from ._errors import (
    ApplyError,
    DownloadError,
    HashMismatchError,
    Reason,
    RollbackError,
    UpdaterError,
    VerificationError,
)
from ._executor import Executor, Hook, observe
from ._fs import clean_temp, discard, read_link, sha256_file
from ._layout import adopt_tree, stage_tree, sweep_versions, version_of_directory
from ._plan import (
    Journal,
    Kind,
    Outcome,
    Phase,
    Release,
    abort_steps,
    commit_steps,
    prepare_steps,
    recover,
    rollback_steps,
    switch_steps,
)
from ._request import UpdateRequest, UpdateResult
from ._store import StateStore
from ._trust import load_keyring
from ._verify import Floor, check_artifact, verify_keyring_rotation, verify_legacy_signature
from ._versioncheck import check_new_version

__all__ = [
    "DAEMON_COMPONENT",
    "DaemonUpdater",
    "RecoveryReport",
    "UpdateManager",
    "agent_trial",
]

DAEMON_COMPONENT = "daemon"


class DaemonUpdater(Protocol):
    """Installs daemon versions (implemented by :class:`updater.DaemonInstall`)."""

    @property
    def root(self) -> Path:
        """The daemon's install root (``versions/``, ``current``)."""
        ...

    async def update(self, manager: UpdateManager, request: UpdateRequest) -> UpdateResult:
        """Fetch, verify and switch the daemon to ``request``'s version."""
        ...

    def sweep(self, store: StateStore, journal: Journal | None) -> None:
        """Remove version directories nothing refers to (a crash before the journal)."""
        ...


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What :meth:`UpdateManager.recover` found and did.

    Attributes:
        component: The component whose transaction was open.
        outcome: ``aborted``, ``committed``, ``rolled_back`` or ``continue_trial``.
        reason: Why (``interrupted``, ``trial_expired``, ``start_failed``), if relevant.
        version: The version in place afterwards.
        journal_phase: The phase the crash interrupted.
    """

    component: str
    outcome: Outcome
    reason: Reason | None
    version: str
    journal_phase: Phase


@dataclass(frozen=True, slots=True)
class Fetched:
    """A downloaded artifact that passed verification.

    Attributes:
        staged: The staging file.
        version: The version it was verified as.
        counter: Its signed counter (-1 for a legacy request).
        legacy: Accepted through a legacy key (no signed version: check it locally).
    """

    staged: Downloaded
    version: str
    counter: int
    legacy: bool = False


class UpdateManager:
    """Runs update requests for the configured agents (and, via ``updater.selfupdate``,
    the daemon).

    Args:
        config: Directories, platform and limits.
        agents: The agent binaries that may be updated, by component.
        control: The supervisor's handle (see :class:`~updater.AgentControl`).
        ssl_context: Trust for https downloads (default: the system's CAs).
        wall_clock: Unix time source for expiry decisions (``time.time``).
        write: Write seam for staging and copies (tests inject ENOSPC).
        free_space: Free-space seam.
        hook: Called before every install action (tests inject crashes).
        daemon: The daemon's own install (see :class:`updater.DaemonInstall`), if managed.
    """

    def __init__(
        self,
        config: UpdateConfig,
        *,
        agents: Sequence[AgentTarget] = (),
        control: AgentControl | None = None,
        ssl_context: ssl.SSLContext | None = None,
        wall_clock: Callable[[], float] = time.time,
        write: ChunkWriter = os.write,
        free_space: FreeSpace = _free_space,
        hook: Hook | None = None,
        daemon: DaemonUpdater | None = None,
    ) -> None:
        self.config = config
        self.agents = {agent.component: agent for agent in agents}
        self.control = control
        self.ssl_context = ssl_context
        self.wall_clock = wall_clock
        self.write = write
        self.free_space = free_space
        self.store = StateStore(config.state_dir)
        self.executor = Executor(self.store, write=write, hook=hook)
        self.daemon = daemon
        self._lock = trio.Lock()

    # --- queries -------------------------------------------------------------------------

    def current_version(self, component: str) -> str | None:
        """The version recorded as installed for ``component`` (None if never updated)."""
        installed = self.store.installed(component)
        return installed.version if installed else None

    def floor(self, component: str) -> Floor:
        """The persisted version floor of ``component``."""
        return self.store.floor(component)

    async def adopt(self, component: str, version: str, *, counter: int = -1) -> None:
        """Record the binary already installed for agent ``component`` as ``version``.

        Call once when a host starts being managed, so that results report the old version.
        A known ``counter`` raises the version floor to it (it is never lowered).

        Raises:
            ApplyError: Unknown component, or the binary cannot be read.
        """
        target = self.agents.get(component)
        if target is None:
            raise ApplyError(Reason.UNKNOWN_COMPONENT, f"no updatable component {component!r}")
        if target.install_root is not None:
            release = await trio.to_thread.run_sync(
                adopt_tree, target.install_root, version, counter
            )
        else:
            try:
                sha = await trio.to_thread.run_sync(sha256_file, target.binary_path)
            except OSError as exc:
                raise ApplyError(
                    Reason.IO_ERROR, f"cannot read {target.binary_path}: {exc}"
                ) from exc
            release = Release(version, counter, sha, "")
        await trio.to_thread.run_sync(self.store.set_installed, component, release)

    async def adopt_installs(self) -> list[str]:
        """Record what each versioned install's ``current`` link points at, where nothing
        or something else is recorded (a host's first start, or ``current`` switched by
        hand), for the archive agents and the daemon.

        The version is read from the directory's name (see
        :func:`updater._layout.version_of_directory`); floors are left as they are. Does
        nothing while a transaction is open (recovery decides what is in place then).

        Returns:
            The components adopted.

        Raises:
            ApplyError: A ``current`` link points at no directory (``io_error``).
        """
        roots = {c: t.install_root for c, t in self.agents.items() if t.install_root is not None}
        if self.daemon is not None:
            roots[DAEMON_COMPONENT] = self.daemon.root
        adopted: list[str] = []
        if self.store.journal_path.exists():
            return adopted
        for component, root in roots.items():
            current = read_link(root / "current")
            installed = self.store.installed(component)
            if current is None or (installed is not None and installed.path == current):
                continue
            release = await trio.to_thread.run_sync(
                adopt_tree, root, version_of_directory(current), -1
            )
            await trio.to_thread.run_sync(self.store.set_installed, component, release)
            adopted.append(component)
        return adopted

    def keyring(self) -> Keyring:
        """The keyring in force (see :func:`updater._trust.load_keyring`)."""
        return load_keyring(self.config, self.store)

    async def rotate_keyring(self, envelope: bytes | str) -> Keyring:
        """Accept a new keyring signed by a current keyring key and one of its own.

        Raises:
            VerificationError: See :func:`updater._verify.verify_keyring_rotation`.
        """
        from ._envelope import decode_envelope

        new = verify_keyring_rotation(envelope, self.keyring(), self.wall_clock())
        payload = decode_envelope(envelope).payload
        await trio.to_thread.run_sync(self.store.write_keyring, payload)
        return new

    # --- recovery ------------------------------------------------------------------------

    async def recover(self) -> RecoveryReport | None:
        """Finish or undo a transaction interrupted by a crash (call at daemon start).

        Returns:
            What was found and done, or None if no transaction was open. A daemon
            self-update in its trial reports ``continue_trial`` (see ``updater.selfupdate``).

        Raises:
            RollbackError: Nothing intact to restore; the journal stays for a human.
        """
        return await trio.to_thread.run_sync(self._recover_sync)

    def _recover_sync(self) -> RecoveryReport | None:
        lock_fd = _lock_state_dir(self.config.state_dir)
        if lock_fd is None:
            from ._errors import UpdateInProgressError

            raise UpdateInProgressError("another process holds the update lock")
        try:
            return self._recover_locked()
        finally:
            os.close(lock_fd)

    def _recover_locked(self) -> RecoveryReport | None:
        journal = self.store.read_journal()
        self._sweep_staging(journal)
        if self.daemon is not None:
            self.daemon.sweep(self.store, journal)
        for agent in self.agents.values():
            if agent.install_root is not None:
                sweep_versions(agent.install_root, agent.component, self.store, journal)
        if journal is None:
            return None
        clean_temp(Path(journal.target).parent)
        decision = recover(
            journal, observe(journal), now=self.wall_clock(), keep=self.config.max_backups
        )
        self.executor.restored = None
        try:
            self.executor.run_all(decision.steps)
        except RollbackError as exc:
            exc.journal = journal
            raise
        if decision.outcome is Outcome.ROLLED_BACK:
            version = (self.executor.restored or journal.old).version
        elif decision.outcome is Outcome.ABORTED:
            version = journal.old.version
        else:
            version = journal.new.version
        return RecoveryReport(
            journal.component, decision.outcome, decision.reason, version, journal.phase
        )

    def _sweep_staging(self, journal: Journal | None) -> None:
        """Remove staged downloads that no open transaction refers to."""
        keep = {journal.new.path} if journal is not None else set()
        directory = self.config.download_dir
        if directory.is_dir():
            for entry in directory.iterdir():
                if entry.name.startswith(".download-") and str(entry) not in keep:
                    discard(entry)

    # --- the update ----------------------------------------------------------------------

    async def update(self, request: UpdateRequest) -> UpdateResult:
        """Run one update request (see the module docstring for the steps).

        Returns:
            The result; failures carry ``reason`` and ``code`` and leave the previous
            version in place (running, for agents).
        """
        old_version = self.current_version(request.component)
        if self._lock.locked():
            return _busy(request, old_version, "another update is in progress")
        async with self._lock:
            lock_fd = _lock_state_dir(self.config.state_dir)
            if lock_fd is None:
                return _busy(request, old_version, "another process is updating")
            try:
                return await self._update_locked(request, old_version)
            finally:
                os.close(lock_fd)

    async def _update_locked(self, request: UpdateRequest, old_version: str | None) -> UpdateResult:
        if self.store.journal_path.exists():
            return _busy(request, old_version, "an interrupted update awaits recovery")
        try:
            if request.component in self.agents:
                return await self._update_agent(request, self.agents[request.component])
            if request.component == DAEMON_COMPONENT and self.daemon is not None:
                return await self.daemon.update(self, request)
            # Still verify (without downloading), so that an agent artifact offered as the
            # daemon reports component_mismatch rather than a bare "unknown".
            await self.verify_request(request, Floor())
            raise ApplyError(
                Reason.UNKNOWN_COMPONENT, f"no updatable component {request.component!r}"
            )
        except UpdaterError as exc:
            return UpdateResult.failed(request, old_version, exc)

    async def verify_request(
        self, request: UpdateRequest, floor: Floor
    ) -> tuple[Keyring, Statement | None]:
        """Verify the envelope before downloading (None for a legacy request).

        Raises:
            VerificationError: The envelope was refused.
        """
        keyring = await trio.to_thread.run_sync(self.keyring)
        statement: Statement | None = None
        if request.envelope is not None:
            from ._verify import verify_statement

            statement = verify_statement(
                request.envelope,
                keyring,
                component=request.component,
                platform=self.config.platform,
                version=request.version,
                floor=floor,
                now=self.wall_clock(),
                max_length=self.config.limits.max_bytes,
            ).statement
            if request.hash and request.hash.lower() != statement.sha256:
                raise HashMismatchError("the request's hash differs from the signed one")
        elif not (request.signature and request.hash):
            raise VerificationError(Reason.BAD_ENVELOPE, "no envelope and no legacy signature")
        return keyring, statement

    async def fetch(self, request: UpdateRequest, floor: Floor) -> Fetched:
        """Verify the request, download the artifact and check it (steps 2 and 3).

        Raises:
            VerificationError: The envelope or artifact was refused.
            DownloadError: Every URL failed; the last failure is raised.
        """
        keyring, statement = await self.verify_request(request, floor)
        last: UpdaterError | None = None
        for url in (request.download_url, *request.mirrors):
            try:
                staged = await download(
                    url,
                    self.config.download_dir,
                    limits=self.config.limits,
                    expected_length=statement.length if statement else None,
                    ssl_context=self.ssl_context,
                    write=self.write,
                    free_space=self.free_space,
                )
            except DownloadError as exc:
                last = exc
                continue
            try:
                if statement is not None:
                    check_artifact(statement, staged.sha256, staged.length)
                    return Fetched(staged, statement.version, statement.counter)
                if staged.sha256 != request.hash.lower():
                    raise HashMismatchError(f"sha256 {staged.sha256} != request {request.hash}")
                verify_legacy_signature(
                    request.signature,
                    bytes.fromhex(staged.sha256),
                    keyring,
                    component=request.component,
                    version=request.version,
                    floor=floor,
                    now=self.wall_clock(),
                )
                return Fetched(staged, request.version, -1, legacy=True)
            except VerificationError as exc:
                await trio.to_thread.run_sync(discard, staged.path)
                if exc.reason not in (Reason.HASH_MISMATCH, Reason.LENGTH_MISMATCH):
                    raise
                last = exc
        assert last is not None
        raise last

    async def run_steps(self, steps: Sequence[object]) -> None:
        """Run plan actions in a worker thread (they fsync)."""
        await trio.to_thread.run_sync(self.executor.run_all, list(steps))  # type: ignore[arg-type]

    async def _update_agent(self, request: UpdateRequest, target: AgentTarget) -> UpdateResult:
        control = self.control
        if control is None:
            raise ApplyError(Reason.UNKNOWN_COMPONENT, "no AgentControl to update agents with")
        installed = self.store.installed(target.component)
        fetched = await self.fetch(request, self.store.floor(target.component))
        txn = secrets.token_hex(6)
        old_version = installed.version if installed else "unknown"
        fallbacks = tuple(reversed(self.store.backups(target.component)))
        if target.install_root is None:
            staged = (fetched.staged.path, fetched.staged.sha256)
            await self._check_version(target, fetched, fetched.staged.path, staged=staged)
            current_sha = await trio.to_thread.run_sync(sha256_file, target.binary_path)
            backup = self.config.backup_dir / target.component / f"{old_version}-{txn}.bin"
            old_release = Release(
                old_version, installed.counter if installed else -1, current_sha, str(backup)
            )
            new_release = Release(
                fetched.version, fetched.counter, fetched.staged.sha256, str(fetched.staged.path)
            )
            kind, switched_path = Kind.FILE, target.binary_path
        else:
            root = target.install_root
            current = read_link(root / "current")
            if installed is None or installed.path != current:
                await trio.to_thread.run_sync(discard, fetched.staged.path)
                raise ApplyError(Reason.IO_ERROR, f"{root}/current is not the adopted install")
            new_release = await trio.to_thread.run_sync(
                stage_tree, root, fetched.staged.path, fetched.version, fetched.counter
            )
            tree = Path(new_release.path)
            await self._check_version(target, fetched, tree, tree=tree)
            old_release, kind, switched_path = installed, Kind.LINK, root / "current"
        journal = Journal(
            txn=txn,
            component=target.component,
            kind=kind,
            target=str(switched_path),
            old=old_release,
            new=new_release,
            fallbacks=fallbacks,
        )
        old = installed.version if installed else None
        try:
            await self.run_steps(prepare_steps(journal))
        except UpdaterError:
            await self.run_steps(abort_steps(journal))
            raise
        try:
            return await self._stop_switch_trial(request, target, control, journal, old)
        except* trio.Cancelled:
            # Cancelled mid-way (a request timeout, or shutdown): put things back as
            # recovery would, under a shielded scope with a deadline, then let it propagate.
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + 60
                with contextlib.suppress(Exception):
                    await control.stop_agent(target.agent_id)
                await trio.to_thread.run_sync(self._recover_locked)
                await _start(control, target.agent_id)
            raise

    async def _check_version(
        self, target: AgentTarget, fetched: Fetched, staging: Path, **where: Any
    ) -> None:
        """The pre-swap version check (:func:`updater._versioncheck.check_new_version`);
        on failure the staged file or tree ``staging`` is removed.

        Raises:
            VerificationError: ``version_check_failed`` or ``binary_version_mismatch``.
        """
        try:
            await check_new_version(
                target,
                fetched.version,
                legacy=fetched.legacy,
                scratch_parent=self.config.download_dir,
                timeout_s=self.config.version_check_timeout_s,
                **where,
            )
        except UpdaterError:
            await trio.to_thread.run_sync(discard, staging)
            raise

    async def _stop_switch_trial(
        self,
        request: UpdateRequest,
        target: AgentTarget,
        control: AgentControl,
        journal: Journal,
        old: str | None,
    ) -> UpdateResult:
        # Held from the stop to the end of the trial: the supervisor must not restart the
        # agent behind our back. Released (idempotently) before any start of the old one.
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(control.hold(target.agent_id))
            except Exception as exc:  # e.g. the agent is no longer supervised
                await self.run_steps(abort_steps(journal))
                raise ApplyError(
                    Reason.STOP_FAILED, f"cannot hold {target.agent_id}: {exc}"
                ) from exc
            return await self._held_switch_trial(request, target, control, journal, old, held)

    async def _held_switch_trial(
        self,
        request: UpdateRequest,
        target: AgentTarget,
        control: AgentControl,
        journal: Journal,
        old: str | None,
        held: contextlib.ExitStack,
    ) -> UpdateResult:
        try:
            await control.stop_agent(target.agent_id)
        except Exception as exc:
            await self.run_steps(abort_steps(journal))
            raise ApplyError(Reason.STOP_FAILED, f"cannot stop {target.agent_id}: {exc}") from exc
        try:
            await self.run_steps(switch_steps(journal))
        except UpdaterError as exc:
            await self.run_steps(abort_steps(journal))
            held.close()
            problem = await _start(control, target.agent_id)
            if problem:
                exc.add_note(problem)
            raise
        switched = journal.at(Phase.SWITCHED)
        failure = await agent_trial(control, target.agent_id, self.config.trial_s)
        if failure is None:
            await self.run_steps(commit_steps(switched, keep=self.config.max_backups))
            return UpdateResult(True, old, journal.new.version)
        reason, detail = failure
        tail = tuple(control.tail(target.agent_id, self.config.log_tail_lines))
        try:
            await control.stop_agent(target.agent_id)
        except Exception as exc:  # replacing a running binary is safe: roll back anyway
            detail += f"; stopping it failed: {exc}"
        self.executor.restored = None
        try:
            await self.run_steps(rollback_steps(switched, reason))
        except RollbackError as exc:
            exc.journal = switched
            return UpdateResult.failed(request, old, exc, log_tail=tail)
        restored = self.executor.restored or journal.old
        if restored.path != journal.old.path:
            detail += f"; backup of {journal.old.version} was corrupt, restored {restored.version}"
        held.close()
        problem = await _start(control, target.agent_id)
        if problem:
            detail += f"; {problem}"
        error = ApplyError(reason, f"{journal.new.version} {detail}; rolled back")
        return UpdateResult.failed(
            request,
            old,
            error,
            rolled_back=True,
            log_tail=tail,
            restored_version=restored.version,
        )


async def _start(control: AgentControl, agent_id: str) -> str | None:
    """Start the (restored) agent; a failure is reported, not raised: the files are
    already right, and the supervisor's restart policy takes it from there."""
    try:
        await control.start_agent(agent_id)
    except Exception as exc:
        return f"restarting {agent_id} failed: {exc}"
    return None


async def agent_trial(
    control: AgentControl, agent_id: str, trial_s: float
) -> tuple[Reason, str] | None:
    """Start the agent and watch it for ``trial_s`` seconds of Trio time.

    It passes if it becomes ready, does not exit before the window ends and its health
    checks pass when it ends; an exit fails it at once, not being ready or healthy when the
    window ends fails it then. ``trial_s == 0`` skips the watch.

    Returns:
        None if it passed, else the reason (``start_failed``, ``not_ready``,
        ``unhealthy``) and a detail.
    """
    try:
        await control.start_agent(agent_id)
    except Exception as exc:
        return Reason.START_FAILED, f"could not be started: {exc}"
    if trial_s == 0:
        return None
    ready = False
    exit_status: list[int | None] = []
    async with trio.open_nursery() as nursery:
        nursery.cancel_scope.deadline = trio.current_time() + trial_s

        async def watch_exit() -> None:
            exit_status.append(await control.wait_exit(agent_id))
            nursery.cancel_scope.cancel()

        async def watch_ready() -> None:
            nonlocal ready
            await control.wait_ready(agent_id)
            ready = True

        nursery.start_soon(watch_exit)
        nursery.start_soon(watch_ready)
    if exit_status:
        return Reason.START_FAILED, f"exited with status {exit_status[0]} during its trial"
    if not ready:
        return Reason.NOT_READY, f"was not ready within the {trial_s} s trial"
    problem = control.health_problem(agent_id)
    if problem is not None:
        return Reason.UNHEALTHY, f"was unhealthy at the end of its {trial_s} s trial: {problem}"
    return None


def _lock_state_dir(state_dir: Path) -> int | None:
    """Take the cross-process update lock (``flock`` on ``state_dir/update.lock``).

    Returns:
        The locked descriptor (close it to release), or None if another holder has it.
    """
    import fcntl

    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / "update.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _busy(request: UpdateRequest, old_version: str | None, message: str) -> UpdateResult:
    from ._errors import UpdateInProgressError

    return UpdateResult.failed(request, old_version, UpdateInProgressError(message))
