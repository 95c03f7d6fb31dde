"""Process control on Trio: spawn, watch, stop a whole tree, adopt, reap orphans.

This is the only module that creates, signals or reaps processes.

* Spawning: argv without a shell, its own session and process group (``setsid``), stdin
  from /dev/null, stdout and stderr to the agent's log file (no pipe: an agent can never
  die of SIGPIPE because the supervisor is gone), the inherited environment plus the
  agent's overrides and the markers (:data:`MARKERS`). Everything that blocks (creating
  the working directory, opening the log, fork and exec, pinning the new process with a
  pidfd, reading its identity) happens in one worker thread per spawn, so that hundreds
  of spawns at start-up neither stall the Trio loop nor wait for it.
* Watching: a child is pinned by a pidfd from the moment it exists, so its PID cannot be
  recycled under us, and its death is noticed at once (the pidfd becomes readable). Our
  own children's exit status is then read with ``waitpid``. A process adopted from an
  earlier daemon is not our child: its exit status is unknowable.
* Stopping (systemd's KillMode=control-group, done with process groups): the stop signal
  to the whole group and to every descendant that left it with ``setsid``, then SIGCONT
  (a stopped process must be able to act on the signal), wait up to the stop timeout for
  the tree to go, then SIGKILL to whatever is left.
* Orphans: with :func:`set_child_subreaper`, descendants whose parent died are re-parented
  to us instead of init. :class:`OrphanReaper` reaps those (never with ``waitpid(-1)``,
  which would steal the statuses Trio waits for) and lets stops find them by their marker.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, cast

import trio

from ._errors import SpawnError
from ._machine import ExitStatus
from ._proc import children_of, read_markers, read_stat, tree_below

__all__ = [
    "ENV_AGENT_ID",
    "ENV_BINARY",
    "ENV_OWNER",
    "ENV_RESTARTS",
    "ENV_RUN_ID",
    "ENV_SPEC",
    "MARKERS",
    "AdoptedChild",
    "Child",
    "OrphanReaper",
    "PrepareError",
    "ProcessIdentity",
    "SpawnedChild",
    "adopt",
    "alive",
    "digest_hex",
    "file_identity",
    "group_of",
    "identify",
    "lineage",
    "owner_marker",
    "read_run_marker",
    "set_child_subreaper",
    "signal_group",
    "signal_pid",
    "spawn",
    "terminate_tree",
]

logger = logging.getLogger("supervisor.process")

#: Environment variable naming the supervisor that spawned an agent (see :func:`owner_marker`).
ENV_OWNER = "HOSTVISOR_OWNER"
#: Environment variable carrying the agent id into the agent and its descendants.
ENV_AGENT_ID = "HOSTVISOR_AGENT_ID"
#: Environment variable unique to one spawn; lets a stop find descendants that escaped.
ENV_RUN_ID = "HOSTVISOR_RUN_ID"
#: Environment variable naming the executable file a spawn started from (see
#: :func:`file_identity`): adoption refuses a process whose file changed since.
ENV_BINARY = "HOSTVISOR_BINARY"
#: Environment variable holding the agent's restart count at this spawn: restart counts
#: add up across a supervisor that died before it could record a spawn.
ENV_RESTARTS = "HOSTVISOR_RESTARTS"
#: Environment variable holding the digest of the spec this spawn was started with.
ENV_SPEC = "HOSTVISOR_SPEC"
#: Every marker, in the order :func:`supervisor._proc.read_markers` returns them.
MARKERS = (ENV_OWNER, ENV_AGENT_ID, ENV_RUN_ID, ENV_BINARY, ENV_RESTARTS, ENV_SPEC)
#: What /proc/PID/exe ends with once the executable was replaced or removed on disk.
_DELETED = " (deleted)"

#: Waiting for a child without a pidfd takes a worker thread each: never limit those.
_UNLIMITED = trio.CapacityLimiter(math.inf)

# psutil's create_time has clock-tick resolution (10 ms); allow for float rounding.
_CREATE_TIME_TOLERANCE_S = 0.05
_PR_SET_CHILD_SUBREAPER = 36


class PrepareError(SpawnError):
    """The working directory or the output of a spawn could not be prepared.

    Its message is ``"{filename}: {strerror}"``; no process was started.
    """


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """What makes a PID *this* process: PID, kernel start time and executable.

    Attributes:
        pid: The process id.
        create_time: Start time in seconds since the epoch (clock-tick resolution).
        exe: The executable's path ("" when the kernel does not say).
    """

    pid: int
    create_time: float
    exe: str

    def matches(self, other: ProcessIdentity) -> bool:
        """Whether ``other`` is the same process (start times within clock resolution)."""
        return (
            self.pid == other.pid
            and abs(self.create_time - other.create_time) <= _CREATE_TIME_TOLERANCE_S
            and self.exe == other.exe
        )


def identify(pid: int) -> ProcessIdentity | None:
    """Read a live process's identity from /proc; None if it is gone or a zombie.

    The start time is computed as psutil does (boot time plus the start tick count), so
    identities persisted by either agree.
    """
    stat = read_stat(pid)
    if stat is None or not stat.alive:
        return None
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:  # permission denied, or a kernel thread
        exe = ""
    return ProcessIdentity(pid, stat.create_time, exe)


def lineage(pid: int) -> tuple[int, int, int] | None:
    """The (parent pid, process group, session) of a process, from /proc; None if gone."""
    stat = read_stat(pid)
    return None if stat is None else (stat.ppid, stat.pgrp, stat.session)


class Child:
    """A supervised process, spawned by us or adopted; see the two subclasses.

    Exactly one task (the owner's watcher) calls :meth:`watch`, which waits for the exit
    at the OS level; any number of tasks may :meth:`wait` for its result.
    """

    __slots__ = ("_done", "_pidfd", "identity", "pid", "run_id", "status")

    def __init__(
        self, pid: int, pidfd: int | None, identity: ProcessIdentity | None, run_id: str
    ) -> None:
        self.pid = pid
        self.identity = identity
        self.run_id = run_id
        self.status: ExitStatus | None = None
        self._pidfd = pidfd
        self._done: trio.Event | None = None  # made by the first wait(): most have none

    async def _wait_os(self) -> ExitStatus:
        raise NotImplementedError

    def _reaped(self) -> ExitStatus:
        """How the process ended, once its pidfd is readable; releases the pidfd."""
        raise NotImplementedError

    def fileno(self) -> int | None:
        """The pidfd (readable once the process has exited), or None without one."""
        return self._pidfd

    async def watch(self) -> ExitStatus:
        """Wait at the OS level until the process exits; record and return how."""
        return self._record(await self._wait_os())

    def reap(self) -> ExitStatus:
        """Instead of :meth:`watch`: the pidfd is readable (the process exited); record how.

        For one task that waits for many pidfds at once (``supervisor._exits``).
        """
        return self._record(self._reaped())

    def _record(self, status: ExitStatus) -> ExitStatus:
        self.status = status
        if self._done is not None:
            self._done.set()
        return status

    async def wait(self) -> ExitStatus:
        """Wait until :meth:`watch` has seen the process exit; return how."""
        if self.status is None:
            if self._done is None:
                self._done = trio.Event()
            await self._done.wait()
        assert self.status is not None
        return self.status

    @property
    def exited(self) -> bool:
        """Whether the process is known to have exited."""
        return self.status is not None

    def send_signal(self, sig: int) -> None:
        """Signal the process itself (not its group); no-op once it has exited."""
        if self._pidfd is not None and self.status is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)

    def close(self) -> None:
        """Release the handle without touching the process (daemon-mode exit)."""
        self._close_pidfd()

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            fd, self._pidfd = self._pidfd, None
            with contextlib.suppress(RuntimeError):  # outside Trio nobody can be waiting
                trio.lowlevel.notify_closing(fd)
            os.close(fd)


class SpawnedChild(Child):
    """A child process we started; its exit status is known.

    Args:
        popen: The child (reaped through it).
        pidfd: The child's pidfd, or None when the kernel gave none (then a worker
            thread waits for the exit).
        identity: The child's identity, read right after it started.
        run_id: Its spawn marker.
    """

    __slots__ = ("_popen",)

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        pidfd: int | None,
        identity: ProcessIdentity | None,
        run_id: str,
    ) -> None:
        super().__init__(popen.pid, pidfd, identity, run_id)
        self._popen = popen

    async def _wait_os(self) -> ExitStatus:
        if self._pidfd is not None:
            await trio.lowlevel.wait_readable(self._pidfd)
            return self._reaped()
        returncode = await trio.to_thread.run_sync(
            self._popen.wait, abandon_on_cancel=True, limiter=_UNLIMITED
        )
        return ExitStatus.from_returncode(returncode)

    def _reaped(self) -> ExitStatus:
        returncode = self._popen.wait()  # it has exited: this only reaps it
        self._close_pidfd()
        return ExitStatus.from_returncode(returncode)

    def send_signal(self, sig: int) -> None:
        if self._pidfd is not None:
            super().send_signal(sig)
        elif self._popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(sig)

    def close(self) -> None:
        """Let the process run on without us (daemon-mode exit).

        Closes the pidfd and hands the Popen to the standard library's list of children
        it reaps later, without the "still running" warning: leaving the process running
        is the point.
        """
        self._close_pidfd()
        popen = self._popen
        if popen.returncode is None and hasattr(popen, "_child_created"):
            popen._child_created = False
            active = getattr(subprocess, "_active", None)
            if active is not None:
                active.append(popen)


class AdoptedChild(Child):
    """A process left running by an earlier daemon, pinned by a pidfd."""

    __slots__ = ()

    def __init__(self, pidfd: int, identity: ProcessIdentity, run_id: str) -> None:
        super().__init__(identity.pid, pidfd, identity, run_id)

    async def _wait_os(self) -> ExitStatus:
        if self._pidfd is not None:
            await trio.lowlevel.wait_readable(self._pidfd)
        return self._reaped()

    def _reaped(self) -> ExitStatus:
        self.close()
        return ExitStatus()


async def spawn(
    argv: tuple[str, ...],
    *,
    cwd: str,
    env: Mapping[str, str],
    output_fd: int | Callable[[], int],
    run_id: str,
    reaper: OrphanReaper | None = None,
    limiter: trio.CapacityLimiter | None = None,
    create_cwd: bool = False,
) -> SpawnedChild:
    """Start a process in its own session, with output to ``output_fd``.

    The work is done in a worker thread (see the module docstring); the call cannot be
    cancelled while that thread runs, so a process that was started is always returned.

    Args:
        argv: Executable and arguments; no shell is involved.
        cwd: Working directory.
        env: The complete environment of the child.
        output_fd: File descriptor for both stdout and stderr (a log file; the caller
            closes it), or a function that opens one: it is called in the worker thread,
            and the descriptor it returns is closed there once the child has it.
        run_id: This spawn's marker, also put in the environment by the caller.
        reaper: The orphan reaper to tell about the new child, if one runs.
        limiter: Bounds concurrent spawns (each holds a worker thread); None: Trio's
            default limiter for worker threads.
        create_cwd: Create ``cwd`` (and its parents) when missing.

    Raises:
        SpawnError: the working directory or the output could not be prepared, or the
            process could not be created; ``__cause__`` is the OSError.
    """
    guard = reaper.spawning() if reaper is not None else contextlib.nullcontext()
    with guard:
        popen, pidfd, identity = await trio.to_thread.run_sync(
            _fork_exec, argv, cwd, dict(env), output_fd, create_cwd, limiter=limiter
        )
        if reaper is not None:
            reaper.own(popen.pid)
    return SpawnedChild(popen, pidfd, identity, run_id)


def _fork_exec(
    argv: tuple[str, ...],
    cwd: str,
    env: dict[str, str],
    output: int | Callable[[], int],
    create_cwd: bool,
) -> tuple[subprocess.Popen[bytes], int | None, ProcessIdentity | None]:
    """The blocking part of :func:`spawn`, in a worker thread."""
    try:
        if create_cwd:
            os.makedirs(cwd, exist_ok=True)
        output_fd = output() if callable(output) else output
    except OSError as exc:
        raise PrepareError(f"{exc.filename}: {exc.strerror}") from exc
    try:
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output_fd,
            stderr=output_fd,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        raise SpawnError(f"cannot execute {argv[0]!r}: {exc.strerror or exc}") from exc
    finally:
        if callable(output):
            os.close(output_fd)
    try:
        pidfd: int | None = os.pidfd_open(popen.pid)
    except OSError:  # no pidfd (an old kernel, or out of descriptors): a thread waits
        pidfd = None
    return popen, pidfd, identify(popen.pid)


class _Hash(Protocol):
    def hexdigest(self) -> str: ...


def _builtin_sha256() -> Callable[[bytes], _Hash]:
    """Python's own SHA-256 (3.12+: ``_sha2``, 3.11: ``_sha256``), or hashlib's.

    hashlib prefers OpenSSL's, and importing it loads libcrypto: 3.6 MiB of RSS that a
    daemon without TLS never needs for digests of a few hundred bytes.
    """
    for name in ("_sha2", "_sha256"):
        try:
            return cast("Callable[[bytes], _Hash]", importlib.import_module(name).sha256)
        except (ImportError, AttributeError):
            continue
    import hashlib  # an interpreter built without its own SHA-256

    return hashlib.sha256


_sha256 = _builtin_sha256()


def digest_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` in hex, the same as ``hashlib.sha256(data).hexdigest()``.

    Markers and records hold such digests (:func:`owner_marker`, ``spec_digest``); this
    computes them without loading OpenSSL (see ``_builtin_sha256``).
    """
    return _sha256(data).hexdigest()


def owner_marker(work_dir: str) -> str:
    """The owner marker of the supervisor with this work directory (a short digest).

    Two supervisors on one host (two work directories) never take each other's agents
    for their own, even when agent ids are the same.
    """
    return digest_hex(os.path.abspath(work_dir).encode())[:16]


def read_run_marker(pid: int) -> str:
    """The spawn marker (``HOSTVISOR_RUN_ID``) in a live process's environment, or ""."""
    markers = read_markers(pid, MARKERS)
    return markers[2] if markers is not None else ""


def file_identity(path: str) -> str:
    """What identifies the file at ``path`` now: device, inode, size and modification time.

    An update or a rollback that replaces the file (a rename over it) or rewrites it gives
    another identity; "" when the file cannot be read.
    """
    try:
        status = os.stat(path)
    except OSError:
        return ""
    return f"{status.st_dev}:{status.st_ino}:{status.st_size}:{status.st_mtime_ns}"


def adopt(identity: ProcessIdentity, run_id: str) -> AdoptedChild | None:
    """Pin and take over a process left running by an earlier daemon.

    The PID is pinned with ``pidfd_open`` first, so it cannot be recycled while we look;
    then the kernel start time must match, and the executable too, unless the process
    carries this spawn's marker (an agent that ``exec``'d another program, as wrapper
    scripts do, keeps its PID, start time and environment but changes executable).

    A process whose executable was replaced or removed on disk since it started (``exe``
    ends with " (deleted)": an update or a rollback changed the file under it) is never
    adopted: what runs must be what is installed, so the caller stops it and starts the
    file that is there now.

    Returns:
        The adopted child, or None when the process is gone, is not the same process, or
        runs an executable that is no longer on disk.
    """
    try:
        pidfd = os.pidfd_open(identity.pid)
    except OSError:
        return None
    current = identify(identity.pid)
    if current is not None and current.exe.endswith(_DELETED):
        os.close(pidfd)
        return None
    same = current is not None and (
        identity.matches(current)
        or (
            identity.matches(ProcessIdentity(current.pid, current.create_time, identity.exe))
            and bool(run_id)
            and read_run_marker(identity.pid) == run_id
        )
    )
    if current is None or not same:
        os.close(pidfd)
        return None
    return AdoptedChild(pidfd, current, run_id)


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (a zombie has nothing left to stop)."""
    stat = read_stat(pid)
    return stat is not None and stat.alive


def _descendants(child: Child, reaper: OrphanReaper | None) -> list[int]:
    """Every process of the agent's tree we can find: descendants, plus marked orphans."""
    found = dict.fromkeys(tree_below([child.pid]))
    if reaper is not None:
        orphans = reaper.orphans_of(child.run_id)
        found.update(dict.fromkeys(orphans))
        found.update(dict.fromkeys(tree_below(orphans)))
    return list(found)


def _outside_group(pids: list[int], pgid: int) -> list[int]:
    escaped = []
    for pid in pids:
        try:
            if os.getpgid(pid) != pgid:
                escaped.append(pid)
        except ProcessLookupError:
            continue
    return escaped


async def _wait_tree_gone(child: Child, tree: list[int], deadline: float) -> bool:
    """Wait until the leader has exited and every known process of its tree is gone."""
    with trio.move_on_at(deadline):
        await child.wait()
        delay = 0.002
        while any(alive(pid) for pid in tree):
            await trio.sleep(delay)
            delay = min(delay * 2, 0.1)
        return True
    return False


def _signal_tree(child: Child, escaped: list[int], sig: int) -> None:
    """One signal to every process of the tree: the group, the leader if it left the
    group, and the descendants that escaped it. A process gets it once, never twice (a
    shell's TERM trap would run twice)."""
    signal_group(child.pid, sig)
    if group_of(child.pid) not in (child.pid, None):
        child.send_signal(sig)
    for pid in escaped:
        signal_pid(pid, sig)


def group_of(pid: int) -> int | None:
    stat = read_stat(pid)
    return None if stat is None else stat.pgrp


async def terminate_tree(
    child: Child,
    *,
    stop_signal: int,
    timeout_s: float,
    graceful: bool = True,
    reaper: OrphanReaper | None = None,
) -> ExitStatus:
    """Stop a process, its group and its escaped descendants; return the leader's status.

    Args:
        child: The process to stop (the leader of its own process group).
        stop_signal: The polite signal (e.g. SIGTERM).
        timeout_s: How long to wait after it before SIGKILL.
        graceful: False sends SIGKILL at once.
        reaper: The orphan reaper, to also find descendants re-parented to us.
    """
    tree = _descendants(child, reaper)
    escaped = _outside_group(tree, child.pid)
    if graceful:
        _signal_tree(child, escaped, stop_signal)
        _signal_tree(child, escaped, signal.SIGCONT)
        if await _wait_tree_gone(child, tree, trio.current_time() + timeout_s):
            # Anything of the group we could not see (re-parented elsewhere) goes too.
            signal_group(child.pid, signal.SIGKILL)
            return await child.wait()
        logger.warning(
            "pid %d: still running %.3gs after %s; killing",
            child.pid,
            timeout_s,
            signal.Signals(stop_signal).name,
        )
        more = _descendants(child, reaper)
        escaped = sorted(set(escaped) | set(_outside_group(more, child.pid)))
    _signal_tree(child, escaped, signal.SIGKILL)
    return await child.wait()


def set_child_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux prctl).

    Returns:
        Whether it worked (False on kernels or platforms without it).
    """
    import ctypes  # only the daemon needs it; keep it off the import path

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _own_children() -> set[int]:
    """PIDs of this process's children (of all its threads), from /proc."""
    return set(children_of(os.getpid()))


class OrphanReaper:
    """Reaps descendants re-parented to us, never touching the children Trio waits for.

    Owned children (the agents' leaders) are registered with :meth:`own` and released
    with :meth:`disown` once Trio has reaped them; while a spawn is in flight nothing is
    reaped (the new PID is not registered yet), and a sweep held off then is made when
    the last spawn ends (its SIGCHLD has come and gone). Every other child is an orphan: its
    agent marker is read while it lives so that a stop can find it, and it is reaped
    with ``waitpid(pid, WNOHANG)`` once it exits.
    """

    def __init__(self) -> None:
        self._owned: set[int] = set()
        self._spawning = 0
        self._held_off = False
        self._markers: dict[int, str] = {}
        self.reaped = 0

    def own(self, pid: int) -> None:
        """Register a child that Trio waits for."""
        self._owned.add(pid)

    def disown(self, pid: int) -> None:
        """Forget a child after Trio has reaped it."""
        self._owned.discard(pid)

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        """Hold reaping off while a spawn is in flight."""
        self._spawning += 1
        try:
            yield
        finally:
            self._spawning -= 1
            if not self._spawning and self._held_off:
                self.sweep()  # an orphan that died meanwhile sends no second SIGCHLD

    def orphans_of(self, run_id: str) -> list[int]:
        """Live orphans whose environment carries this run's marker."""
        self.sweep()
        return [pid for pid, marker in self._markers.items() if marker == run_id]

    def sweep(self) -> int:
        """Record the markers of new orphans and reap dead ones; return how many reaped."""
        if self._spawning:
            self._held_off = True
            return 0
        self._held_off = False
        reaped = 0
        children = _own_children() - self._owned
        for pid in children:
            if pid not in self._markers:
                self._markers[pid] = read_run_marker(pid)
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                reaped += 1
                self._markers.pop(pid, None)
        for pid in list(self._markers):
            if pid not in children:
                self._markers.pop(pid, None)
        self.reaped += reaped
        return reaped

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reap on every SIGCHLD (or every 5 s when signals can't be received here)."""
        try:
            with trio.open_signal_receiver(signal.SIGCHLD) as signals:
                task_status.started()
                self.sweep()
                async for _ in signals:
                    self.sweep()
        except RuntimeError:  # not in the main thread: signals are not ours to take
            task_status.started()
            while True:
                self.sweep()
                await trio.sleep(5)
