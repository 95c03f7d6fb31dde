"""The REST envelope, its error codes and request parsing, through a real HTTP server."""

from __future__ import annotations

import logging

import httpx
import pytest
import trio
from hypothesis import given, strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.transport.manager.http_helpers import envelope, error_of, serve_app
from transport._convert import ResourcePoint
from transport.manager._errors import ConflictError, NotFoundError, StoreError
from transport.manager._http._envelope import (
    ApiError,
    ErrorCode,
    Fields,
    exception_handlers,
    http_status,
    json_body,
    middleware,
    ok,
    page_ok,
    paging,
    query_int,
    query_str,
    query_time,
)
from transport.manager._http._json import (
    agent_json,
    audit_json,
    metric_json,
    node_json,
    parse_rfc3339,
    resource_point_json,
    rfc3339,
    token_json,
    update_job_json,
    user_json,
)
from transport.manager._model import (
    Agent,
    ApiToken,
    AuditEntry,
    MetricRow,
    Node,
    NodeStatus,
    Page,
    Role,
    UpdateJob,
    UpdateTarget,
    User,
    UserStatus,
)

T = 1_800_000_000.0


async def _paged(request: Request) -> JSONResponse:
    page, size = paging(request)
    items = tuple(range((page - 1) * size, min(page * size, 45)))
    return page_ok(Page(items, page, size, 45), lambda n: {"n": n})


async def _echo(request: Request) -> JSONResponse:
    fields = Fields(await json_body(request))
    return ok(
        {
            "name": fields.text("name", min_len=3, max_len=10),
            "count": fields.integer("count", required=False, default=7, minimum=0, maximum=9),
            "tags": fields.text_list("tags", required=False),
            "role": fields.text("role", required=False, choices=("a", "b")),
        },
        status=201,
        message="created",
    )


async def _query(request: Request) -> JSONResponse:
    return ok(
        {
            "n": query_int(request, "n", default=5, minimum=1),
            "s": query_str(request, "s", default="x", choices=("x", "y")),
            "t": query_time(request, "t"),
        }
    )


async def _raise(request: Request) -> JSONResponse:
    kind = request.path_params["kind"]
    if kind == "api":
        raise ApiError(ErrorCode.NODE_NOT_FOUND, "node n-1 not found")
    if kind == "missing":
        raise NotFoundError("user 9 not found")
    if kind == "conflict":
        raise ConflictError("user alice exists")
    if kind == "store":
        raise StoreError("disk I/O error at /secret/path")
    raise RuntimeError("internal detail /secret/path")


def _app() -> Starlette:
    return Starlette(
        routes=[
            Route("/paged", _paged),
            Route("/echo", _echo, methods=["POST"]),
            Route("/query", _query),
            Route("/raise/{kind}", _raise),
        ],
        exception_handlers=exception_handlers(),
        middleware=middleware(),
    )


async def test_success_and_pages() -> None:
    async with serve_app(_app()) as client:
        data = envelope(await client.get("/paged", params={"page": 3, "page_size": 20}))
        assert data["list"] == [{"n": n} for n in range(40, 45)]
        assert data["page_info"] == {
            "page": 3,
            "page_size": 20,
            "total": 45,
            "pages": 3,
            "total_pages": 3,
        }
        assert envelope(await client.get("/paged"))["page_info"]["page_size"] == 20
        for params, name in (
            ({"page": 0}, "page"),
            ({"page": "x"}, "page"),
            ({"page_size": 101}, "page_size"),
            ({"page_size": 0}, "page_size"),
            ({"page_size": "2.5"}, "page_size"),
        ):
            message = error_of(await client.get("/paged", params=params), 1001)
            assert message.startswith(f"{name}: "), message


async def test_bodies() -> None:
    async with serve_app(_app()) as client:
        data = envelope(
            await client.post("/echo", json={"name": "abc", "tags": ["t"]}),
            status=201,
            message="created",
        )
        assert data == {"name": "abc", "count": 7, "tags": ["t"], "role": ""}
        cases = [
            (b"{", "request body: invalid JSON at line 1 column 2"),
            (b"", "request body: expected a JSON object; got an empty body"),
            (b"[1]", "request body: expected a JSON object; got list"),
            (b"\xff\xfe", "request body: not UTF-8"),
            (b'{"name": 3}', "name: expected a string; got the number 3"),
            (b"{}", "name: required"),
            (b'{"name": "ab"}', "name: must be at least 3 characters"),
            (b'{"name": "abcdefghijk"}', "name: must be at most 10 characters"),
            (b'{"name": "abc", "count": true}', "count: expected an integer; got a boolean"),
            (b'{"name": "abc", "count": 10}', "count: must be <= 9; got 10"),
            (b'{"name": "abc", "count": -1}', "count: must be >= 0; got -1"),
            (b'{"name": "abc", "tags": "t"}', "tags: expected a list of strings"),
            (b'{"name": "abc", "tags": ["", 1]}', "tags[0]: expected a non-empty string"),
            (b'{"name": "abc", "role": "c"}', "role: expected one of a, b; got 'c'"),
        ]
        for raw, expected in cases:
            message = error_of(await client.post("/echo", content=raw), 1001)
            assert message.startswith(expected), (raw, message)
        # too large, declared or chunked (over a raw socket: httpx warns about a body the
        # server refuses before reading it)
        head = "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        declared = await _raw(client, f"{head}Content-Length: {2 << 20}\r\n\r\n".encode())
        body = b"x" * ((1 << 20) + 1)
        chunked = f"{head}Transfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n".encode()
        chunked += body + b"\r\n0\r\n\r\n"
        for answer in (declared, await _raw(client, chunked)):
            assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
            assert b"request body: larger than 1048576 bytes" in answer
        data = envelope(
            await client.post("/echo", json={"name": "abc", "count": 2.0}),
            status=201,
            message="created",
        )
        assert data["count"] == 2


async def _raw(client: httpx.AsyncClient, request: bytes) -> bytes:
    """Send ``request`` as it is to the client's server; the whole answer."""
    url = client.base_url
    assert url.host and url.port
    stream = await trio.open_tcp_stream(url.host, url.port)
    async with stream:
        await stream.send_all(request)
        answer = b""
        while chunk := await stream.receive_some():
            answer += chunk
    return answer


async def test_queries() -> None:
    async with serve_app(_app()) as client:
        data = envelope(await client.get("/query", params={"t": "2026-12-03T12:00:00Z"}))
        assert data == {"n": 5, "s": "x", "t": parse_rfc3339("2026-12-03T12:00:00Z")}
        assert error_of(await client.get("/query", params={"n": 0}), 1001).startswith("n: ")
        assert error_of(await client.get("/query", params={"s": "z"}), 1001).startswith("s: ")
        for bad in ("yesterday", "2026-12-03", "2026-12-03T12:00:00"):
            message = error_of(await client.get("/query", params={"t": bad}), 1001)
            assert message.startswith("t: "), message


async def test_errors(caplog: pytest.LogCaptureFixture) -> None:
    async with serve_app(_app()) as client:
        assert "n-1" in error_of(await client.get("/raise/api"), 2001)
        assert "/nowhere" in error_of(await client.get("/nowhere"), 1004)
        assert "POST" in error_of(await client.post("/paged"), 1004, status=405)
        assert error_of(await client.get("/raise/missing"), 1004) == "user 9 not found"
        assert error_of(await client.get("/raise/conflict"), 1005) == "user alice exists"
        with caplog.at_level(logging.ERROR, "transport.manager.http"):
            assert error_of(await client.get("/raise/store"), 5002) == "database error"
            assert error_of(await client.get("/raise/boom"), 5001) == "internal server error"
        assert "internal detail" in caplog.text


def test_status_table() -> None:
    assert [http_status(c) for c in (0, 1001, 1002, 1003, 1004, 1005)] == [
        200,
        400,
        401,
        403,
        404,
        409,
    ]
    assert [http_status(c) for c in (1007, 1008, 1009, 2001, 2008, 2009)] == [
        401,
        401,
        401,
        404,
        403,
        409,
    ]
    assert [http_status(c) for c in (5001, 5002, 5004, 1999, 3005)] == [500, 500, 500, 400, 400]
    with pytest.raises(ValueError, match="non-zero"):
        ApiError(0, "x")


@given(st.floats(min_value=0, max_value=2**33, allow_nan=False))
def test_rfc3339_round_trip(when: float) -> None:
    text = rfc3339(when)
    assert text is not None and text.endswith("Z")
    assert parse_rfc3339(text) == float(int(when))


@given(st.integers(min_value=-12 * 60, max_value=14 * 60), st.integers(0, 2**32))
def test_parse_offsets(minutes: int, when: int) -> None:
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    import datetime as dt

    zone = dt.timezone(dt.timedelta(minutes=minutes))
    local = dt.datetime.fromtimestamp(when, zone).strftime("%Y-%m-%dT%H:%M:%S")
    assert parse_rfc3339(f"{local}{sign}{hours:02d}:{mins:02d}") == when
    assert rfc3339(None) is None


def test_json_shapes() -> None:
    """The original's field names; times RFC 3339 or null; maps never null; numbers."""
    node = node_json(Node(id=1, node_id="n-1", status=NodeStatus.ONLINE, created_at=T))
    assert set(node) == {
        "id", "created_at", "updated_at", "node_id", "hostname", "ip", "os", "arch", "labels",
        "daemon_version", "agent_version", "status", "last_seen_at", "register_at", "grpc_port",
    }  # fmt: skip
    assert node["labels"] == {} and node["status"] == "online" and node["last_seen_at"] is None
    assert node["created_at"] == "2027-01-15T08:00:00Z"
    labelled = node_json(Node(id=1, node_id="n", labels={"a": "b"}, last_seen_at=T + 0.9))
    assert labelled["labels"] == {"a": "b"} and labelled["last_seen_at"] == "2027-01-15T08:00:00Z"
    agent = agent_json(Agent(id=2, node_id="n", agent_id="a", pid=42, last_heartbeat=T))
    assert set(agent) == {
        "id", "created_at", "updated_at", "node_id", "agent_id", "type", "version", "status",
        "config", "pid", "last_heartbeat", "last_sync_time",
    }  # fmt: skip
    assert agent["pid"] == 42 and agent["last_sync_time"] is None
    row = metric_json(MetricRow(id=3, node_id="n", type="cpu", timestamp=int(T), values={"u": 5}))
    assert set(row) == {"id", "created_at", "node_id", "type", "timestamp", "values"}
    assert row["values"] == {"u": 5.0} and isinstance(row["values"]["u"], float)
    assert row["timestamp"] == "2027-01-15T08:00:00Z"
    point = resource_point_json(ResourcePoint(timestamp=int(T)))
    assert point == {
        "timestamp": int(T), "cpu": 0.0, "memory_rss": 0, "memory_vms": 0,
        "disk_read_bytes": 0, "disk_write_bytes": 0, "open_files": 0,
    }  # fmt: skip
    entry = audit_json(AuditEntry(id=1, at=T, actor="a", action="x"))
    assert entry["detail"] == {} and entry["ip"] == "" and entry["outcome"] == "ok"
    job = update_job_json(
        UpdateJob(
            id=1, created_at=T, actor="a", component="agent", version="2",
            targets=(UpdateTarget(node_id="n", state="pending"),),
        )
    )  # fmt: skip
    assert job["targets"] == [
        {"node_id": "n", "state": "pending", "update_id": "", "message": "",
         "updated_at": "1970-01-01T00:00:00Z"}
    ]  # fmt: skip
    token = token_json(ApiToken(id=1, user_id=2, name="ci", prefix="hvt_abcdefgh", created_at=T))
    assert token["revoked"] is False and token["expires_at"] is None
    user = user_json(User(id=1, username="u", role=Role.ADMIN, status=UserStatus.DISABLED))
    assert user["role"] == "admin" and user["status"] == "disabled" and "password" not in user
