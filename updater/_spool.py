"""A private spool directory: the local way to hand update requests to a running daemon.

Theory of operation
-------------------
Until a network transport exists, a client (``python -m supervisor update``) and the daemon
exchange files in one directory that only the daemon's user may write::

    <spool>/                     mode 0700, owned by the daemon's user
      <name>.json                a pending request (:meth:`UpdateRequest.to_dict`)
      <name>.result.json         its result (:meth:`UpdateResult.to_dict`)
      done/<name>.json           requests the daemon has answered
      done/<name>.result.json    results the client has collected
      .hostvisor-tmp-*           a file being written (ignored)

Every file appears by an atomic rename (:func:`updater._fs.atomic_write`), so a reader never
sees half a request or half a result. The daemon answers a request by writing its result
*first* and then moving the request to ``done/``: after a crash between the two, the next
scan finds a request that already has a result and only finishes the move, so no request is
ever run twice. Requests are taken oldest first.

Answered requests do not pile up: after every answer (and when the daemon creates the spool
at its start) :meth:`Spool.prune` keeps the newest :data:`~updater._retention.KEEP_ANSWERED`
(100) answered requests with their results, collected or not, and removes any older than
:data:`~updater._retention.MAX_AGE_S` (7 days); a temp file untouched for an hour was left by
a killed writer and is removed too. Pending requests are never removed.

The directory is trusted only if it is a real directory (not a symlink) owned by the
effective user and not writable by group or others; the same holds for every request file
(which is also opened without following links and size-capped), because whoever can drop a
request there can make the daemon download and try to install something.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._errors import Reason, SpoolError, VerificationError
from ._fs import TEMP_PREFIX, atomic_write, fsync_dir
from ._request import UpdateRequest, UpdateResult
from ._retention import KEEP_ANSWERED, MAX_AGE_S, forgotten, stale

__all__ = ["MAX_REQUEST_BYTES", "Spool"]

MAX_REQUEST_BYTES = 1 << 20
"""Largest request file read (an envelope is a few kB)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_REQUEST_SUFFIX = ".json"
_RESULT_SUFFIX = ".result.json"


class Spool:
    """Requests and results in a private directory (synchronous; run it from a thread).

    Args:
        directory: The spool directory (``{work_dir}/updates`` for the daemon).
        keep_answered: Answered requests kept (see :meth:`prune`).
        max_age_s: Age from which answered requests are removed.
        wall_clock: Unix time (``time.time``), compared with the files' mtimes.
    """

    def __init__(
        self,
        directory: Path,
        *,
        keep_answered: int = KEEP_ANSWERED,
        max_age_s: float = MAX_AGE_S,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.done = directory / "done"
        self.keep_answered = keep_answered
        self.max_age_s = max_age_s
        self.wall_clock = wall_clock

    # --- the directory -------------------------------------------------------------------

    def create(self) -> None:
        """Create the spool (mode 0700) if missing, then :meth:`check` and :meth:`prune` it.

        Raises:
            SpoolError: It cannot be created, is not private, or cannot be pruned.
        """
        for directory in (self.directory, self.done):
            try:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise SpoolError(f"cannot create the spool {directory}: {exc}") from exc
        self.check()
        try:
            self.prune()
        except OSError as exc:
            raise SpoolError(f"cannot prune the spool {self.directory}: {exc}") from exc

    def prune(self) -> list[Path]:
        """Remove old answers: keep the newest ``keep_answered`` answered requests (with
        their results, collected or not), none older than ``max_age_s``; and temp files a
        killed writer left (untouched for an hour). Pending requests are never removed.

        Returns:
            The files removed.

        Raises:
            OSError: A file could not be removed (one that vanished meanwhile is fine).
        """
        now = self.wall_clock()
        answered: dict[str, float] = {}
        files: dict[str, list[Path]] = {}
        waiting: set[str] = set()
        removed: list[Path] = []
        for directory in (self.directory, self.done):
            for entry in os.scandir(directory):
                if not entry.is_file(follow_symlinks=False):
                    continue
                modified = entry.stat(follow_symlinks=False).st_mtime
                if entry.name.startswith(TEMP_PREFIX):
                    if stale(modified, now=now):
                        removed += _unlink(Path(entry.path))
                    continue
                name = entry.name.removesuffix(_RESULT_SUFFIX).removesuffix(_REQUEST_SUFFIX)
                if not _NAME.match(name):
                    continue
                files.setdefault(name, []).append(Path(entry.path))
                if directory == self.done or entry.name.endswith(_RESULT_SUFFIX):
                    answered[name] = max(answered.get(name, modified), modified)
                else:
                    waiting.add(name)  # not yet moved to done/: pending() finishes it
        for name in waiting:
            answered.pop(name, None)
        doomed = forgotten(answered, now=now, keep=self.keep_answered, max_age_s=self.max_age_s)
        for name in sorted(doomed):
            for path in files[name]:
                if path.parent == self.done or path.name.endswith(_RESULT_SUFFIX):
                    removed += _unlink(path)
        if removed:
            fsync_dir(self.done)
            fsync_dir(self.directory)
        return removed

    def check(self) -> None:
        """Refuse a spool that someone other than us could write to.

        Raises:
            SpoolError: Missing, a symlink or no directory, owned by another user, or
                writable by group or others (the message says which).
        """
        for directory in (self.directory, self.done):
            try:
                info = os.lstat(directory)
            except FileNotFoundError:
                raise SpoolError(
                    f"no spool at {directory} (is a daemon with updates enabled running?)"
                ) from None
            except OSError as exc:
                raise SpoolError(f"cannot inspect the spool {directory}: {exc}") from exc
            _check_private(directory, info, "spool", stat.S_ISDIR)

    # --- the client's side ---------------------------------------------------------------

    def submit(self, request: UpdateRequest) -> str:
        """Drop ``request`` into the spool atomically.

        Returns:
            The request's name (its result appears as ``<name>.result.json``).

        Raises:
            SpoolError: The spool is not private.
            ApplyError: The file cannot be written (``disk_full``, ``io_error``).
        """
        self.check()
        name = f"req-{secrets.token_hex(8)}"
        data = json.dumps(request.to_dict(), indent=1).encode()
        atomic_write(self.request_path(name), data, mode=0o600)
        return name

    def result(self, name: str) -> dict[str, Any] | None:
        """The result of request ``name`` if it has been answered (else None)."""
        try:
            data = self.result_path(name).read_bytes()
        except FileNotFoundError:
            return None
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise SpoolError(f"{self.result_path(name)} is not a result")
        return doc

    def collect(self, name: str) -> dict[str, Any] | None:
        """Read the result of request ``name`` and move it to ``done/`` (None if absent)."""
        doc = self.result(name)
        if doc is not None:
            _move(self.result_path(name), self.done / self.result_path(name).name)
        return doc

    def wait(
        self,
        name: str,
        *,
        timeout_s: float,
        alive: Callable[[], bool],
        poll_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict[str, Any] | None:
        """Wait for the result of request ``name`` and :meth:`collect` it.

        Args:
            name: The request.
            timeout_s: How long to wait at most.
            alive: Whether the daemon still runs (asked about once a second).
            poll_s: Pause between looks at the spool.
            clock: Monotonic seconds (``time.monotonic``).
            sleep: Blocking sleep (``time.sleep``).

        Returns:
            The result, or None when ``timeout_s`` passed or ``alive()`` turned false first
            (the request then stays queued; ask ``alive()`` which).
        """
        deadline = clock() + timeout_s
        next_check = clock() + 1.0
        while (result := self.collect(name)) is None:
            now = clock()
            if now >= deadline:
                return None
            if now >= next_check:
                next_check = now + 1.0
                if not alive():
                    return self.collect(name)  # it may have answered just before exiting
            sleep(poll_s)
        return result

    def is_pending(self, name: str) -> bool:
        """Whether request ``name`` is still waiting (or being processed)."""
        return self.request_path(name).exists()

    # --- the daemon's side ---------------------------------------------------------------

    def pending(self) -> list[str]:
        """Names of requests without a result, oldest first; finishes any half-answered one.

        Raises:
            SpoolError: The spool is not private.
        """
        self.check()
        found: list[tuple[int, str]] = []
        for entry in os.scandir(self.directory):
            name = entry.name.removesuffix(_REQUEST_SUFFIX)
            if (
                name == entry.name
                or entry.name.endswith(_RESULT_SUFFIX)
                or not _NAME.match(name)
                or not entry.is_file(follow_symlinks=False)
            ):
                continue
            if self.result_path(name).exists():  # answered, then interrupted: finish the move
                _move(self.request_path(name), self.done / entry.name)
                continue
            found.append((entry.stat(follow_symlinks=False).st_mtime_ns, name))
        return [name for _, name in sorted(found)]

    def read(self, name: str) -> UpdateRequest:
        """Read and strictly parse request ``name`` (see :meth:`load`).

        Raises:
            VerificationError: ``bad_request``.
        """
        return self.load(self.request_path(name), private=True)

    @staticmethod
    def load(path: Path, *, private: bool = False) -> UpdateRequest:
        """Read and strictly parse a request file (see :meth:`UpdateRequest.parse`).

        Args:
            path: The file; a symlink is refused.
            private: Also require it to be ours and not writable by group or others.

        Raises:
            VerificationError: ``bad_request``: unreadable, not a regular file, too large,
                not JSON, or not a valid request.
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise VerificationError(Reason.BAD_REQUEST, f"cannot open {path}: {exc}") from exc
        try:
            info = os.fstat(fd)
            try:
                if private:
                    _check_private(path, info, "request", stat.S_ISREG)
                elif not stat.S_ISREG(info.st_mode):
                    raise SpoolError(f"request {path} is not a regular file")
            except SpoolError as exc:
                raise VerificationError(Reason.BAD_REQUEST, str(exc)) from None
            if info.st_size > MAX_REQUEST_BYTES:
                raise VerificationError(
                    Reason.BAD_REQUEST, f"{path} has {info.st_size} bytes (at most 1 MiB)"
                )
            data = os.read(fd, MAX_REQUEST_BYTES + 1)
        finally:
            os.close(fd)
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise VerificationError(Reason.BAD_REQUEST, f"{path} is not JSON: {exc}") from exc
        return UpdateRequest.parse(doc)

    def finish(self, name: str, result: UpdateResult) -> None:
        """Answer request ``name``: write its result, then move the request to ``done/``.

        Raises:
            ApplyError: The result cannot be written (``disk_full``, ``io_error``).
        """
        data = json.dumps(result.to_dict(), indent=1).encode()
        atomic_write(self.result_path(name), data, mode=0o600)
        _move(self.request_path(name), self.done / self.request_path(name).name)
        try:
            self.prune()
        except OSError:
            pass  # the answer is written; the next answer or start prunes again

    # --- paths ---------------------------------------------------------------------------

    def request_path(self, name: str) -> Path:
        """Where request ``name`` waits."""
        return self.directory / f"{_checked(name)}{_REQUEST_SUFFIX}"

    def result_path(self, name: str) -> Path:
        """Where the result of request ``name`` appears."""
        return self.directory / f"{_checked(name)}{_RESULT_SUFFIX}"


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a spool request name: {name!r}")
    return name


def _check_private(
    path: Path, info: os.stat_result, what: str, is_kind: Callable[[int], bool]
) -> None:
    kind = "directory" if what == "spool" else "regular file"
    if not is_kind(info.st_mode):
        raise SpoolError(f"{what} {path} is not a {kind} (symlinks are refused)")
    if info.st_uid != os.geteuid():
        raise SpoolError(f"{what} {path} is owned by uid {info.st_uid}, not {os.geteuid()}")
    if info.st_mode & 0o022:
        mode = stat.S_IMODE(info.st_mode)
        raise SpoolError(f"{what} {path} is writable by group or others (mode {mode:04o})")


def _unlink(path: Path) -> list[Path]:
    """Remove ``path``; a file already gone (collected meanwhile) is fine."""
    try:
        path.unlink()
    except FileNotFoundError:
        return []
    return [path]


def _move(source: Path, dest: Path) -> None:
    """Rename ``source`` to ``dest`` durably; a missing source (moved already) is fine."""
    try:
        os.replace(source, dest)
    except FileNotFoundError:
        return
    fsync_dir(dest.parent)
    fsync_dir(source.parent)
