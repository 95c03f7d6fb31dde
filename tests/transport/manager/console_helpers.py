"""Helpers of the console API's tests: the whole app with an event hub, and an SSE reader.

``async with console(tmp_path, sock_dir, agents=[...]) as w:`` is
:func:`tests.transport.manager.fleet_helpers.fleet` with the app built around an
:class:`~transport.manager._events.EventHub` (``w.events``, whose ``run`` task is
running) and a short keep-alive. :func:`open_sse` opens a ``text/event-stream`` response
on a connection of its own (closing it is the browser leaving) and reads it event by event.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from supervisor import AgentSpec
from tests.transport.manager.fleet_helpers import JWT_SECRET, World, fleet
from transport.manager._alerts import Thresholds
from transport.manager._events import EventHub
from transport.manager._http._auth import Authenticator, AuthSettings
from transport.manager._model import Role

__all__ = ["ConsoleWorld", "SseReader", "SseResponse", "console", "open_sse"]


@dataclass
class ConsoleWorld(World):
    """The fleet world plus the event hub and an authenticator (to issue JWTs)."""

    events: EventHub | None = None
    authenticator: Authenticator | None = None

    def jwt(self, role: Role) -> str:
        """A JWT of the user named after ``role`` (blocking: call it in a thread)."""
        assert self.authenticator is not None
        user, stored = self.store.credentials(role.value)
        return self.authenticator.issue_jwt(user, stored, now=time.time())


@asynccontextmanager
async def console(
    tmp: Path,
    sock_dir: Path,
    *,
    agents: Sequence[AgentSpec] | None = None,
    thresholds: Thresholds | None = None,
    keepalive_s: float = 15.0,
    queue_size: int = 256,
) -> AsyncIterator[ConsoleWorld]:
    """:func:`~tests.transport.manager.fleet_helpers.fleet` with the console's options: an
    event hub (its ``run`` task running), thresholds, a keep-alive interval.

    Args:
        tmp: A directory for the database (and the daemon's files).
        sock_dir: A short directory for the daemon's Unix socket.
        agents: The daemon's agents; None: no daemon, no node.
        thresholds: The alert thresholds.
        keepalive_s: The event streams' keep-alive interval.
        queue_size: The hub's per-subscriber queue.

    Yields:
        The world.
    """
    hub = EventHub(queue_size=queue_size)
    options = {"events": hub, "thresholds": thresholds, "keepalive_s": keepalive_s}
    async with (
        fleet(tmp, sock_dir, agents=agents, app_options=options) as w,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(hub.run, w.store.list_agents)
        authenticator = Authenticator(w.store, AuthSettings(jwt_secret=JWT_SECRET))
        fields = {f.name: getattr(w, f.name) for f in dataclasses.fields(World)}
        yield ConsoleWorld(**fields, events=hub, authenticator=authenticator)
        nursery.cancel_scope.cancel()


class SseReader:
    """Reads Server-Sent Events from a byte stream (see :func:`open_sse`).

    Args:
        stream: The connection, positioned after the response's headers.
        buffered: Body bytes already read with the headers.
    """

    def __init__(self, stream: trio.abc.ReceiveStream, buffered: bytes = b"") -> None:
        self._stream = stream
        self._buffer = buffered

    async def block(self) -> str:
        """The next block (the text up to a blank line), comments included.

        Raises:
            EOFError: The server ended the stream.
        """
        while b"\n\n" not in self._buffer:
            data = await self._stream.receive_some()
            if not data:
                raise EOFError("the stream ended")
            self._buffer += data
        block, _, self._buffer = self._buffer.partition(b"\n\n")
        return block.decode()

    async def rest(self) -> bytes:
        """Everything up to the end of the stream."""
        while data := await self._stream.receive_some():
            self._buffer += data
        rest, self._buffer = self._buffer, b""
        return rest

    async def event(self) -> tuple[str, Any]:
        """The next event (comments and ``retry:`` skipped): its name and JSON data."""
        while True:
            block = await self.block()
            fields = dict(
                line.split(": ", 1) for line in block.split("\n") if not line.startswith(":")
            )
            if "event" in fields:
                return fields["event"], json.loads(fields["data"])

    async def until(self, name: str, predicate: Any = None) -> Any:
        """The data of the next event called ``name`` (matching ``predicate``)."""
        while True:
            event, data = await self.event()
            if event == name and (predicate is None or predicate(data)):
                return data


@dataclass
class SseResponse:
    """A response's status and headers (names in lower case), and its body's reader."""

    status: int
    headers: dict[str, str]
    reader: SseReader


@asynccontextmanager
async def open_sse(base_url: str, target: str) -> AsyncIterator[SseResponse]:
    """``GET target`` over a connection of its own (HTTP/1.0: the body ends with the
    connection), closed after the block as a browser leaving would.

    Args:
        base_url: ``http://host:port``.
        target: The path and query.

    Yields:
        The response.
    """
    url = httpx.URL(base_url)
    host, port = url.host, url.port or 80
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        request = (
            f"GET {target} HTTP/1.0\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
        )
        await stream.send_all(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = await stream.receive_some()
            if not data:
                raise EOFError("no response")
            head += data
        head, _, body = head.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines)
        }
        yield SseResponse(int(status_line.split()[1]), headers, SseReader(stream, body))
