"""The update manager: the seed's UpdateManager as a Trio shell over the pure parts.

Theory of operation
-------------------
``UpdateManager.update()`` runs one request end to end and always returns an
:class:`~updater.UpdateResult` (it raises only on cancellation):

1. **Lock.** One update at a time; a second request gets ``busy`` at once. An unfinished
   journal (recovery pending) also makes requests ``busy``.
2. **Verify the envelope** against the keyring, the floor and the clock *before* any byte
   is downloaded (:func:`updater._verify.verify_statement`), and refuse a request whose
   install was already tried (``replayed``, see :mod:`updater._replay`). Oversized request
   fields are refused first (``bad_request``).
3. **Download** from the URL, then the mirrors, each under every limit, into a private
   staging file; check its streamed SHA-256 and length against the statement (a legacy
   request: check the seed's signature over the streamed digest). A failing URL moves on to
   the next; if all fail, the error names every URL's failure (its reason is the last one's).
4. **Version check** (legacy artifacts always, others if the target asks for it): run the
   new executable with its ``version_args`` in a scratch directory; it must print the
   version being installed (:mod:`updater._versioncheck`). Nothing is switched otherwise.
5. **Install** through the journalled plan (:mod:`updater._plan`), executed on real files
   in a worker thread (:mod:`updater._executor`). For an agent (:mod:`updater._agentupdate`):
   back up, stop it through :class:`~updater.AgentControl`, switch, start it, and run the
   trial: within ``trial_s`` it must become ready and must not exit. Then commit (raise the
   floor, prune backups) or roll back (restore, restart the previous version, report the
   failed version's log tail). A cancellation puts the old version back, shielded and
   bounded by ``cancel_cleanup_s``, or leaves the journal for the next start.
6. **Recovery.** :meth:`UpdateManager.recover` is called once at daemon start, before the
   agents start: it finishes or undoes whatever a crash interrupted and says what it did,
   and what is in place for every agent (:mod:`updater._recovery`).

The daemon itself is updated by :mod:`updater._selfupdate`, which shares steps 1 to 3.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import trio

from ._agentupdate import update_agent
from ._config import AgentTarget, UpdateConfig
from ._control import AgentControl
from ._download import ChunkWriter, Downloaded, FreeSpace, _free_space, download
from ._envelope import Keyring, Statement, format_time
from ._errors import (
    ApplyError,
    DownloadError,
    HashMismatchError,
    Reason,
    UpdateInProgressError,
    UpdaterError,
    VerificationError,
)
from ._executor import Executor, Hook
from ._fs import discard, read_link, sha256_file
from ._layout import adopt_tree, version_of_directory
from ._plan import Journal, Release
from ._recovery import AgentInPlace, RecoveryReport, in_place, recover_locked
from ._replay import Tried, find, legacy_identity
from ._request import UpdateRequest, UpdateResult, check_request
from ._store import StateStore
from ._trust import load_keyring
from ._verify import Floor, check_artifact, verify_keyring_rotation, verify_legacy_signature

__all__ = ["DAEMON_COMPONENT", "DaemonUpdater", "Fetched", "RecoveryReport", "UpdateManager"]

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
class Fetched:
    """A downloaded artifact that passed verification.

    Attributes:
        staged: The staging file.
        version: The version it was verified as.
        counter: Its signed counter (-1 for a legacy request).
        identity: Its signed identity (see :mod:`updater._replay`).
        expires: When its statement expires, Unix seconds (None for a legacy request).
        legacy: Accepted through a legacy key (no signed version: check it locally).
    """

    staged: Downloaded
    version: str
    counter: int
    identity: str
    expires: int | None
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
        cancel_cleanup_s: How long (Trio seconds) a cancelled agent update may spend putting
            the old version back before it leaves the journal to the next start. Keep it
            below the service manager's stop timeout (``TimeoutStopSec=60`` in
            ``updater/contrib/hostvisor.service``), with room for the rest of the shutdown.
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
        cancel_cleanup_s: float = 30.0,
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
        self.cancel_cleanup_s = cancel_cleanup_s
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
        """Finish or undo a transaction interrupted by a crash (call at daemon start, before
        any agent is started); also removes what a killed update left half-written.

        Returns:
            What was found and done, or None if no transaction was open. A daemon
            self-update in its trial reports ``continue_trial`` (see ``updater.selfupdate``).
            ``agents`` says what is in place for every agent, and which must be restarted
            (see :mod:`updater._recovery` for what the daemon must do with it).

        Raises:
            RollbackError: Nothing intact to restore; the journal stays for a human.
            UpdateInProgressError: Another process holds the update lock.
        """
        return await trio.to_thread.run_sync(self._recover_sync)

    def _recover_sync(self) -> RecoveryReport | None:
        lock_fd = _lock_state_dir(self.config.state_dir)
        if lock_fd is None:
            raise UpdateInProgressError("another process holds the update lock")
        try:
            return self.recover_held()
        finally:
            os.close(lock_fd)

    def recover_held(self) -> RecoveryReport | None:
        """:meth:`recover`, synchronously, for a caller that holds the update lock."""
        return recover_locked(self)

    async def in_place(self) -> tuple[AgentInPlace, ...]:
        """What is in place for every updatable agent now: its recorded version and the
        identity of its binary (see :class:`~updater.AgentInPlace`; ``restart_required`` is
        only ever set in a :class:`~updater.RecoveryReport`)."""
        return await trio.to_thread.run_sync(in_place, self.store, tuple(self.agents.values()))

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
            check_request(request)
            if request.component in self.agents:
                return await update_agent(self, request, self.agents[request.component])
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
    ) -> tuple[Keyring, Statement | None, str]:
        """Verify the envelope before downloading, and refuse a replay.

        Returns:
            The keyring, the statement (None for a legacy request) and the request's signed
            identity (see :mod:`updater._replay`).

        Raises:
            VerificationError: The envelope was refused, or the request was already tried
                (``replayed``).
        """
        keyring = await trio.to_thread.run_sync(self.keyring)
        statement: Statement | None = None
        if request.envelope is not None:
            from ._verify import verify_statement

            verified = verify_statement(
                request.envelope,
                keyring,
                component=request.component,
                platform=self.config.platform,
                version=request.version,
                floor=floor,
                now=self.wall_clock(),
                max_length=self.config.limits.max_bytes,
            )
            statement, identity = verified.statement, verified.identity
            if request.hash and request.hash.lower() != statement.sha256:
                raise HashMismatchError("the request's hash differs from the signed one")
        elif not (request.signature and request.hash):
            raise VerificationError(Reason.BAD_ENVELOPE, "no envelope and no legacy signature")
        else:
            identity = legacy_identity(request.component, request.hash)
        remembered = await trio.to_thread.run_sync(self.store.tried, request.component)
        tried = find(remembered, identity, now=self.wall_clock(), floor=floor)
        if tried is not None:
            raise VerificationError(
                Reason.REPLAYED,
                f"this signed request for {request.component} {tried.version} was already"
                f" tried at {format_time(tried.tried_at)} and did not succeed; a new release"
                " (a new signed statement, with a higher counter) is needed",
            )
        return keyring, statement, identity

    async def remember_tried(self, component: str, fetched: Fetched) -> None:
        """Record that ``fetched`` is about to be switched in: a replay of its request is
        then refused (see :mod:`updater._replay`). Durable before it returns.

        Raises:
            ApplyError: The record cannot be written (``disk_full``, ``io_error``).
        """
        now = self.wall_clock()
        entry = Tried(fetched.identity, fetched.version, fetched.counter, fetched.expires, int(now))
        await trio.to_thread.run_sync(partial(self.store.remember_tried, component, entry, now=now))

    async def fetch(self, request: UpdateRequest, floor: Floor) -> Fetched:
        """Verify the request, download the artifact and check it (steps 2 and 3).

        Raises:
            VerificationError: The envelope or artifact was refused.
            DownloadError: Every URL failed; the error is the last one's, and its message
                names every URL's failure.
        """
        keyring, statement, identity = await self.verify_request(request, floor)
        expires = statement.expires if statement else None
        failures: list[tuple[str, UpdaterError]] = []
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
                failures.append((url, exc))
                continue
            try:
                if statement is not None:
                    check_artifact(statement, staged.sha256, staged.length)
                    return Fetched(staged, statement.version, statement.counter, identity, expires)
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
                return Fetched(staged, request.version, -1, identity, None, legacy=True)
            except VerificationError as exc:
                await trio.to_thread.run_sync(discard, staged.path)
                if exc.reason not in (Reason.HASH_MISMATCH, Reason.LENGTH_MISMATCH):
                    raise
                failures.append((url, exc))
        raise _every_failure(failures)

    async def run_steps(self, steps: Sequence[object]) -> None:
        """Run plan actions in a worker thread (they fsync)."""
        await trio.to_thread.run_sync(self.executor.run_all, list(steps))  # type: ignore[arg-type]


def _every_failure(failures: Sequence[tuple[str, UpdaterError]]) -> UpdaterError:
    """The last failure, its message naming every URL's (with mirrors, each may differ)."""
    last = failures[-1][1]
    if len(failures) > 1:
        each = "; ".join(f"{_short(url)}: {exc}" for url, exc in failures)
        # The error keeps its class, reason and code; only its text covers every URL.
        last.args = (f"{last.reason.value}: all {len(failures)} URLs failed: {each}",)
    return last


def _short(url: str) -> str:
    return url if len(url) <= 200 else f"{url[:197]}..."


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
    return UpdateResult.failed(request, old_version, UpdateInProgressError(message))
