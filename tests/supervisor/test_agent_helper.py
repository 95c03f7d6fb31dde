"""The agent-side helper: plain sockets, no Trio, as an agent would use it."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor import agent
from supervisor._health._heartbeat import parse_heartbeat
from supervisor.agent import Heartbeater, notify, send_heartbeat


@pytest.fixture
def receiver(sock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket standing in for the supervisor, named by NOTIFY_SOCKET."""
    path = str(sock_dir / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5.0)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        yield sock


@pytest.fixture
def listener(sock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A stream socket standing in for the heartbeat server."""
    path = str(sock_dir / "hb.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)
        sock.listen()
        sock.settimeout(5.0)
        monkeypatch.setenv("HOSTVISOR_HEARTBEAT_SOCKET", path)
        yield sock


def read_lines(conn: socket.socket, count: int) -> list[bytes]:
    conn.settimeout(5.0)
    data = b""
    while data.count(b"\n") < count:
        chunk = conn.recv(4096)
        assert chunk, "connection closed early"
        data += chunk
    return data.splitlines()


def test_notify_sends_one_datagram(receiver: socket.socket) -> None:
    """All requested assignments go in one datagram; a status stays on one line."""
    assert notify(ready=True, status="two\nlines", stopping=True, watchdog=True)
    data = receiver.recv(4096)
    assert data == b"READY=1\nSTATUS=two lines\nSTOPPING=1\nWATCHDOG=1"


def test_notify_without_socket_or_content(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without NOTIFY_SOCKET, or with nothing to say, nothing is sent."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not notify(ready=True)
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify.sock")
    assert not notify()
    assert not notify(ready=True)  # the socket is missing: reported, not raised


def test_notify_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """A NOTIFY_SOCKET starting with "@" names the abstract namespace, as in sd_notify."""
    name = f"hostvisor-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify(status="abstract")
        assert sock.recv(100) == b"STATUS=abstract"


def test_heartbeat_line_is_what_the_server_accepts(listener: socket.socket) -> None:
    """One JSON object per line with the seed's fields, parseable by the receiver."""
    with Heartbeater() as beats:
        assert beats.send(status="ok", version="1.2.3", cpu=2.5, memory=4096)
        assert beats.send(status="busy")
        conn, _ = listener.accept()
        with conn:
            first, second = read_lines(conn, 2)
    record = json.loads(first)
    assert set(record) == {"pid", "timestamp", "version", "status", "cpu", "memory"}
    assert record["timestamp"].endswith("Z")
    hb = parse_heartbeat(first, peer_pid=os.getpid(), received_at=0.0)
    assert (hb.pid, hb.status, hb.version, hb.cpu, hb.memory) == (
        os.getpid(),
        "ok",
        "1.2.3",
        2.5,
        4096,
    )
    assert json.loads(second)["status"] == "busy"


def test_heartbeater_reconnects(listener: socket.socket) -> None:
    """When the server hangs up, the next send opens a new connection and gets through."""
    with Heartbeater() as beats:
        assert beats.send()
        first, _ = listener.accept()
        with first:
            read_lines(first, 1)
        assert beats.send(status="again")  # the old connection is broken: EPIPE, reconnect
        second, _ = listener.accept()
        with second:
            (line,) = read_lines(second, 1)
    assert json.loads(line)["status"] == "again"


def test_heartbeater_without_server(sock_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No socket configured, or nobody listening: send reports False and does not raise."""
    monkeypatch.delenv("HOSTVISOR_HEARTBEAT_SOCKET", raising=False)
    assert not Heartbeater().send()
    assert not send_heartbeat(None)
    with Heartbeater(sock_dir / "missing.sock") as beats:
        assert not beats.send()


def test_send_heartbeat_shares_one_connection(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Repeated send_heartbeat calls for one path reuse a single connection."""
    monkeypatch.setattr(agent, "_shared", {})
    path = listener.getsockname()
    assert send_heartbeat(path, status="one")
    assert send_heartbeat(None, status="two")  # the same path, through the environment
    conn, _ = listener.accept()
    with conn:
        lines = read_lines(conn, 2)
        assert [json.loads(line)["status"] for line in lines] == ["one", "two"]
        listener.settimeout(0.0)
        with pytest.raises(BlockingIOError):
            listener.accept()  # no second connection was made
    agent._shared[path].close()
