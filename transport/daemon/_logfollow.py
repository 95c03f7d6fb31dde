"""Following an agent's log file as it grows, across rotation (FollowAgentLogs).

Theory of operation
-------------------
An agent writes its output straight into its log file (``O_APPEND``, see
:mod:`supervisor._logs`), so following it means reading the file as it grows. There is no
change notification to wait for; :class:`LogFollower` is polled (a ``stat`` and at most one
bounded read per call, cheap enough for a few polls a second) and handles both ways the
supervisor rotates a log:

* *rename* (before a spawn): the path now names a new file. The old descriptor is read to
  its end first, then the new file is opened and read from its start;
* *copy-then-truncate* (while the agent runs): the file is emptied, and may have grown
  again by the next poll. That is seen by the last bytes before our position, which no
  longer are the ones read there (or the file is shorter than our position). What was
  written after our last read was copied into ``<log>.1`` just before the truncation: it
  is read from there, from our position on, then the file again from its start.

A file that disappears is waited for. Lines are split on ``\\n`` and decoded as UTF-8
(invalid bytes replaced); a line longer than :data:`MAX_LINE_BYTES` is cut there (the rest
follows as further lines); a last line without its newline is held back until it is
completed, or until the file has been quiet for :data:`PARTIAL_FLUSH_POLLS` polls.

Synchronous and unthreaded on purpose: reads of a local regular file are bounded
(:data:`READ_BYTES` per call) and do not block on anything but the page cache.
"""

from __future__ import annotations

import contextlib
import os
import stat

__all__ = [
    "MAX_LINE_BYTES",
    "PARTIAL_FLUSH_POLLS",
    "READ_BYTES",
    "LogFollower",
    "NotFollowableError",
]

MAX_LINE_BYTES = 16 * 1024
"""Longest line sent as one; longer ones are cut into pieces of this size."""
READ_BYTES = 256 * 1024
"""At most this much is read per :meth:`LogFollower.poll`."""
PARTIAL_FLUSH_POLLS = 4
"""A line without its newline is sent after this many polls that found nothing new."""
_BLOCK = 64 * 1024
_MARK_BYTES = 64


class NotFollowableError(OSError):
    """The log path is not a regular file (a FIFO, a terminal, ``/dev/stdout``)."""


class LogFollower:
    """New lines of one log file, read by polling.

    Args:
        path: The log file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._position = 0
        self._partial = b""
        self._quiet = 0
        self._mark = b""  # the last bytes before our position, as we read them

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def start(self, history: int) -> list[str]:
        """Open the file at its end.

        Args:
            history: How many of the lines before the end to return (0 to 1000).

        Returns:
            Those lines, oldest first (from ``<log>.1`` too when the file is shorter).

        Raises:
            NotFollowableError: The path is not a regular file.
            OSError: It cannot be read.
        """
        if not self._open(at_end=True):
            return [_decode(line) for line in _last_lines_of(f"{self.path}.1", history)]
        assert self._fd is not None
        # A last line still being written is left to poll(), to come out whole.
        tail = os.pread(self._fd, MAX_LINE_BYTES, max(0, self._position - MAX_LINE_BYTES))
        if tail and not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n")
            if cut >= 0 or self._position <= MAX_LINE_BYTES:
                self._position -= len(tail) - (cut + 1)
        start = max(0, self._position - _MARK_BYTES)
        self._mark = os.pread(self._fd, self._position - start, start)
        lines = _last_lines(self._fd, self._position, history) if history else []
        if len(lines) < history:
            lines = _last_lines_of(f"{self.path}.1", history - len(lines)) + lines
        return [_decode(line) for line in lines]

    def poll(self) -> tuple[list[str], bool]:
        """Read what was written since the last call.

        Returns:
            The new complete lines, oldest first, and whether more is waiting to be read
            (the read limit was reached: call again at once).

        Raises:
            NotFollowableError: The path became something other than a regular file.
            OSError: The file cannot be read.
        """
        if self._fd is None and not self._open(at_end=False):
            return self._flush_if_quiet(), False
        assert self._fd is not None
        data = b""
        if self._truncated():  # copy-then-truncate: the rest went to <log>.1
            data = self._rest_of_copy()
            self._position, self._mark = 0, b""
        budget = READ_BYTES - len(data)
        chunk = os.pread(self._fd, budget, self._position) if budget > 0 else b""
        self._position += len(chunk)
        if chunk:
            self._mark = (self._mark + chunk)[-_MARK_BYTES:]
        data += chunk
        more = len(data) >= READ_BYTES
        if not more and not chunk and self._replaced():
            self.close()  # renamed away, and read to its end: the new file is next
            more = True
        if not data:
            return self._flush_if_quiet(), more
        self._quiet = 0
        return self._split(self._partial + data), more

    # -- internals ------------------------------------------------------------------------

    def _open(self, *, at_end: bool) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return False
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise NotFollowableError(f"{self.path} is not a regular file; it cannot be followed")
        self._fd = fd
        self._identity = (info.st_dev, info.st_ino)
        self._position = info.st_size if at_end else 0
        self._mark = b""
        return True

    def _truncated(self) -> bool:
        """Whether the bytes just before our position are no longer what we read there
        (the file shrank, or shrank and grew again past it)."""
        assert self._fd is not None
        if not self._position:
            return False
        if os.fstat(self._fd).st_size < self._position:
            return True
        start = self._position - len(self._mark)
        return bool(self._mark) and os.pread(self._fd, len(self._mark), start) != self._mark

    def _rest_of_copy(self) -> bytes:
        """What ``<log>.1`` holds beyond our position, if it is the copy of what we read."""
        start = self._position - len(self._mark)
        copy = _read_range(f"{self.path}.1", start, READ_BYTES + len(self._mark))
        if not copy.startswith(self._mark):
            return b""  # no copy (backups: 0), or not of this file: nothing to recover
        return copy[len(self._mark) :][:READ_BYTES]

    def _replaced(self) -> bool:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return False  # rotated away and not yet recreated: keep reading the old one
        return (info.st_dev, info.st_ino) != self._identity

    def _split(self, data: bytes) -> list[str]:
        pieces = data.split(b"\n")
        self._partial = pieces.pop()
        lines = [_decode(piece) for line in pieces for piece in _cut(line)]
        while len(self._partial) > MAX_LINE_BYTES:
            lines.append(_decode(self._partial[:MAX_LINE_BYTES]))
            self._partial = self._partial[MAX_LINE_BYTES:]
        return lines

    def _flush_if_quiet(self) -> list[str]:
        if not self._partial:
            return []
        self._quiet += 1
        if self._quiet < PARTIAL_FLUSH_POLLS:
            return []
        line, self._partial, self._quiet = self._partial, b"", 0
        return [_decode(line)]


def _cut(line: bytes) -> list[bytes]:
    if len(line) <= MAX_LINE_BYTES:
        return [line]
    return [line[i : i + MAX_LINE_BYTES] for i in range(0, len(line), MAX_LINE_BYTES)]


def _decode(line: bytes) -> str:
    return line.decode("utf-8", errors="replace")


def _read_range(path: str, start: int, limit: int) -> bytes:
    """Bytes of ``path`` from ``start`` on (at most ``limit``); empty if none or absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.pread(fd, limit, start)
    finally:
        os.close(fd)


def _last_lines_of(path: str, wanted: int) -> list[bytes]:
    """The last ``wanted`` complete lines of the regular file ``path`` (none if absent)."""
    if wanted <= 0:
        return []
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode):
                return _last_lines(fd, info.st_size, wanted)
        finally:
            os.close(fd)
    return []


def _last_lines(fd: int, end: int, wanted: int) -> list[bytes]:
    """The last ``wanted`` lines before offset ``end`` of ``fd`` (a final partial line
    counts; one cut by the start of the read is dropped)."""
    position, data = end, b""
    while position > 0 and data.count(b"\n") <= wanted:
        step = min(_BLOCK, position)
        position -= step
        data = os.pread(fd, step, position) + data
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if position > 0:
        lines = lines[1:]
    return [piece for line in lines[-wanted:] for piece in _cut(line)][-wanted:]
