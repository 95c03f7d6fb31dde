"""The assembled app and its server: /health (not enveloped), the envelope's handlers on
every route, and serve_http: the bound address reported, a graceful stop on cancellation
(a request in flight completes), the port free afterwards."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path

import httpx
import trio
import trio.testing
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.transport.manager.fleet_helpers import fleet
from tests.transport.manager.http_helpers import SAFETY_S, error_of, is_rfc3339
from transport.manager._http._app import serve_http
from transport.manager._model import Role


async def test_health_and_unknown_routes(tmp_path: Path, sock_dir: Path) -> None:
    """GET /health needs no credentials and is the original's bare object; unknown routes
    and methods get the envelope."""
    async with fleet(tmp_path, sock_dir) as w:
        response = await w.client.get("/health")
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"status", "time"} and body["status"] == "ok"
        assert is_rfc3339(body["time"])
        error_of(await w.client.get("/api/v1/nope", headers=w.auth(Role.ADMIN)), 1004)
        error_of(await w.client.put("/api/v1/nodes", headers=w.auth(Role.ADMIN)), 1004, status=405)


async def test_serve_http_reports_its_address_and_stops_gracefully() -> None:
    """Started with the bound address; cancelled, it lets the request in flight finish,
    then returns, and the port is free again."""
    entered, release = trio.Event(), trio.Event()

    async def slow(request: Request) -> PlainTextResponse:
        entered.set()
        await release.wait()
        return PlainTextResponse("done")

    app = Starlette(routes=[Route("/slow", slow)])
    server = trio.CancelScope()
    answers: list[httpx.Response] = []
    addresses: list[str] = []

    async def run(task_status: trio.TaskStatus[Sequence[str]]) -> None:
        with server:
            await serve_http(app, "127.0.0.1", 0, task_status=task_status)

    async def ask(client: httpx.AsyncClient) -> None:
        answers.append(await client.get(f"{addresses[0]}/slow"))

    with trio.fail_after(SAFETY_S):
        async with httpx.AsyncClient() as client, trio.open_nursery() as nursery:
            addresses.extend(await nursery.start(run))
            nursery.start_soon(ask, client)
            await entered.wait()
            server.cancel()
            await trio.testing.wait_all_tasks_blocked()
            release.set()
    (address,) = addresses
    assert address.startswith("http://127.0.0.1:")
    assert [(r.status_code, r.text) for r in answers] == [(200, "done")]
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", int(address.rsplit(":", 1)[1])))
        sock.listen()  # nothing listens there any more
