"""Private Unix sockets: created so that only our uid can reach them, removed only if ours.

Theory of operation
-------------------
The heartbeat and sd_notify servers each listen on a socket file in one private
directory. :func:`bind_private_socket` creates such a file: the directory is created
``0700`` if missing; the socket is bound under a temporary name, ``chmod`` to ``0600``
and renamed into place, so it is never reachable with looser permissions. A stale socket
file (nobody listening) is replaced; a live one or anything that is not a socket is
refused with :class:`SocketSetupError`. :class:`PrivateSocket` binds early, so that setup
errors surface before serving, and hands the socket to its server once. On exit the
server removes the socket file with :func:`remove_socket_file`, only if it is still ours
(not a successor's). :func:`peer_credentials` is how a stream server learns from the
kernel who connected (``SO_PEERCRED``), never from what the peer writes.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct

import trio

from supervisor._errors import SupervisorError

__all__ = [
    "SUN_PATH_MAX",
    "PrivateSocket",
    "SocketSetupError",
    "bind_private_socket",
    "peer_credentials",
    "private_dir",
    "remove_socket_file",
]

#: The longest socket path: sizeof(sun_path) minus the terminating NUL.
SUN_PATH_MAX = 107
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class SocketSetupError(SupervisorError):
    """A private socket could not be created at the requested path."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"cannot create socket {path!r}: {reason}")


def _check_path_length(path: str) -> None:
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise SocketSetupError(path, f"longer than {SUN_PATH_MAX} bytes (sun_path)")


def _clear_stale(path: str, kind: socket.SocketKind) -> None:
    """Check that ``path`` is absent or a socket nobody listens on (then it may go)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketSetupError(path, "exists and is not a socket")
    with socket.socket(socket.AF_UNIX, kind) as probe:
        probe.setblocking(False)  # a live listener with a full backlog must not block us
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            pass  # stale: left behind by a process that is gone
        except FileNotFoundError:
            return
        except BlockingIOError as exc:
            raise SocketSetupError(path, "in use: another process is listening") from exc
        except OSError as exc:
            if exc.errno != errno.EPROTOTYPE:
                raise SocketSetupError(path, f"cannot probe it: {exc}") from exc
            raise SocketSetupError(path, "in use by a socket of another type") from exc
        else:
            raise SocketSetupError(path, "in use: another process is listening")


def bind_private_socket(path: str, kind: socket.SocketKind) -> tuple[socket.socket, os.stat_result]:
    """Bind an AF_UNIX socket at ``path`` that only our uid can reach.

    The parent directory is created with mode 0700 if missing (an existing one is left
    as it is). The socket is bound under a temporary name, made 0600 and renamed over
    ``path``, which replaces a stale socket file atomically.

    Args:
        path: Where the socket file goes.
        kind: ``socket.SOCK_STREAM`` or ``socket.SOCK_DGRAM``.

    Returns:
        The bound (not listening) stdlib socket, and the stat of its file, to recognise
        it on removal.

    Raises:
        SocketSetupError: The path is too long, is not a socket, is a live socket, or an
            OS call failed.
    """
    _check_path_length(path)
    directory = os.path.dirname(path) or "."
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700)
            os.chmod(directory, 0o700)  # makedirs' mode is filtered by the umask
        _clear_stale(path, kind)
    except SocketSetupError:
        raise
    except OSError as exc:
        raise SocketSetupError(path, str(exc)) from exc
    sock = socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC)
    temp = os.path.join(directory, f".{os.urandom(4).hex()}~")
    try:
        _check_path_length(temp)
        sock.bind(temp)
        try:
            os.chmod(temp, 0o600)
            os.replace(temp, path)
        except BaseException:
            _unlink_quietly(temp)
            raise
        return sock, os.lstat(path)
    except BaseException as exc:
        sock.close()
        if isinstance(exc, OSError):
            raise SocketSetupError(path, str(exc)) from exc
        raise


class PrivateSocket:
    """A socket file to bind early (so setup errors surface before serving), used once.

    Args:
        path: Where the socket file goes.
        kind: ``socket.SOCK_STREAM`` or ``socket.SOCK_DGRAM``.
    """

    def __init__(self, path: str, kind: socket.SocketKind) -> None:
        self.path, self.kind = path, kind
        self._bound: tuple[socket.socket, os.stat_result] | None = None

    def bind(self) -> None:
        """Create the socket file now, if not done yet.

        Raises:
            SocketSetupError: see :func:`bind_private_socket`.
        """
        if self._bound is None:
            self._bound = bind_private_socket(self.path, self.kind)

    def take(self) -> tuple[socket.socket, os.stat_result]:
        """Hand the bound socket to its server (binding it first if needed)."""
        self.bind()
        assert self._bound is not None
        bound, self._bound = self._bound, None
        return bound

    def close(self) -> None:
        """Release a socket that was bound but never taken (setup failed later)."""
        if self._bound is not None:
            sock, ours = self._bound
            self._bound = None
            sock.close()
            remove_socket_file(self.path, ours)


def remove_socket_file(path: str, ours: os.stat_result) -> None:
    """Remove ``path`` if it is still the socket file we bound (not a successor's)."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if (st.st_dev, st.st_ino) == (ours.st_dev, ours.st_ino):
        _unlink_quietly(path)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def peer_credentials(sock: socket.socket | trio.socket.SocketType) -> tuple[int, int, int]:
    """The (pid, uid, gid) of a connected Unix stream socket's peer, from SO_PEERCRED."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


def private_dir(path: str) -> None:
    """Create the directory ``path`` (0700), or check that the existing one is ours and private.

    Raises:
        SocketSetupError: ``path`` is not a directory, belongs to another uid, or an OS
            call failed.
    """
    try:
        if not os.path.lexists(path):
            os.makedirs(path, mode=0o700)
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise SocketSetupError(path, "exists and is not a directory")
        if st.st_uid != os.geteuid():
            raise SocketSetupError(path, f"directory owned by uid {st.st_uid}, not by us")
        if st.st_mode & 0o077:
            os.chmod(path, 0o700)
    except OSError as exc:
        raise SocketSetupError(path, str(exc)) from exc
