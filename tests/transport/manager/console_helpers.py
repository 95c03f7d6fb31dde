"""Helpers of the console API's tests: the whole app with an event hub, and an SSE reader.

``async with console(tmp_path, sock_dir, agents=[...]) as w:`` is
:func:`tests.transport.manager.fleet_helpers.fleet` with the app built around an
:class:`~transport.manager._events.EventHub` (``w.events``, whose ``run`` task is
running) and a short keep-alive. ``SseReader`` reads a ``text/event-stream`` response
event by event.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from supervisor import AgentSpec
from tests.transport.daemon.grpc_helpers import Served, serving
from tests.transport.manager.fleet_helpers import World, register
from tests.transport.manager.http_helpers import serve_app
from transport import open_grpc_loop
from transport.manager._alerts import Thresholds
from transport.manager._events import EventHub
from transport.manager._http._app import build_app
from transport.manager._http._auth import Authenticator, AuthSettings
from transport.manager._model import Role
from transport.manager._pool import DaemonPool
from transport.manager._store import Store

__all__ = ["JWT_SECRET", "ConsoleWorld", "SseReader", "console", "make_users"]

JWT_SECRET = "console-tests-secret"


@dataclass
class ConsoleWorld(World):
    """The fleet world plus the event hub and the authenticator (to issue JWTs)."""

    events: EventHub | None = None
    authenticator: Authenticator | None = None

    def jwt(self, role: Role) -> str:
        """A JWT of the user named after ``role``."""
        assert self.authenticator is not None
        user, stored = self.store.credentials(role.value)
        return self.authenticator.issue_jwt(user, stored, now=time.time())


def make_users(store: Store) -> dict[Role, str]:
    """A user per role (named after it) with an API token; the tokens."""
    tokens: dict[Role, str] = {}
    now = time.time()
    for role in Role:
        user = store.create_user(role.value, "not-a-hash", role=role, now=now)
        secret, digest, prefix = Authenticator.new_token_secret()
        store.create_token(user.id, "tests", digest, prefix, expires_at=None, now=now)
        tokens[role] = secret
    return tokens


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
    """The app over a fresh SQLite store, with a daemon of ``agents`` as node ``n1``.

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
    store = Store.open(f"sqlite:///{tmp / 'manager.db'}")
    try:
        tokens = await trio.to_thread.run_sync(make_users, store)
        async with AsyncExitStack() as stack:
            served: Served | None = None
            if agents is not None:
                served = await stack.enter_async_context(serving(tmp / "daemon", sock_dir, agents))
                port = int(served.addresses[0].rsplit(":", 1)[1])
                await trio.to_thread.run_sync(
                    lambda: register(store, "n1", grpc_port=port, hostname="daemon-host")
                )
            else:
                await stack.enter_async_context(open_grpc_loop())
            nursery = await stack.enter_async_context(trio.open_nursery())
            pool = DaemonPool(keepalive_s=None, idle_s=None, timeout_s=20.0)
            await nursery.start(pool.run)
            hub = EventHub(queue_size=queue_size)
            await nursery.start(hub.run, store.list_agents)
            settings = AuthSettings(jwt_secret=JWT_SECRET)
            app = build_app(
                store,
                pool,
                settings,
                events=hub,
                thresholds=thresholds,
                keepalive_s=keepalive_s,
            )
            authenticator = Authenticator(store, settings)
            async with serve_app(app) as client:
                yield ConsoleWorld(
                    store, pool, client, tokens, served, events=hub, authenticator=authenticator
                )
            nursery.cancel_scope.cancel()
    finally:
        store.close()


class SseReader:
    """Reads Server-Sent Events from a streaming httpx response.

    Args:
        response: The response (``client.stream(...)``), status already checked.
    """

    def __init__(self, response: httpx.Response) -> None:
        self._bytes = response.aiter_bytes()
        self._buffer = b""

    async def block(self) -> str:
        """The next block (the text up to a blank line), comments included."""
        while b"\n\n" not in self._buffer:
            self._buffer += await self._bytes.__anext__()
        block, _, self._buffer = self._buffer.partition(b"\n\n")
        return block.decode()

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
