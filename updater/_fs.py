"""Atomic file-system operations on real files (synchronous; the async shell runs them in a
worker thread).

Theory of operation
-------------------
``rename`` is atomic but only durable once the parent directory is fsynced, so every
replacement here is: write a temp file in the *same directory* as the destination, fsync it,
rename it over the destination, fsync the directory. A crash at any point leaves either the
old or the new file at the destination (plus, at worst, a temp file named
``.hostvisor-tmp-*`` that :func:`clean_temp` removes). Directories are switched with a symlink
swap: a temp symlink renamed over the ``current`` link.

Copies hash the bytes *as they are written*, so the content checked is exactly the content
installed: a staged file altered after its download was verified is caught here.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from ._errors import ApplyError, HashMismatchError, Reason, VerificationError

__all__ = [
    "TEMP_PREFIX",
    "atomic_write",
    "clean_temp",
    "copy_verified",
    "discard",
    "fsync_dir",
    "read_link",
    "sha256_file",
    "swap_symlink",
    "tree_digest",
    "unpack_archive",
]

TEMP_PREFIX = ".hostvisor-tmp-"
_CHUNK = 1 << 20
ChunkWriter = Callable[[int, bytes], int]


def _temp_name(directory: Path, hint: str) -> Path:
    return directory / f"{TEMP_PREFIX}{hint}-{secrets.token_hex(6)}"


def _io_error(action: str, exc: OSError) -> ApplyError:
    reason = Reason.DISK_FULL if exc.errno in (errno.ENOSPC, errno.EDQUOT) else Reason.IO_ERROR
    return ApplyError(reason, f"{action}: {exc}")


def fsync_dir(directory: Path) -> None:
    """fsync a directory so renames and unlinks in it are durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    Raises:
        ApplyError: ``disk_full`` or ``io_error``; ``path`` is then unchanged.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_name(path.parent, path.name)
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
        fsync_dir(path.parent)
    except OSError as exc:
        discard(temp)
        raise _io_error(f"cannot write {path}", exc) from exc


def sha256_file(path: Path) -> str:
    """SHA-256 hex of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_verified(
    source: Path, dest: Path, sha256: str, *, mode: int, write: ChunkWriter = os.write
) -> None:
    """Copy ``source`` over ``dest`` atomically, checking the bytes written hash to ``sha256``.

    Args:
        source: File to copy.
        dest: Destination (replaced by one rename; never missing, never partial).
        sha256: Required SHA-256 hex of the content.
        mode: Permission bits of the new file.
        write: The write seam (``os.write``).

    Raises:
        HashMismatchError: The source does not have ``sha256``; ``dest`` is unchanged.
        ApplyError: ``disk_full`` or ``io_error``; ``dest`` is unchanged.
    """
    temp = _temp_name(dest.parent, dest.name)
    try:
        digest = hashlib.sha256()
        with source.open("rb") as stream:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                while chunk := stream.read(_CHUNK):
                    digest.update(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[write(fd, view.tobytes()) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        if digest.hexdigest() != sha256:
            raise HashMismatchError(
                f"{source} has sha256 {digest.hexdigest()}, expected {sha256}; not installed"
            )
        os.chmod(temp, mode)
        os.replace(temp, dest)
        fsync_dir(dest.parent)
    except OSError as exc:
        discard(temp)
        raise _io_error(f"cannot copy {source} to {dest}", exc) from exc
    except BaseException:
        discard(temp)
        raise


def discard(path: Path) -> None:
    """Remove a file, symlink or directory tree if it exists (then fsync its directory)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


def clean_temp(directory: Path) -> list[Path]:
    """Remove temp files a crash left in ``directory``; returns what was removed."""
    removed = []
    if directory.is_dir():
        for entry in directory.iterdir():
            if entry.name.startswith(TEMP_PREFIX):
                discard(entry)
                removed.append(entry)
    return removed


def read_link(link: Path) -> str | None:
    """The absolute destination of symlink ``link``, or None if it is not a symlink."""
    try:
        dest = os.readlink(link)
    except OSError:
        return None
    return os.path.normpath(os.path.join(link.parent, dest))


def swap_symlink(link: Path, dest: Path) -> None:
    """Atomically point ``link`` at ``dest`` (relative link if ``dest`` is a sibling tree)."""
    temp = _temp_name(link.parent, link.name)
    target = os.path.relpath(dest, link.parent)
    try:
        os.symlink(target, temp)
        os.replace(temp, link)
        fsync_dir(link.parent)
    except OSError as exc:
        discard(temp)
        raise _io_error(f"cannot switch {link} to {dest}", exc) from exc


def tree_digest(root: Path) -> str:
    """A digest of a directory tree: paths, types, exec bits, file hashes, link targets.

    Raises:
        FileNotFoundError: If ``root`` is not a directory.
    """
    if not root.is_dir():
        raise FileNotFoundError(root)
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                entry = f"l {rel} {os.readlink(path)}"
            elif stat.S_ISDIR(info.st_mode):
                entry = f"d {rel}"
            elif stat.S_ISREG(info.st_mode):
                executable = "x" if info.st_mode & 0o111 else "-"
                entry = f"f {rel} {executable} {sha256_file(path)}"
            else:
                entry = f"? {rel}"
            digest.update(entry.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def _check_member(member: tarfile.TarInfo) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts or not member.name.strip("/."):
        raise VerificationError(Reason.BAD_ARCHIVE, f"unsafe path in archive: {member.name!r}")
    if member.issym() or member.islnk():
        link = PurePosixPath(member.linkname)
        base = name.parent if member.issym() else PurePosixPath()
        resolved = os.path.normpath(base / link)
        if link.is_absolute() or resolved == ".." or resolved.startswith("../"):
            raise VerificationError(
                Reason.BAD_ARCHIVE, f"link {member.name!r} points outside: {member.linkname!r}"
            )
    elif not (member.isfile() or member.isdir()):
        raise VerificationError(Reason.BAD_ARCHIVE, f"special file in archive: {member.name!r}")


def unpack_archive(archive: Path, dest: Path) -> str:
    """Unpack a verified tar archive into a new directory ``dest`` atomically.

    Members with absolute paths, ``..``, links pointing outside the tree, or device files
    are refused before anything is written. Unpacking goes to a temp directory next to
    ``dest``, which is fsynced and renamed into place.

    Returns:
        The tree digest of the unpacked directory.

    Raises:
        VerificationError: ``bad_archive``.
        ApplyError: ``disk_full`` or ``io_error``.
    """
    temp = _temp_name(dest.parent, dest.name)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member)
            temp.mkdir(mode=0o755)
            tar.extractall(temp, members=members, filter="data")
        for dirpath, _dirs, files in os.walk(temp):
            for name in files:
                path = Path(dirpath) / name
                if not path.is_symlink():
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            fsync_dir(Path(dirpath))
        digest = tree_digest(temp)
        os.replace(temp, dest)
        fsync_dir(dest.parent)
        return digest
    except (tarfile.TarError, EOFError) as exc:
        discard(temp)
        raise VerificationError(Reason.BAD_ARCHIVE, f"cannot unpack {archive}: {exc}") from exc
    except OSError as exc:
        discard(temp)
        raise _io_error(f"cannot unpack {archive}", exc) from exc
    except BaseException:
        discard(temp)
        raise
