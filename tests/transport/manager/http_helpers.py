"""Helpers for the REST API's tests: an app served for real, and a client against it.

``async with serve_app(app) as client:`` serves ``app`` with hypercorn's Trio worker on
127.0.0.1 (a free port) and yields an ``httpx.AsyncClient`` whose ``base_url`` is the
server; after the block the client is closed and the server shut down gracefully.

``envelope(response, code=0, status=200)`` checks the original's envelope and returns
``data``; ``error_of(response, code)`` checks an error envelope (``data`` null, the HTTP
status of the code) and returns the message.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.types import ASGIApp

from transport.manager._http._envelope import http_status

__all__ = ["SAFETY_S", "envelope", "error_of", "serve_app"]

#: A safety net against a hung test, never a timing assertion.
SAFETY_S = 60

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@asynccontextmanager
async def serve_app(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """Serve ``app`` on 127.0.0.1:<free port> (hypercorn, Trio) and yield a client to it.

    Args:
        app: The ASGI application (a Starlette app).

    Yields:
        An ``httpx.AsyncClient`` with ``base_url`` set to the server.
    """
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 5
    shutdown = trio.Event()
    with trio.fail_after(SAFETY_S):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                partial(serve, app, config, shutdown_trigger=shutdown.wait)  # type: ignore[arg-type]
            )
            try:
                async with httpx.AsyncClient(base_url=binds[0], timeout=SAFETY_S) as client:
                    yield client
            finally:
                shutdown.set()


def envelope(response: httpx.Response, *, status: int = 200, message: str = "success") -> Any:
    """Check a success envelope; its ``data``.

    Args:
        response: The response.
        status: The HTTP status expected.
        message: The envelope message expected.

    Returns:
        ``data``.
    """
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"code", "message", "data", "timestamp"}, body
    assert body["code"] == 0, body
    assert body["message"] == message, body
    assert _RFC3339.match(body["timestamp"]), body
    return body["data"]


def error_of(response: httpx.Response, code: int, *, status: int | None = None) -> str:
    """Check an error envelope with ``code`` (and the code's HTTP status); its message.

    Args:
        response: The response.
        code: The envelope code expected.
        status: The HTTP status expected, when not the code's.

    Returns:
        The message.
    """
    expected = status if status is not None else http_status(code)
    assert response.status_code == expected, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"code", "message", "data", "timestamp"}, body
    assert body["code"] == code, body
    assert body["data"] is None, body
    assert isinstance(body["message"], str) and body["message"], body
    assert _RFC3339.match(body["timestamp"]), body
    return str(body["message"])


def is_rfc3339(value: object) -> bool:
    """Whether ``value`` is an RFC 3339 date-time string.

    Args:
        value: Anything.

    Returns:
        True for e.g. ``2026-12-03T12:00:00Z``.
    """
    return isinstance(value, str) and _RFC3339.match(value) is not None
