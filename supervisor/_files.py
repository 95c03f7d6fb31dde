"""Replacing a file so that a crash leaves the old or the new version, never a mix."""

from __future__ import annotations

import contextlib
import os

__all__ = ["atomic_write"]


def atomic_write(path: str, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    A uniquely named temporary file beside ``path`` is written, fsynced and renamed over
    ``path``; then the directory is fsynced, so the rename itself survives a power loss.
    The directory is created if needed. A temporary file left by a crash is never reused
    (each write has its own name) and is removed when the write fails.

    Args:
        path: The file to replace.
        data: Its new contents.
        mode: Permission bits of a newly created file (the umask applies).

    Raises:
        OSError: the file could not be written; ``path`` is then unchanged.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    temp = os.path.join(directory, f".{os.path.basename(path)}.{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
