"""The heartbeat receiver, with real Unix sockets and real agent processes."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import psutil
import pytest
import trio

from supervisor._health._heartbeat import Heartbeat, HeartbeatServer, parse_heartbeat
from supervisor._health._sockets import SocketSetupError
from tests.supervisor.helpers import GUARD_S, release, start_gated_child as start_child, wait_until


class Inbox:
    """Collects (agent_id, heartbeat) pairs from ``on_heartbeat``."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Heartbeat]] = []

    def __call__(self, agent_id: str, heartbeat: Heartbeat) -> None:
        self.items.append((agent_id, heartbeat))

    def of(self, agent_id: str) -> list[Heartbeat]:
        return [hb for aid, hb in self.items if aid == agent_id]


async def start_server(
    nursery: trio.Nursery, path: Path, resolve: Callable[[int], str | None], **kw: object
) -> tuple[HeartbeatServer, Inbox]:
    inbox = Inbox()
    server = HeartbeatServer(path, resolve=resolve, on_heartbeat=inbox, **kw)  # type: ignore[arg-type]
    await nursery.start(server.run)
    return server, inbox


async def connect(path: Path) -> trio.SocketStream:
    """An in-process client (its peer pid is ours)."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.connect(str(path))
    return trio.SocketStream(sock)


def line(**fields: object) -> bytes:
    return json.dumps(fields).encode() + b"\n"


SEND_TWO = """
from supervisor.agent import Heartbeater, send_heartbeat
with Heartbeater() as beats:
    assert beats.send(status="ok", version="1.0", cpu=1.5, memory=1234)
assert send_heartbeat(None, status="degraded")
"""


async def test_child_heartbeats_arrive_attributed(sock_dir: Path) -> None:
    """A child's heartbeats reach on_heartbeat with the agent id resolve gives its pid."""
    path = sock_dir / "run" / "hb.sock"
    agents: dict[int, str] = {}
    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            server, inbox = await start_server(nursery, path, agents.get)
            env = {"HOSTVISOR_HEARTBEAT_SOCKET": str(path)}
            child = await start_child(nursery, SEND_TWO, env)
            agents[child.pid] = "alpha"
            await release(child)
            await wait_until(lambda: len(inbox.items) == 2)
            await child.wait()
            nursery.cancel_scope.cancel()
    first, second = inbox.of("alpha")
    assert (first.pid, first.peer_pid) == (child.pid, child.pid)
    assert (first.status, first.version, first.cpu, first.memory) == ("ok", "1.0", 1.5, 1234)
    assert isinstance(first.timestamp, float)
    assert second.status == "degraded"
    stats = server.statistics()
    assert (stats.heartbeats, stats.connections_accepted, stats.strangers) == (2, 2, 0)
    assert stats.connections_active == 0
    assert not path.exists()


GRANDCHILD = """
import subprocess, sys
code = "from supervisor.agent import send_heartbeat; assert send_heartbeat(None)"
subprocess.run([sys.executable, "-c", code], check=True)
"""


async def test_descendant_is_attributed_to_its_agent(sock_dir: Path) -> None:
    """resolve decides what counts as the agent: here, any descendant of its process."""
    path = sock_dir / "hb.sock"
    agent_pids: dict[int, str] = {}

    def resolve(pid: int) -> str | None:
        try:
            lineage = [pid, *(p.pid for p in psutil.Process(pid).parents())]
        except psutil.NoSuchProcess:
            return None
        return next((agent_pids[p] for p in lineage if p in agent_pids), None)

    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            server, inbox = await start_server(nursery, path, resolve)
            child = await start_child(
                nursery, GRANDCHILD, {"HOSTVISOR_HEARTBEAT_SOCKET": str(path)}
            )
            agent_pids[child.pid] = "beta"
            await release(child)
            await wait_until(lambda: len(inbox.items) == 1)
            await child.wait()
            nursery.cancel_scope.cancel()
    (heartbeat,) = inbox.of("beta")
    assert heartbeat.peer_pid != child.pid
    assert heartbeat.pid == heartbeat.peer_pid
    assert server.statistics().pid_mismatches == 0


async def test_stranger_is_ignored_and_counted(sock_dir: Path) -> None:
    """A process resolve does not know is disconnected; nothing is delivered."""
    path = sock_dir / "hb.sock"
    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            server, inbox = await start_server(nursery, path, lambda pid: None)
            code = "from supervisor.agent import send_heartbeat; send_heartbeat(None)"
            child = await start_child(nursery, code, {"HOSTVISOR_HEARTBEAT_SOCKET": str(path)})
            await release(child)
            await child.wait()
            # The helper retries once on a new connection when the first one fails.
            await wait_until(lambda: server.statistics().strangers >= 1)
            nursery.cancel_scope.cancel()
    assert inbox.items == []
    stats = server.statistics()
    assert (stats.connections_accepted, stats.heartbeats) == (0, 0)


async def test_another_uid_is_a_stranger(sock_dir: Path) -> None:
    """A peer whose uid is not ours is a stranger even if resolve knows its pid."""
    path = sock_dir / "hb.sock"
    async with trio.open_nursery() as nursery:
        server, inbox = await start_server(nursery, path, lambda pid: "known")
        server._uid = os.geteuid() + 1  # pretend we run as someone else
        async with await connect(path) as client:
            with contextlib.suppress(trio.BrokenResourceError):  # we may be cut off first
                await client.send_all(line(status="ok"))
            await wait_until(lambda: server.statistics().strangers == 1)
        nursery.cancel_scope.cancel()
    assert inbox.items == []


ATTACKER = """
import socket, sys, time
path = sys.argv[1]
def attack(payload):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    try:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        s.recv(1)  # wait until the server drops us
    except OSError:
        pass  # the server may hang up mid-write (the 10 MB line)
    s.close()
attack(b"this is not json\\n")
attack(b"[" * 60_000 + b"\\n")
attack(b'{"pid": "one"}\\n')
attack(b"x" * 10_000_000 + b"\\n")
"""

STEADY = """
import select, sys
from supervisor.agent import Heartbeater
beats = Heartbeater()
while not select.select([sys.stdin], [], [], 0.02)[0]:
    assert beats.send(status="ok")
"""


async def test_bad_input_is_dropped_while_a_good_agent_keeps_beating(sock_dir: Path) -> None:
    """Garbage, deep nesting, bad types and a 10 MB line only cost their own connections."""
    path = sock_dir / "hb.sock"
    agents: dict[int, str] = {}
    env = {"HOSTVISOR_HEARTBEAT_SOCKET": str(path)}
    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            server, inbox = await start_server(nursery, path, agents.get)
            good = await start_child(nursery, STEADY, env)
            agents[good.pid] = "good"
            await release(good)
            await wait_until(lambda: len(inbox.of("good")) >= 3)
            bad: trio.Process = await nursery.start(
                partial(trio.run_process, [sys.executable, "-c", ATTACKER, str(path)])
            )
            agents[bad.pid] = "mallory"
            await bad.wait()
            assert bad.returncode == 0
            seen = len(inbox.of("good"))
            await wait_until(lambda: len(inbox.of("good")) >= seen + 3)
            assert good.stdin is not None
            await good.stdin.aclose()  # the steady agent's signal to exit
            await good.wait()
            assert good.returncode == 0
            nursery.cancel_scope.cancel()
    stats = server.statistics()
    assert (stats.malformed, stats.oversized) == (3, 1)
    assert inbox.of("mallory") == []
    assert stats.connections_accepted == 5  # one good connection for all its beats
    assert stats.idle == stats.slow == stats.strangers == 0


async def test_idle_and_slow_connections_time_out(
    sock_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """No complete line within idle_timeout_s drops the connection; steady ones survive."""
    path = sock_dir / "hb.sock"
    me = os.getpid()
    async with trio.open_nursery() as nursery:
        server, inbox = await start_server(
            nursery, path, {me: "self"}.get, idle_timeout_s=5.0, max_connections_per_agent=3
        )
        good, idle, slow = await connect(path), await connect(path), await connect(path)
        async with good, idle, slow:
            for n in range(30):  # one heartbeat per second, one drip per second
                await good.send_all(line(status=f"beat {n}"))
                try:
                    await slow.send_all(b'{"status": "dripping'[n % 19 : n % 19 + 1])
                except trio.BrokenResourceError:
                    assert n >= 5  # the server hung up on the dripper
                await trio.sleep(1.0)
            await wait_until(lambda: len(inbox.items) == 30)
            assert await idle.receive_some() == b""  # closed by the server
            assert server.statistics().connections_active == 1
        nursery.cancel_scope.cancel()
    stats = server.statistics()
    assert (stats.idle, stats.slow, stats.heartbeats) == (1, 1, 30)
    assert [hb.status for _, hb in inbox.items] == [f"beat {n}" for n in range(30)]


async def test_idle_timeout_is_exact(
    sock_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A silent connection is dropped exactly idle_timeout_s after its last heartbeat."""
    path = sock_dir / "hb.sock"
    async with trio.open_nursery() as nursery:
        server, _ = await start_server(nursery, path, lambda pid: "a", idle_timeout_s=7.0)
        async with await connect(path) as client:
            await client.send_all(line())
            await wait_until(lambda: server.statistics().heartbeats == 1)
            beat_at = trio.current_time()
            await wait_until(lambda: server.statistics().idle == 1)
            assert trio.current_time() - beat_at == pytest.approx(7.0, abs=0.02)
        nursery.cancel_scope.cancel()


async def test_line_length_limit_is_exact(
    sock_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A line of max_line bytes is accepted; one byte more drops the connection."""
    path = sock_dir / "hb.sock"
    fits = b'{"status": "ok"}'.ljust(100) + b"\n"
    too_long = b'{"status": "ok"}'.ljust(101) + b"\n"
    async with trio.open_nursery() as nursery:
        server, inbox = await start_server(nursery, path, lambda pid: "a", max_line=100)
        async with await connect(path) as client:
            await client.send_all(fits + fits + too_long + fits)
            await wait_until(lambda: server.statistics().oversized == 1)
        nursery.cancel_scope.cancel()
    assert len(inbox.items) == 2


async def test_pid_mismatch_is_delivered_and_counted(
    sock_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A heartbeat naming another pid still belongs to the peer's agent, and is counted."""
    path = sock_dir / "hb.sock"
    async with trio.open_nursery() as nursery:
        server, inbox = await start_server(nursery, path, lambda pid: "a")
        async with await connect(path) as client:
            await client.send_all(line(pid=1, status="ok") + b"\n" + line(status="ok"))
            await wait_until(lambda: len(inbox.items) == 2)
        nursery.cancel_scope.cancel()
    (_, claimed), (_, plain) = inbox.items
    assert (claimed.pid, claimed.peer_pid) == (1, os.getpid())
    assert plain.pid == os.getpid()
    assert server.statistics().pid_mismatches == 1


async def test_connection_limit_per_agent(
    sock_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Past max_connections_per_agent, new connections of that agent are refused."""
    path = sock_dir / "hb.sock"
    async with trio.open_nursery() as nursery:
        server, _ = await start_server(nursery, path, lambda pid: "a", max_connections_per_agent=2)
        first, second, third = await connect(path), await connect(path), await connect(path)
        async with first, second, third:
            assert await third.receive_some() == b""
            stats = server.statistics()
            assert (stats.over_limit, stats.connections_active) == (1, 2)
        nursery.cancel_scope.cancel()


async def test_socket_is_private(sock_dir: Path) -> None:
    """The directory is created 0700 and the socket 0600; the file goes on exit."""
    path = sock_dir / "a" / "b" / "hb.sock"
    old_umask = os.umask(0)
    try:
        async with trio.open_nursery() as nursery:
            await start_server(nursery, path, lambda pid: None)
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_ISSOCK(path.stat().st_mode)
            assert [p.name for p in path.parent.iterdir()] == ["hb.sock"]
            nursery.cancel_scope.cancel()
    finally:
        os.umask(old_umask)
    assert not path.exists()


async def test_stale_socket_is_replaced(sock_dir: Path) -> None:
    """A socket file nobody listens on is replaced."""
    path = sock_dir / "hb.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as old:
        old.bind(str(path))
    old_inode = path.stat().st_ino
    async with trio.open_nursery() as nursery:
        _, inbox = await start_server(nursery, path, lambda pid: "a")
        assert path.stat().st_ino != old_inode
        async with await connect(path) as client:
            await client.send_all(line())
            await wait_until(lambda: len(inbox.items) == 1)
        nursery.cancel_scope.cancel()


async def test_refuses_to_clobber(sock_dir: Path) -> None:
    """A regular file, or a socket someone listens on, is left alone."""
    path = sock_dir / "hb.sock"
    path.write_text("precious")
    async with trio.open_nursery() as nursery:
        with pytest.raises(SocketSetupError, match="not a socket"):
            await start_server(nursery, path, lambda pid: None)
    assert path.read_text() == "precious"
    path.unlink()
    async with trio.open_nursery() as nursery:
        await start_server(nursery, path, lambda pid: None)
        with pytest.raises(SocketSetupError, match="in use"):
            await start_server(nursery, path, lambda pid: None)
        assert path.exists()
        nursery.cancel_scope.cancel()
    with pytest.raises(SocketSetupError, match="107 bytes"):
        await HeartbeatServer(sock_dir / ("x" * 120), resolve=str, on_heartbeat=Inbox()).run()


def test_parse_full_heartbeat() -> None:
    """Every seed field is read; Go's nanosecond RFC 3339 time is accepted."""
    raw = line(
        pid=42,
        timestamp="2024-05-01T12:00:00.123456789Z",
        version="2.1",
        status="ok",
        cpu=12,
        memory=2**63,
        extra={"ignored": True},
    )
    hb = parse_heartbeat(raw.strip(), peer_pid=7, received_at=3.5)
    assert hb == Heartbeat(42, 1714564800.123456, "2.1", "ok", 12.0, 2**63, 3.5, 7)


def test_parse_defaults() -> None:
    """Missing fields take the Go decoder's zero values; pid defaults to the peer's."""
    hb = parse_heartbeat(b"{}", peer_pid=7, received_at=0.0)
    assert hb == Heartbeat(7, None, "", "", 0.0, 0, 0.0, 7)
    assert parse_heartbeat(b'{"timestamp": 1.5}', peer_pid=7, received_at=0).timestamp == 1.5


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b"[" * 100_000,
        b'{"pid": true}',
        b'{"pid": 0}',
        b'{"pid": "1"}',
        b'{"cpu": "1"}',
        b'{"cpu": NaN}',
        b'{"cpu": -1}',
        b'{"memory": -1}',
        b'{"memory": 1.5}',
        b'{"memory": 18446744073709551616}',
        b'{"status": 1}',
        b'{"version": null}',
        b'{"timestamp": "yesterday"}',
        b'{"timestamp": "2024-05-01T12:00:00"}',
        b'{"timestamp": true}',
    ],
)
def test_parse_rejects(raw: bytes) -> None:
    """Anything but a JSON object with well-typed fields is rejected."""
    with pytest.raises(ValueError):
        parse_heartbeat(raw, peer_pid=7, received_at=0.0)
