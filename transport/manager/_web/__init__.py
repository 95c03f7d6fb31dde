"""The web console's routes: the page at ``/`` and its static files under ``/console/``.

Theory of operation
-------------------
The console is plain ES modules, one stylesheet and a vendored chart library (uPlot, MIT,
its licence beside it), shipped inside this package under ``static/`` and served as they
are: nothing is built or fetched at install time, and nothing is loaded from another
origin (fleets are often offline). ``GET /`` answers ``static/index.html``; ``/console/...``
is a Starlette :class:`~starlette.staticfiles.StaticFiles` over ``static/`` (ETag and
Last-Modified, so a browser revalidates cheaply). The page talks to ``/api/v1`` on the same
origin; hash routes (``#/nodes/...``) keep every page at ``/``.

Every answer of these routes carries :data:`SECURITY_HEADERS`: a strict
Content-Security-Policy (only this origin's scripts, styles, images and connections; no
inline script or style, no framing, no plugins), ``X-Content-Type-Options: nosniff``, no
referrer, and ``Cache-Control: no-cache`` (always revalidate: file names carry no version,
so a Manager upgrade must never leave an old script cached beside a new one).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "STATIC_DIR", "console_routes"]

STATIC_DIR = Path(__file__).parent / "static"
"""The console's files, shipped as package data."""

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
"""Only this origin; no inline scripts or styles (``data:`` images: uPlot's canvas only)."""

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
"""Headers on every answer of the console's routes."""


class _SecurityHeaders:
    """ASGI middleware: :data:`SECURITY_HEADERS` added to every response it passes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.decode("latin-1").lower() != "cache-control"
                ]
                headers += [
                    (name.lower().encode("latin-1"), value.encode("latin-1"))
                    for name, value in SECURITY_HEADERS.items()
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _index(request: Request) -> Response:
    """``GET /``: the console's single page."""
    return FileResponse(
        STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS
    )


def console_routes() -> list[BaseRoute]:
    """The console's routes, to add to the Manager's application.

    Returns:
        ``GET /`` (``index.html``) and ``/console/...`` (the static files), each answer
        with :data:`SECURITY_HEADERS`.
    """
    files = StaticFiles(directory=STATIC_DIR)
    return [
        Route("/", _index, methods=["GET", "HEAD"]),
        Mount("/console", app=_SecurityHeaders(files), name="console"),
    ]
