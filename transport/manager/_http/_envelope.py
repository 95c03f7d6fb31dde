"""The REST API's envelope, error codes, request parsing and error handlers.

Theory of operation
-------------------
Every answer but ``/health`` and ``/metrics`` is the original Manager's envelope::

    {"code": 0, "message": "success", "data": ..., "timestamp": "2026-12-03T12:00:00Z"}

A handler returns :func:`ok` (or :func:`page_ok` for a list) and raises :class:`ApiError`
for anything else; the HTTP status follows the code (:func:`http_status`, the original's
table). Errors carry ``"data": null`` (the original sends ``""``).

Requests are parsed by small helpers that raise code 1001 naming what is wrong:
:func:`paging` (``page`` >= 1, ``page_size`` 1-100), :func:`query_int`,
:func:`query_str`, :func:`query_time`, and :func:`json_body` (malformed JSON says where,
a body that is not an object says so) with :class:`Fields` to read its members
(``username: required``, ``page_size: expected an integer from 1 to 100; got 'x'``).

:func:`exception_handlers` and :func:`middleware` give Starlette the rest: an unknown
route is 1004 (404), a wrong method 1004 with HTTP 405, :class:`NotFoundError` 1004,
:class:`ConflictError` 1005, any other :class:`StoreError` 5002, and anything unexpected
5001 with a fixed message (the traceback goes to the log, never to the client).
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from transport.manager._errors import ConflictError, NotFoundError, StoreError
from transport.manager._http._json import Json, parse_rfc3339, rfc3339
from transport.manager._model import Page

__all__ = [
    "MAX_BODY_BYTES",
    "ApiError",
    "ErrorCode",
    "Fields",
    "error_response",
    "exception_handlers",
    "http_status",
    "json_body",
    "middleware",
    "ok",
    "page_data",
    "page_ok",
    "paging",
    "query_int",
    "query_str",
    "query_time",
]

T = TypeVar("T")

_log = logging.getLogger("transport.manager.http")

MAX_BODY_BYTES = 1 << 20
"""The largest JSON body a request may carry."""


class ErrorCode(enum.IntEnum):
    """The original Manager's error codes (``code`` in the envelope)."""

    SUCCESS = 0
    INVALID_PARAMS = 1001
    UNAUTHORIZED = 1002
    FORBIDDEN = 1003
    NOT_FOUND = 1004
    CONFLICT = 1005
    TOO_MANY_REQUESTS = 1006
    INVALID_TOKEN = 1007
    TOKEN_EXPIRED = 1008
    INVALID_CREDENTIALS = 1009
    NODE_NOT_FOUND = 2001
    NODE_OFFLINE = 2002
    TASK_NOT_FOUND = 2004
    USER_NOT_FOUND = 2007
    USER_DISABLED = 2008
    USER_EXISTS = 2009
    INTERNAL = 5001
    DATABASE = 5002
    GRPC = 5004


_STATUS: Mapping[int, int] = {
    ErrorCode.SUCCESS: 200,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.INVALID_TOKEN: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.INVALID_CREDENTIALS: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.TOO_MANY_REQUESTS: 429,
    ErrorCode.NODE_NOT_FOUND: 404,
    ErrorCode.TASK_NOT_FOUND: 404,
    ErrorCode.USER_NOT_FOUND: 404,
    ErrorCode.USER_EXISTS: 409,
    ErrorCode.USER_DISABLED: 403,
    ErrorCode.NODE_OFFLINE: 403,
}


def http_status(code: int) -> int:
    """The HTTP status of an error code, as the original maps them.

    Args:
        code: An envelope code.

    Returns:
        The status: the table's entry, else 400 for 1xxx-3xxx and 500 for the rest.
    """
    if code in _STATUS:
        return _STATUS[code]
    return 400 if 1000 <= code < 4000 else 500


class ApiError(Exception):
    """Answer the request with an error envelope.

    Args:
        code: The envelope code (never 0).
        message: What the client is told.
        status: The HTTP status, when it is not the code's (405 for a wrong method).

    Raises:
        ValueError: ``code`` is 0.
    """

    def __init__(self, code: int, message: str, *, status: int | None = None) -> None:
        if code == ErrorCode.SUCCESS:
            raise ValueError("an ApiError needs a non-zero code")
        super().__init__(code, message)
        self.code = int(code)
        self.message = message
        self.status = status if status is not None else http_status(code)

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


def _envelope(code: int, message: str, data: Any) -> Json:
    return {"code": code, "message": message, "data": data, "timestamp": rfc3339(time.time())}


def ok(data: Any, *, status: int = 200, message: str = "success") -> JSONResponse:
    """A success envelope.

    Args:
        data: The ``data`` member (JSON-serialisable).
        status: The HTTP status (201 for a creation).
        message: The envelope message (the original says ``created`` with 201).

    Returns:
        The response.
    """
    return JSONResponse(_envelope(0, message, data), status_code=status)


def error_response(error: ApiError) -> JSONResponse:
    """The error envelope of ``error`` (``data`` is ``null``).

    Args:
        error: The error.

    Returns:
        The response, with the error's HTTP status.
    """
    return JSONResponse(_envelope(error.code, error.message, None), status_code=error.status)


def page_data(page: Page[T], convert: Callable[[T], Json]) -> Json:
    """A page of records in the original's shape, with both ``pages`` and ``total_pages``.

    Args:
        page: The page.
        convert: Turns one record into JSON (e.g. :func:`~._json.user_json`).

    Returns:
        ``{list, page_info: {page, page_size, total, pages, total_pages}}``.
    """
    return {
        "list": [convert(item) for item in page.items],
        "page_info": {
            "page": page.page,
            "page_size": page.page_size,
            "total": page.total,
            "pages": page.pages,
            "total_pages": page.pages,
        },
    }


def page_ok(page: Page[T], convert: Callable[[T], Json]) -> JSONResponse:
    """A success envelope holding :func:`page_data`.

    Args:
        page: The page.
        convert: Turns one record into JSON.

    Returns:
        The response.
    """
    return ok(page_data(page, convert))


def _bad(name: str, problem: str) -> ApiError:
    return ApiError(ErrorCode.INVALID_PARAMS, f"{name}: {problem}")


def query_int(
    request: Request, name: str, *, default: int, minimum: int, maximum: int | None = None
) -> int:
    """An integer query parameter.

    Args:
        request: The request.
        name: The parameter.
        default: Its value when absent or empty.
        minimum: The least value allowed.
        maximum: The greatest value allowed, if any.

    Returns:
        The value.

    Raises:
        ApiError: 1001 naming the parameter: not an integer, or out of range.
    """
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return default
    bounds = (
        f"an integer from {minimum} to {maximum}"
        if maximum is not None
        else f"an integer >= {minimum}"
    )
    try:
        value = int(raw, 10)
    except ValueError:
        raise _bad(name, f"expected {bounds}; got {raw[:40]!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise _bad(name, f"expected {bounds}; got {value}")
    return value


def query_str(
    request: Request, name: str, *, default: str = "", choices: Sequence[str] | None = None
) -> str:
    """A string query parameter.

    Args:
        request: The request.
        name: The parameter.
        default: Its value when absent or empty.
        choices: The values allowed, if limited.

    Returns:
        The value.

    Raises:
        ApiError: 1001 naming the parameter when it is not one of ``choices``.
    """
    value = request.query_params.get(name, "").strip()
    if not value:
        return default
    if choices is not None and value not in choices:
        raise _bad(name, f"expected one of {', '.join(choices)}; got {value[:40]!r}")
    return value


def query_time(request: Request, name: str, *, default: float | None = None) -> float | None:
    """An RFC 3339 time query parameter, as unix seconds.

    Args:
        request: The request.
        name: The parameter.
        default: Its value when absent or empty.

    Returns:
        Unix seconds, or ``default``.

    Raises:
        ApiError: 1001 naming the parameter when it is not an RFC 3339 time.
    """
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse_rfc3339(raw)
    except ValueError as error:
        raise _bad(name, str(error)) from None


def paging(request: Request) -> tuple[int, int]:
    """The ``page`` (default 1, >= 1) and ``page_size`` (default 20, 1-100) parameters.

    Args:
        request: The request.

    Returns:
        ``(page, page_size)``.

    Raises:
        ApiError: 1001 naming the parameter that is invalid.
    """
    page = query_int(request, "page", default=1, minimum=1, maximum=1_000_000)
    size = query_int(request, "page_size", default=20, minimum=1, maximum=100)
    return page, size


async def json_body(request: Request, *, required: bool = True) -> Json:
    """The request's JSON object body.

    Args:
        request: The request.
        required: Whether an empty body is an error (else it reads as ``{}``).

    Returns:
        The object.

    Raises:
        ApiError: 1001 saying what is wrong: empty, too large, not JSON (with where), or
            not an object.
    """
    too_large = _bad("request body", f"larger than {MAX_BODY_BYTES} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    raw = b""
    async with contextlib.aclosing(request.stream()) as chunks:
        async for chunk in chunks:
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                raise too_large
    if not raw.strip():
        if required:
            raise _bad("request body", "expected a JSON object; got an empty body")
        return {}
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _bad("request body", "not UTF-8") from None
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        raise _bad("request body", f"invalid JSON at {where}: {error.msg}") from None
    if not isinstance(value, dict):
        raise _bad("request body", f"expected a JSON object; got {type(value).__name__}")
    return value


class Fields:
    """Reads the members of a JSON object body, raising 1001 naming the field.

    Args:
        body: The object (from :func:`json_body`).
    """

    def __init__(self, body: Mapping[str, Any]) -> None:
        self._body = body

    def text(
        self,
        name: str,
        *,
        required: bool = True,
        default: str = "",
        min_len: int = 0,
        max_len: int = 1000,
        choices: Sequence[str] | None = None,
    ) -> str:
        """A string member.

        Args:
            name: The member.
            required: Whether it must be present and non-empty.
            default: Its value when absent, ``null`` or empty and not required.
            min_len: The fewest characters allowed (when present).
            max_len: The most characters allowed.
            choices: The values allowed, if limited.

        Returns:
            The string.

        Raises:
            ApiError: 1001 naming the member: missing, not a string, length, choices.
        """
        value = self._body.get(name)
        if value is None or value == "":
            if required:
                raise _bad(name, "required")
            return default
        if not isinstance(value, str):
            raise _bad(name, f"expected a string; got {_kind(value)}")
        if len(value) < min_len:
            raise _bad(name, f"must be at least {min_len} characters")
        if len(value) > max_len:
            raise _bad(name, f"must be at most {max_len} characters")
        if choices is not None and value not in choices:
            raise _bad(name, f"expected one of {', '.join(choices)}; got {value[:40]!r}")
        return value

    def integer(
        self,
        name: str,
        *,
        required: bool = True,
        default: int = 0,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        """An integer member (a JSON number without a fraction; not a boolean).

        Args:
            name: The member.
            required: Whether it must be present.
            default: Its value when absent or ``null`` and not required.
            minimum: The least value allowed, if any.
            maximum: The greatest value allowed, if any.

        Returns:
            The integer.

        Raises:
            ApiError: 1001 naming the member: missing, not an integer, out of range.
        """
        value = self._body.get(name)
        if value is None:
            if required:
                raise _bad(name, "required")
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(name, f"expected an integer; got {_kind(value)}")
        if minimum is not None and value < minimum:
            raise _bad(name, f"must be >= {minimum}; got {value}")
        if maximum is not None and value > maximum:
            raise _bad(name, f"must be <= {maximum}; got {value}")
        return value

    def text_list(
        self, name: str, *, required: bool = True, max_items: int = 1000, max_len: int = 1000
    ) -> list[str]:
        """A list of non-empty strings.

        Args:
            name: The member.
            required: Whether it must be present and non-empty.
            max_items: The most items allowed.
            max_len: The most characters per item.

        Returns:
            The strings, in order.

        Raises:
            ApiError: 1001 naming the member (and the item's index).
        """
        value = self._body.get(name)
        if value is None or value == []:
            if required:
                raise _bad(name, "required (a non-empty list)")
            return []
        if not isinstance(value, list):
            raise _bad(name, f"expected a list of strings; got {_kind(value)}")
        if len(value) > max_items:
            raise _bad(name, f"at most {max_items} items; got {len(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise _bad(f"{name}[{index}]", f"expected a non-empty string; got {_kind(item)}")
            if len(item) > max_len:
                raise _bad(f"{name}[{index}]", f"must be at most {max_len} characters")
        return list(value)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return "a list" if isinstance(value, list) else "an object"


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error = ApiError(ErrorCode.NOT_FOUND, f"no such route: {request.url.path}")
    elif exc.status_code == 405:
        error = ApiError(
            ErrorCode.NOT_FOUND,
            f"method {request.method} not allowed on {request.url.path}",
            status=405,
        )
    else:
        code = ErrorCode.INVALID_PARAMS if exc.status_code < 500 else ErrorCode.INTERNAL
        error = ApiError(code, str(exc.detail), status=exc.status_code)
    response = error_response(error)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _store_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, NotFoundError):
        return error_response(ApiError(ErrorCode.NOT_FOUND, str(exc) or "not found"))
    if isinstance(exc, ConflictError):
        return error_response(ApiError(ErrorCode.CONFLICT, str(exc) or "conflict"))
    _log.error("database error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(ApiError(ErrorCode.DATABASE, "database error"))


Handler = Callable[[Request, Exception], Awaitable[Response]]


def exception_handlers() -> dict[Any, Handler]:
    """Starlette's ``exception_handlers``: ApiError, HTTP errors, store errors.

    Returns:
        The mapping to pass to ``Starlette(exception_handlers=...)``.
    """
    return {ApiError: _api_error, HTTPException: _http_error, StoreError: _store_error}


class _CatchAll:
    """ASGI middleware: an unexpected exception becomes a 5001 envelope (logged here).

    Starlette's own 500 handler re-raises the exception into the server after answering;
    this one answers and stops it (the response has not started when a handler raises).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            _log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = error_response(ApiError(ErrorCode.INTERNAL, "internal server error"))
            await response(scope, receive, send)


def middleware() -> list[Middleware]:
    """The middleware the API needs: unexpected errors become 5001 envelopes.

    Returns:
        The list to pass to ``Starlette(middleware=...)`` (before any of your own).
    """
    return [Middleware(_CatchAll)]
