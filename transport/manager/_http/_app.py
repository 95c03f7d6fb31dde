"""The REST API assembled, and served on Trio by hypercorn.

Theory of operation
-------------------
:func:`build_app` is the composition root of the HTTP side: one Starlette application with
``GET /health`` (not enveloped, as the original), ``GET /metrics`` (Prometheus text), the
account routes (:mod:`._users`) and the fleet's (:mod:`._nodes`, :mod:`._metrics_api`,
:mod:`._updates`), the console's API (:mod:`._console`: dashboard, agent details, event
streams) and its pages (``/`` and ``/console/``, :mod:`transport.manager._web`), the
envelope's error handlers and catch-all middleware, and the :class:`~._auth.Authenticator`
installed for every route to find. It holds no task: the
store is synchronous (called in worker threads) and the pool's own task is run by the
caller.

:func:`serve_http` serves an application with hypercorn's Trio worker (no second event
loop) until cancelled. Cancellation does not tear the server down mid-response: it pulls
hypercorn's shutdown trigger and lets requests in flight finish within
:data:`GRACEFUL_S` (the server is shielded until then, then cancelled), and only then lets
the cancellation go on.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from transport.manager._alerts import Thresholds
from transport.manager._events import EventHub
from transport.manager._http._auth import Authenticator, AuthSettings, install
from transport.manager._http._console import KEEPALIVE_S, Console, console_api_routes
from transport.manager._http._envelope import exception_handlers, middleware
from transport.manager._http._json import rfc3339
from transport.manager._http._metrics_api import metrics_routes
from transport.manager._http._nodes import Fleet, node_routes
from transport.manager._http._prom import FleetCollector, Reader, prometheus_route
from transport.manager._http._updates import update_routes
from transport.manager._http._users import user_routes
from transport.manager._web import console_routes

if TYPE_CHECKING:
    from transport.manager._pool import DaemonPool
    from transport.manager._store import Store

__all__ = ["GRACEFUL_S", "build_app", "serve_http"]

GRACEFUL_S = 5.0
"""How long requests in flight may take to finish once the server is told to stop."""


def build_app(
    store: Store,
    pool: DaemonPool,
    auth: AuthSettings,
    *,
    ingest_stats: Reader | None = None,
    offline_after_s: float = 180.0,
    clock: Callable[[], float] = time.time,
    events: EventHub | None = None,
    thresholds: Thresholds | None = None,
    keepalive_s: float = KEEPALIVE_S,
) -> Starlette:
    """The Manager's REST API.

    Args:
        store: The Manager's store.
        pool: The daemon client pool (its ``run`` task is the caller's).
        auth: JWT and password settings.
        ingest_stats: The gRPC ingest's figures for ``/metrics`` (name -> value; a name
            ending in ``_total`` is a counter), or None.
        offline_after_s: A node is shown offline after this long without a heartbeat.
        clock: Unix seconds now.
        events: The event hub the console's event stream reads and the routes publish to
            (the gRPC service and the jobs publish to the same one); None: a new one.
        thresholds: The dashboard's alert thresholds (``alerts`` of manager.yaml).
        keepalive_s: The console's event streams write a comment after this long idle.

    Returns:
        The Starlette application (ASGI).
    """
    authenticator = Authenticator(store, auth, clock=clock)
    hub = events if events is not None else EventHub()
    fleet = Fleet(store, pool, offline_after_s=offline_after_s, clock=clock, events=hub)
    console = Console(fleet, hub, thresholds or Thresholds(), keepalive_s=keepalive_s)
    collector = FleetCollector(
        lambda: store.node_counts(online_since=fleet.online_since()),
        agents=store.agent_counts,
        ingest=ingest_stats,
        pool=_pool_reader(pool),
    )

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "time": rfc3339(clock())})

    routes: list[BaseRoute] = [
        Route("/health", health, methods=["GET"]),
        prometheus_route(collector),
        *user_routes(authenticator),
        *console_api_routes(console),
        *node_routes(fleet),
        *metrics_routes(fleet),
        *update_routes(fleet),
        *console_routes(),
    ]
    app = Starlette(routes=routes, exception_handlers=exception_handlers(), middleware=middleware())
    install(app, authenticator)
    return app


def _pool_reader(pool: DaemonPool) -> Reader:
    """The pool's figures for ``/metrics``: ``open_channels`` a gauge, the rest counters."""

    def read() -> Mapping[str, float]:
        figures = dataclasses.asdict(pool.statistics())
        return {
            key if key == "open_channels" else f"{key}_total": float(value)
            for key, value in figures.items()
        }

    return read


async def serve_http(
    app: Starlette,
    host: str,
    port: int,
    *,
    graceful_s: float = GRACEFUL_S,
    task_status: trio.TaskStatus[Sequence[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` over HTTP until cancelled, then stop gracefully.

    Args:
        app: The application.
        host: The address to listen on (``0.0.0.0``, ``127.0.0.1``, ``::``).
        port: The port (0: any free one).
        graceful_s: How long requests in flight may take once cancelled.
        task_status: Started with the bound addresses, e.g. ``["http://127.0.0.1:8080"]``.

    Raises:
        OSError: The address cannot be bound.
    """
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    # Hypercorn's own messages go through the logging setup of the program (by default
    # hypercorn would also write each of them to standard error itself: twice).
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = graceful_s
    stop = trio.Event()
    shield = trio.CancelScope(shield=True)

    async def server(task_status: trio.TaskStatus[Sequence[str]]) -> None:
        with shield:
            await serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        binds: Sequence[str] = await nursery.start(server)
        task_status.started(list(binds))
        try:
            await trio.sleep_forever()
        finally:
            stop.set()
            shield.deadline = trio.current_time() + graceful_s + 1.0
