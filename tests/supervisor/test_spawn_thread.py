"""Spawning in one worker thread: the working directory and the log prepared there, the child
pinned by a pidfd (or watched by a thread without one), digests without OpenSSL."""

from __future__ import annotations

import gc
import hashlib
import os
import signal
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from supervisor import SpawnError
from supervisor._logs import AgentLog
from supervisor._process import SpawnedChild, digest_hex, owner_marker, spawn
from tests.supervisor.helpers import SH, alive, kill_all, wait_for_file


def open_fds_to(path: Path) -> list[int]:
    """This process's descriptors that point to ``path``."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == str(path):
                found.append(int(name))
        except OSError:
            continue
    return found


def opener(log: Path, threads: list[int]) -> Callable[[], int]:
    def open_log() -> int:
        threads.append(threading.get_ident())
        return os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    return open_log


async def watched(child: SpawnedChild) -> int | None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(child.watch)
        status = await child.wait()
    return status.code


async def test_output_opened_in_the_worker_thread_and_closed_there(tmp_path: Path) -> None:
    """A callable output is opened by the spawning thread, and no descriptor to it is left."""
    log, threads = tmp_path / "out.log", []
    child = await spawn(
        (SH, "-c", "echo hello"),
        cwd=str(tmp_path),
        env={},
        output_fd=opener(log, threads),
        run_id="r",
    )
    assert open_fds_to(log) == []
    assert threads and threads[0] != threading.get_ident()
    assert await watched(child) == 0
    assert log.read_text() == "hello\n"


async def test_missing_working_directory_is_created(tmp_path: Path) -> None:
    """create_cwd makes the working directory and its parents; the child runs there."""
    cwd = tmp_path / "agents" / "a" / "deep"
    log = tmp_path / "out.log"
    child = await spawn(
        (SH, "-c", "pwd"),
        cwd=str(cwd),
        env={},
        output_fd=opener(log, []),
        run_id="r",
        create_cwd=True,
    )
    assert await watched(child) == 0
    assert log.read_text().strip() == str(cwd)


async def test_preparation_failure_is_a_spawn_error(tmp_path: Path) -> None:
    """A log that cannot be opened is a SpawnError naming the file; nothing is started."""
    blocker = tmp_path / "file"
    blocker.write_text("")

    def cannot_open() -> int:
        return os.open(blocker / "x.log", os.O_WRONLY | os.O_CREAT)

    with pytest.raises(SpawnError, match=f"{blocker}/x.log: Not a directory") as info:
        await spawn(
            (SH, "-c", "exit 0"), cwd=str(tmp_path), env={}, output_fd=cannot_open, run_id="r"
        )
    assert isinstance(info.value.__cause__, NotADirectoryError)
    with pytest.raises(SpawnError, match=str(blocker / "sub")):
        await spawn(
            (SH, "-c", "exit 0"),
            cwd=str(blocker / "sub"),
            env={},
            output_fd=opener(tmp_path / "log", []),
            run_id="r",
            create_cwd=True,
        )


async def test_failed_exec_closes_the_opened_output(tmp_path: Path) -> None:
    """When the binary cannot run, the output opened for it is closed all the same."""
    log = tmp_path / "out.log"
    with pytest.raises(SpawnError, match="/nonexistent/agent"):
        await spawn(
            ("/nonexistent/agent",),
            cwd=str(tmp_path),
            env={},
            output_fd=opener(log, []),
            run_id="r",
        )
    assert open_fds_to(log) == []


async def test_exit_seen_without_a_pidfd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a pidfd (an old kernel, no descriptors left) a thread waits; the status is
    the same, and signals still reach the child."""

    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    child = await spawn(
        (SH, "-c", "exit 3"),
        cwd=str(tmp_path),
        env={},
        output_fd=opener(tmp_path / "l", []),
        run_id="r",
    )
    assert await watched(child) == 3
    log = tmp_path / "ready.log"
    child = await spawn(
        (SH, "-c", "echo ready; exec sleep 1000"),
        cwd=str(tmp_path),
        env={},
        output_fd=opener(log, []),
        run_id="r",
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(child.watch)
        await wait_for_file(log, "ready")
        child.send_signal(signal.SIGTERM)
        status = await child.wait()
    assert status.signal == signal.SIGTERM


async def test_signal_through_the_pidfd_and_wait_after_the_exit(tmp_path: Path) -> None:
    """send_signal reaches the child; wait() after the exit returns at once; a signal after
    the exit is a no-op."""
    log = tmp_path / "ready.log"
    child = await spawn(
        (SH, "-c", "echo ready; exec sleep 1000"),
        cwd=str(tmp_path),
        env={},
        output_fd=opener(log, []),
        run_id="r",
    )
    await wait_for_file(log, "ready")
    child.send_signal(signal.SIGKILL)
    status = await child.watch()
    assert status.signal == signal.SIGKILL
    assert await child.wait() is status
    child.send_signal(signal.SIGKILL)


async def test_close_leaves_the_process_running_without_a_warning(tmp_path: Path) -> None:
    """close() lets the process run on; dropping the child then warns about nothing
    (warnings are errors in this test suite)."""
    child = await spawn(
        (SH, "-c", "exec sleep 1000"),
        cwd=str(tmp_path),
        env={},
        output_fd=opener(tmp_path / "l", []),
        run_id="r",
    )
    pid = child.pid
    try:
        child.close()
        del child
        gc.collect()
        assert alive(pid)
    finally:
        kill_all([pid])


def test_log_open_creates_the_directory_and_rotates_first(tmp_path: Path) -> None:
    """open_for_child makes a missing directory, and renames an oversize file away first."""
    log = AgentLog(str(tmp_path / "logs" / "a.log"), max_bytes=4, backups=1)
    fd = log.open_for_child()
    try:
        os.write(fd, b"0123456789")
    finally:
        os.close(fd)
    fd = log.open_for_child()
    os.close(fd)
    assert (tmp_path / "logs" / "a.log.1").read_bytes() == b"0123456789"
    assert (tmp_path / "logs" / "a.log").read_bytes() == b""
    assert log.rotated_bytes == 10


def test_log_open_of_a_fifo_does_not_block(tmp_path: Path) -> None:
    """A FIFO log is opened read-write (no reader needed) and never rotated."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    log = AgentLog(str(fifo), max_bytes=1, backups=1)
    fd = log.open_for_child()
    try:
        assert stat.S_ISFIFO(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    assert not (tmp_path / "pipe.1").exists()


def test_digest_is_sha256() -> None:
    """digest_hex is SHA-256, whichever implementation computes it; markers keep their value."""
    for data in (b"", b"abc", os.urandom(1000)):
        assert digest_hex(data) == hashlib.sha256(data).hexdigest()
    expected = hashlib.sha256(os.path.abspath("/var/lib/daemon").encode()).hexdigest()[:16]
    assert owner_marker("/var/lib/daemon") == expected
