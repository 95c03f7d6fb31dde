"""Per-agent log files: opened for the child, rotated by size, read back with tail.

An agent writes its stdout and stderr straight into its log file, opened ``O_APPEND``: no
pipe sits between them, so the agent never blocks or dies of SIGPIPE when the supervisor
is busy or gone, and the file keeps filling while a new daemon adopts the agent.

Rotation (``max_bytes``, ``backups``) happens in two ways:

* before a spawn, by renaming (``x.log`` -> ``x.log.1`` -> ...): lossless, because no
  process holds the file;
* while the agent runs, by copy-then-truncate (what logrotate calls ``copytruncate``):
  the agent's descriptor stays valid and, being ``O_APPEND``, continues at the new end.
  Lines written between the end of the copy and the truncation (microseconds) are lost;
  that is the price of not owning a pipe.

A log path that is not a regular file (``/dev/stdout``, a FIFO, a terminal) is written to
but never rotated, and never seeked (supervisord's "Illegal seek", issue #1224).

The file is opened for a new process in the worker thread that spawns it (see
:func:`supervisor._process.spawn`), while the shared rotation tick runs in the Trio thread:
a lock per log keeps the two rotations from interleaving.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading

__all__ = ["MAX_TAIL_LINES", "AgentLog"]

#: The seed's GetAgentLogs limit.
MAX_TAIL_LINES = 1000
_BLOCK = 64 * 1024


class AgentLog:
    """One agent's log file.

    Args:
        path: The log file.
        max_bytes: Rotate past this size; 0 disables rotation.
        backups: Rotated files kept.
    """

    __slots__ = ("_lock", "backups", "max_bytes", "path", "rotated_bytes")

    def __init__(self, path: str, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        # Bytes rotated away from the current file so far: with its size, a position in
        # the agent's whole output that only grows (see position()).
        self.rotated_bytes = 0
        self._lock = threading.Lock()

    def open_for_child(self) -> int:
        """Open the file for a new process's stdout/stderr; the caller closes the fd.

        Rotates first (by renaming) when the file is over its limit, and creates the
        directory when it is missing. Two system calls in the common case (at start-up,
        hundreds of spawns each make one): a stat and the open.
        """
        with self._lock:
            try:
                st: os.stat_result | None = os.stat(self.path)
            except FileNotFoundError:
                st = None
            if st is not None and not stat.S_ISREG(st.st_mode):
                return os.open(self.path, os.O_RDWR | os.O_CLOEXEC)  # a FIFO: never blocks
            if st is not None:
                self._rotate(st, running=False)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            try:
                return os.open(self.path, flags, 0o640)
            except FileNotFoundError:  # the directory is missing
                os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
                return os.open(self.path, flags, 0o640)

    def _is_special(self) -> bool:
        try:
            return not stat.S_ISREG(os.stat(self.path).st_mode)
        except FileNotFoundError:
            return False

    def rotate_if_needed(self, *, running: bool) -> bool:
        """Rotate when the file has outgrown ``max_bytes``.

        Args:
            running: Whether a process may be writing to the file now (copy-truncate)
                or not (rename).

        Returns:
            Whether a rotation happened.
        """
        if self.max_bytes <= 0:
            return False
        with self._lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                return False
            return self._rotate(st, running=running)

    def _rotate(self, st: os.stat_result, *, running: bool) -> bool:
        """Rotate the file whose status is ``st`` if it has outgrown ``max_bytes``."""
        if self.max_bytes <= 0 or not stat.S_ISREG(st.st_mode) or st.st_size <= self.max_bytes:
            return False
        self._shift_backups()
        if self.backups == 0:
            os.truncate(self.path, 0)
            self.rotated_bytes += st.st_size
        elif running:
            self.rotated_bytes += self._copy_truncate(f"{self.path}.1")
        else:
            os.replace(self.path, f"{self.path}.1")
            self.rotated_bytes += st.st_size
        return True

    def _shift_backups(self) -> None:
        if self.backups == 0:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self.path}.{self.backups}")
        for index in range(self.backups - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}.{index}", f"{self.path}.{index + 1}")

    def _copy_truncate(self, target: str) -> int:
        """Copy the file to ``target`` and truncate it; return the bytes copied."""
        total = 0
        src = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
            try:
                # Copy to the end as it is at each step, so the loss window stays tiny.
                while True:
                    copied = os.copy_file_range(src, dst, 1 << 30)
                    if copied == 0:
                        break
                    total += copied
                os.truncate(self.path, 0)
            finally:
                os.close(dst)
        finally:
            os.close(src)
        return total

    def position(self) -> int:
        """Where the agent's output is now: bytes written since this log was opened by the
        supervisor, rotations included. Only grows (a mark for :meth:`tail_since`)."""
        try:
            size = os.stat(self.path).st_size if not self._is_special() else 0
        except FileNotFoundError:
            size = 0
        return self.rotated_bytes + size

    def tail_since(self, position: int, lines: int = 100) -> list[str]:
        """The last ``lines`` lines written after :meth:`position` returned ``position``.

        Reads the current file from that point, and the newest backup first when the
        point lies before the last rotation (older output is not looked for).

        Raises:
            ValueError: ``lines`` out of range.
        """
        if not 1 <= lines <= MAX_TAIL_LINES:
            raise ValueError(f"lines must be between 1 and {MAX_TAIL_LINES}; got {lines!r}")
        if self._is_special():
            return []
        offset = position - self.rotated_bytes
        data = b""
        if offset < 0:
            data = _read_from(f"{self.path}.1", offset)  # from the end of the backup
            offset = 0
        data += _read_from(self.path, offset)
        found = data.split(b"\n")
        if found and found[-1] == b"":
            found.pop()
        return [line.decode(errors="replace") for line in found[-lines:]]

    def files(self) -> list[str]:
        """The current file and its existing backups, newest first."""
        names = [self.path]
        names += [f"{self.path}.{i}" for i in range(1, self.backups + 1)]
        return [name for name in names if os.path.exists(name)]

    def tail(self, lines: int = 100) -> list[str]:
        """The last ``lines`` lines, continuing into backups when the file is short.

        Args:
            lines: How many lines, 1 to :data:`MAX_TAIL_LINES`.

        Returns:
            Lines without their newline, oldest first; undecodable bytes replaced.

        Raises:
            ValueError: ``lines`` out of range.
        """
        if not 1 <= lines <= MAX_TAIL_LINES:
            raise ValueError(f"lines must be between 1 and {MAX_TAIL_LINES}; got {lines!r}")
        collected: list[bytes] = []
        for name in self.files():
            if self._is_special_path(name):
                break
            chunk = _last_lines(name, lines - len(collected))
            collected = chunk + collected
            if len(collected) >= lines:
                break
        return [line.decode(errors="replace") for line in collected[-lines:]]

    @staticmethod
    def _is_special_path(name: str) -> bool:
        try:
            return not stat.S_ISREG(os.stat(name).st_mode)
        except FileNotFoundError:
            return True


def _read_from(path: str, offset: int) -> bytes:
    """The bytes of a file from ``offset`` (from its end when negative), at most 1 MiB."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            start = end + offset if offset < 0 else offset
            start = min(max(start, end - (1 << 20), 0), end)
            f.seek(start)
            return f.read(end - start)
    except OSError:
        return b""


def _last_lines(path: str, wanted: int) -> list[bytes]:
    """Read the last ``wanted`` lines of a regular file by reading blocks from its end."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        position = end
        data = b""
        while position > 0 and data.count(b"\n") <= wanted:
            step = min(_BLOCK, position)
            position -= step
            f.seek(position)
            data = f.read(step) + data
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if position > 0:
        lines = lines[1:]  # the first one is probably cut
    return lines[-wanted:] if wanted else []
