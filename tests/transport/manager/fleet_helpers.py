"""Helpers of the fleet REST tests: the whole app over a real SQLite store, a real daemon
pool and, when asked, a real daemon gRPC service over real agents.

``async with fleet(tmp_path, sock_dir, agents=[...]) as w:`` opens a store in
``tmp_path``, creates an admin, an operator and a viewer with API tokens
(``w.auth(Role.X)`` is the header), serves ``build_app`` on 127.0.0.1 and yields a
:class:`World` whose ``client`` talks to it. With ``agents`` a daemon's services run over
a real supervisor of those agents on 127.0.0.1, and node ``n1`` is registered at its
address (``w.served``); without, no node exists.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from supervisor import AgentSpec
from tests.transport.daemon.grpc_helpers import Served, serving
from tests.transport.manager.http_helpers import serve_app
from transport import MetricPoint, NodeRegistration, open_grpc_loop
from transport.daemon._service import UpdatePort
from transport.manager._http._app import build_app
from transport.manager._http._auth import Authenticator, AuthSettings
from transport.manager._model import Node, Role
from transport.manager._pool import DaemonPool
from transport.manager._store import Store

__all__ = ["JWT_SECRET", "World", "fleet", "register", "seed_metrics"]

JWT_SECRET = "fleet-tests-secret"
"""The app's ``jwt.secret``."""


@dataclass
class World:
    """The app under test and what it serves from."""

    store: Store
    pool: DaemonPool
    client: httpx.AsyncClient
    tokens: dict[Role, str]
    served: Served | None = None
    ingest: dict[str, float] = field(default_factory=dict)

    def auth(self, role: Role) -> dict[str, str]:
        """The ``Authorization`` header of the user with ``role``."""
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    async def db(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """A store call in a worker thread."""
        return await trio.to_thread.run_sync(lambda: function(*args, **kwargs))

    async def audit_actions(self) -> list[tuple[str, str, str, str]]:
        """Every audit entry as (actor, action, target, outcome), oldest first."""
        page = await self.db(self.store.list_audit, page=1, page_size=100)
        entries = sorted(page.items, key=lambda entry: entry.id)
        return [(e.actor, e.action, e.target, e.outcome) for e in entries]


def register(
    store: Store,
    node_id: str,
    *,
    now: float | None = None,
    ip: str = "127.0.0.1",
    grpc_port: int | None = None,
    labels: Mapping[str, str] | None = None,
    hostname: str = "",
) -> Node:
    """Register a node through the store (as RegisterNode does)."""
    registration = NodeRegistration(
        node_id=node_id,
        hostname=hostname or f"host-{node_id}",
        ip=ip,
        os="linux",
        arch="amd64",
        labels=dict(labels or {}),
        daemon_version="1.2.3",
        agent_version="0.9",
    )
    return store.register_node(
        registration, now=time.time() if now is None else now, grpc_port=grpc_port
    )


def seed_metrics(
    store: Store, node_id: str, kind: str, samples: Sequence[tuple[int, Mapping[str, float]]]
) -> int:
    """Store metric rows ``(timestamp, values)`` of one type for a node."""
    points = [MetricPoint(kind, ts, dict(values)) for ts, values in samples]
    return store.report_metrics(node_id, points, now=time.time())


def _users(store: Store) -> dict[Role, str]:
    tokens: dict[Role, str] = {}
    now = time.time()
    for role in Role:
        user = store.create_user(role.value, "not-a-hash", role=role, now=now)
        secret, digest, prefix = Authenticator.new_token_secret()
        store.create_token(user.id, "tests", digest, prefix, expires_at=None, now=now)
        tokens[role] = secret
    return tokens


@asynccontextmanager
async def fleet(
    tmp: Path,
    sock_dir: Path,
    *,
    agents: Sequence[AgentSpec] | None = None,
    updates: UpdatePort | None = None,
    offline_after_s: float = 180.0,
    timeout_s: float = 20.0,
    app_options: Mapping[str, Any] | None = None,
) -> AsyncIterator[World]:
    """The app served over a fresh store (and a daemon of ``agents`` as node ``n1``).

    Args:
        tmp: A directory for the database (and the daemon's files).
        sock_dir: A short directory for the daemon's Unix socket.
        agents: The daemon's agents; None: no daemon, no node.
        updates: The daemon's update service (PushUpdate/GetUpdateResult), if any.
        offline_after_s: The app's offline threshold.
        timeout_s: The pool's call deadline.
        app_options: More keyword arguments of ``build_app`` (``events``, ``thresholds``,
            ``keepalive_s``, ...).

    Yields:
        The world.
    """
    store = Store.open(f"sqlite:///{tmp / 'manager.db'}")
    try:
        tokens = await trio.to_thread.run_sync(_users, store)
        async with AsyncExitStack() as stack:
            served: Served | None = None
            if agents is not None:
                served = await stack.enter_async_context(
                    serving(tmp / "daemon", sock_dir, agents, updates=updates)
                )
                port = int(served.addresses[0].rsplit(":", 1)[1])
                await trio.to_thread.run_sync(
                    lambda: register(store, "n1", grpc_port=port, hostname="daemon-host")
                )
            else:
                await stack.enter_async_context(open_grpc_loop())
            nursery = await stack.enter_async_context(trio.open_nursery())
            pool = DaemonPool(keepalive_s=None, idle_s=None, timeout_s=timeout_s)
            await nursery.start(pool.run)
            ingest: dict[str, float] = {"reports_total": 0.0, "queue_depth": 0.0}
            app = build_app(
                store,
                pool,
                AuthSettings(jwt_secret=JWT_SECRET),
                ingest_stats=lambda: ingest,
                offline_after_s=offline_after_s,
                **(app_options or {}),
            )
            async with serve_app(app) as client:
                yield World(store, pool, client, tokens, served, ingest)
            nursery.cancel_scope.cancel()
    finally:
        store.close()
