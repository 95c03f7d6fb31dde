"""The sd_notify receiver, with a real datagram socket and real agent processes."""

from __future__ import annotations

import array
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from supervisor._health import SocketSetupError
from supervisor._health._notify import NotifyMessage, NotifyServer, notify_env, parse_notify
from tests.supervisor.helpers import GUARD_S, release, start_gated_child, wait_until


class Inbox:
    """Collects (agent_id, message) pairs from ``on_message``."""

    def __init__(self) -> None:
        self.items: list[tuple[str, NotifyMessage]] = []

    def __call__(self, agent_id: str, message: NotifyMessage) -> None:
        self.items.append((agent_id, message))


async def start_server(
    nursery: trio.Nursery, path: Path, resolve: Callable[[int], str | None]
) -> tuple[NotifyServer, Inbox]:
    inbox = Inbox()
    server = NotifyServer(path, resolve=resolve, on_message=inbox)
    await nursery.start(server.run)
    return server, inbox


async def run_child(
    nursery: trio.Nursery, code: str, env: dict[str, str], agents: dict[int, str] | None = None
) -> trio.Process:
    """Run ``code`` in a Python child; register its pid in ``agents`` before it starts."""
    process = await start_gated_child(nursery, code, env)
    if agents is not None:
        agents[process.pid] = "agent"
    await release(process)
    await process.wait()
    return process


def send(path: Path, payload: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(payload, str(path))


READY = """
from supervisor.agent import notify
assert notify(ready=True, status="serving\\non :9100")
assert notify(watchdog=True)
assert notify(stopping=True)
"""


async def test_child_notifications_arrive_attributed(sock_dir: Path) -> None:
    """An agent using the helper is heard: READY, STATUS, WATCHDOG, STOPPING, in order."""
    path = sock_dir / "run" / "notify.sock"
    agents: dict[int, str] = {}
    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            server, inbox = await start_server(nursery, path, agents.get)
            child = await run_child(nursery, READY, notify_env(path, 5_000_000), agents)
            await wait_until(lambda: len(inbox.items) == 3)
            nursery.cancel_scope.cancel()
    (a1, ready), (a2, watchdog), (a3, stopping) = inbox.items
    assert a1 == a2 == a3 == "agent"
    assert ready.pid == watchdog.pid == stopping.pid == child.pid
    assert (ready.ready, ready.status, ready.watchdog) == (True, "serving on :9100", False)
    assert watchdog.watchdog and not watchdog.ready and watchdog.status is None
    assert stopping.stopping
    assert server.statistics().messages == 3
    assert not path.exists()


async def test_stranger_is_ignored_and_counted(sock_dir: Path) -> None:
    """A datagram from a process resolve does not know is dropped and counted."""
    path = sock_dir / "notify.sock"
    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            server, inbox = await start_server(nursery, path, lambda pid: None)
            code = "from supervisor.agent import notify; assert notify(ready=True)"
            await run_child(nursery, code, notify_env(path))
            await wait_until(lambda: server.statistics().strangers == 1)
            nursery.cancel_scope.cancel()
    assert inbox.items == []
    assert server.statistics().messages == 0


SETUID_SENDER = """
import os, socket
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.connect(os.environ["NOTIFY_SOCKET"])
os.setuid(65534)  # the kernel stamps each datagram with the sender's uid at send time
sock.send(b"READY=1")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change uid")
async def test_another_uid_is_a_stranger(sock_dir: Path) -> None:
    """A datagram sent under another uid is dropped, even from an agent's pid."""
    path = sock_dir / "notify.sock"
    agents: dict[int, str] = {}
    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            server, inbox = await start_server(nursery, path, agents.get)
            await run_child(nursery, SETUID_SENDER, notify_env(path), agents)
            await wait_until(lambda: server.statistics().strangers == 1)
            nursery.cancel_scope.cancel()
    assert inbox.items == []


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_bad_datagrams_are_dropped_and_counted(sock_dir: Path) -> None:
    """Oversized, non-UTF-8, NUL-laden, assignment-free and fd-carrying datagrams are dropped."""
    path = sock_dir / "notify.sock"
    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            server, inbox = await start_server(nursery, path, {os.getpid(): "me"}.get)
            fds_before = fd_count()
            send(path, b"STATUS=" + b"x" * 5000)
            send(path, b"READY=1\nSTATUS=\xff")
            send(path, b"READY=1\0")
            send(path, b"just words\n\n")
            r, w = os.pipe()
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r, w]))]
                    sock.sendmsg([b"FDSTORE=1"], rights, 0, str(path))
            finally:
                os.close(r)
                os.close(w)
            send(path, b"READY=1")
            await wait_until(lambda: len(inbox.items) == 1)
            assert fd_count() == fds_before  # the passed descriptors never landed here
            nursery.cancel_scope.cancel()
    stats = server.statistics()
    assert (stats.datagrams, stats.truncated, stats.malformed, stats.with_fds) == (6, 1, 3, 1)
    assert inbox.items[0][1].ready


async def test_socket_is_private_and_stale_file_replaced(sock_dir: Path) -> None:
    """Directory 0700, socket 0600; a stale socket file is replaced, a live one refused."""
    path = sock_dir / "run" / "notify.sock"
    path.parent.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as stale:
        stale.bind(str(path))
    async with trio.open_nursery() as nursery:
        _, inbox = await start_server(nursery, path, lambda pid: "me")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        with pytest.raises(SocketSetupError, match="in use"):
            await start_server(nursery, path, lambda pid: "me")
        send(path, b"READY=1")
        await wait_until(lambda: len(inbox.items) == 1)
        nursery.cancel_scope.cancel()
    assert not path.exists()


def msg(**fields: object) -> NotifyMessage:
    return NotifyMessage(pid=9, received_at=1.0, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"READY=1", msg(ready=True)),
        (b"READY=1\nSTATUS=up and running\n", msg(ready=True, status="up and running")),
        (b"STATUS=", msg(status="")),
        (b"STATUS=a=b", msg(status="a=b")),
        (b"WATCHDOG=1", msg(watchdog=True)),
        (b"WATCHDOG=trigger", msg(watchdog_trigger=True)),
        (b"STOPPING=1\nRELOADING=1", msg(stopping=True, reloading=True)),
        (b"MAINPID=1234", msg(main_pid=1234)),
        (b"WATCHDOG_USEC=30000000", msg(watchdog_usec=30_000_000)),
        (b"EXTEND_TIMEOUT_USEC=0", msg(extend_timeout_usec=0)),
        (b"EXTEND_TIMEOUT_USEC=5000000", msg(extend_timeout_usec=5_000_000)),
        (b"READY=0", msg(other=(("READY", "0"),))),
        (b"MAINPID=0\nMAINPID=-1", msg(other=(("MAINPID", "0"), ("MAINPID", "-1")))),
        (b"WATCHDOG_USEC=1e6", msg(other=(("WATCHDOG_USEC", "1e6"),))),
        (b"MAINPID=\xd9\xa1", msg(other=(("MAINPID", "\u0661"),))),  # not an ASCII digit
        (b"ERRNO=2\nFDSTORE=1", msg(other=(("ERRNO", "2"), ("FDSTORE", "1")))),
        (b"\nREADY=1\n\nnoise\n=x\n", msg(ready=True)),
        (b"", None),
        (b"hello", None),
        (b"READY=1\0", None),
        (b"STATUS=\xff", None),
    ],
)
def test_parse_notify(data: bytes, expected: NotifyMessage | None) -> None:
    """Each assignment lands in its field; anything not understood lands in ``other``."""
    assert parse_notify(data, pid=9, received_at=1.0) == expected


def test_notify_env() -> None:
    """NOTIFY_SOCKET always; WATCHDOG_USEC only when enabled; never WATCHDOG_PID."""
    assert notify_env("/run/h/n.sock") == {"NOTIFY_SOCKET": "/run/h/n.sock"}
    assert notify_env(Path("/run/h/n.sock"), 0) == {"NOTIFY_SOCKET": "/run/h/n.sock"}
    assert notify_env("/n", 90_000_000) == {"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "90000000"}
    with pytest.raises(ValueError, match="negative"):
        notify_env("/n", -1)
