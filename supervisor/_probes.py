"""Network health probes: an HTTP(S) GET and a TCP connect, on Trio.

The health monitor runs these on shared ticks for every agent whose ``health_check`` asks for
them, so they are built to be cheap and strictly bounded:

* :func:`probe_http` sends one ``GET`` with ``Connection: close`` over
  :func:`trio.open_tcp_stream` (wrapped in a :class:`trio.SSLStream` for ``https``, with SNI
  and hostname verification from the URL). h11 parses the answer. The status line decides;
  on 2xx up to ``max_body`` bytes of the body are read and thrown away, so an endpoint that
  fails half-way through generating its body (node_exporter's ``/metrics``) is noticed.
  Redirects are not followed.
* :func:`probe_tcp` connects and closes.

Each whole probe (resolution, connect, handshake, request, answer) runs under one
:func:`trio.move_on_after` deadline. A probe returns ``None`` when the target is healthy and
otherwise a short human-readable reason, e.g. ``connection refused (127.0.0.1:9100)``,
``timeout after 5s``, ``HTTP 503``, ``HTTP 301 (redirect not followed)``,
``TLS: certificate verify failed (self-signed certificate)``, ``bad response: ...`` or
``DNS: ...``. Network problems never raise; a URL that cannot be probed at all (not http(s),
no host, bad port) is a configuration error and raises :class:`ValueError` before any I/O.
The stream is closed on every path, including cancellation.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import h11
import trio

__all__ = ["parse_endpoint", "probe_http", "probe_tcp"]

_USER_AGENT = "hostvisor-health"
_CHUNK = 64 * 1024
_MAX_DETAIL = 120  # characters of a peer-controlled error detail kept in a reason


@dataclass(frozen=True, slots=True)
class _Target:
    """A parsed probe URL: where to connect and what to send."""

    tls: bool
    host: str
    port: int
    request: h11.Request


@functools.cache
def _default_context() -> ssl.SSLContext:
    """``ssl.create_default_context()``, made once: loading the CA store is not free."""
    return ssl.create_default_context()


def _format_timeout(timeout_s: float) -> str:
    return f"timeout after {timeout_s:g}s"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_url(url: str) -> _Target:
    """Validates ``url`` and builds the request, raising ValueError naming the URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"health check URL {url!r}: scheme must be http or https")
    if not parts.hostname:
        raise ValueError(f"health check URL {url!r} has no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"health check URL {url!r}: {exc}") from None
    tls = scheme == "https"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = [
        ("Host", parts.netloc.rpartition("@")[2]),
        ("User-Agent", _USER_AGENT),
        ("Accept", "*/*"),
        ("Connection", "close"),
    ]
    if parts.username is not None:
        creds = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers.append(("Authorization", "Basic " + base64.b64encode(creds.encode()).decode()))
    try:
        request = h11.Request(method="GET", target=target, headers=headers)
    except h11.LocalProtocolError as exc:
        raise ValueError(f"health check URL {url!r}: {exc}") from None
    return _Target(tls, parts.hostname, port or (443 if tls else 80), request)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def _oserror_text(exc: OSError) -> str:
    """The first specific OSError behind ``exc`` (trio groups per-address connect failures)."""
    cause = exc.__cause__
    if exc.errno is None and isinstance(cause, ExceptionGroup):
        inner = [e for e in cause.exceptions if isinstance(e, OSError)]
        if inner:
            exc = inner[0]
    text = os.strerror(exc.errno) if exc.errno is not None else str(exc)
    return (text or type(exc).__name__).lower()


def _describe(exc: BaseException, host: str, port: int) -> str:
    """Turns a network failure into a one-line reason."""
    seen: BaseException | None = exc
    while seen is not None:  # trio wraps ssl and socket errors in BrokenResourceError
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"TLS: certificate verify failed ({seen.verify_message})"
        if isinstance(seen, ssl.SSLError):
            reason = (seen.reason or str(seen)).lower().replace("_", " ")
            return f"TLS: {reason}"
        if isinstance(seen, socket.gaierror):
            return f"DNS: {(seen.strerror or str(seen)).lower()} ({host})"
        if isinstance(seen, h11.RemoteProtocolError):
            return f"bad response: {_clip(str(seen))}"
        if isinstance(seen, OSError):
            return f"{_oserror_text(seen)} ({_hostport(host, port)})"
        seen = seen.__cause__ or seen.__context__
    return f"connection broken ({_hostport(host, port)})"


async def _exchange(stream: trio.abc.Stream, request: h11.Request, max_body: int) -> str | None:
    """Sends ``request`` and judges the response read from ``stream``."""
    conn = h11.Connection(h11.CLIENT)
    await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
    status: int | None = None
    received = 0
    while status is None or received < max_body:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(_CHUNK)
            if not data and status is None and not conn.trailing_data[0]:
                return "bad response: connection closed without a response"
            conn.receive_data(bytes(data))
        elif isinstance(event, h11.Response):
            status = event.status_code
            if 300 <= status < 400:
                return f"HTTP {status} (redirect not followed)"
            if not 200 <= status < 300:
                return f"HTTP {status}"
        elif isinstance(event, h11.Data):
            received += len(event.data)
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            break
        # InformationalResponse (1xx) is skipped; the final response follows.
    return None


async def _http_get(
    target: _Target, ssl_context: ssl.SSLContext | None, max_body: int
) -> str | None:
    try:
        stream: trio.abc.Stream = await trio.open_tcp_stream(target.host, target.port)
    except OSError as exc:
        return _describe(exc, target.host, target.port)
    try:
        if target.tls:
            context = ssl_context if ssl_context is not None else _default_context()
            stream = trio.SSLStream(
                stream, context, server_hostname=target.host, https_compatible=True
            )
        return await _exchange(stream, target.request, max_body)
    except (OSError, trio.BrokenResourceError, h11.RemoteProtocolError) as exc:
        return _describe(exc, target.host, target.port)
    finally:
        await trio.aclose_forcefully(stream)


async def probe_http(
    url: str,
    *,
    timeout_s: float,
    ssl_context: ssl.SSLContext | None = None,
    max_body: int = 1 << 20,
) -> str | None:
    """GETs ``url`` and reports whether it answered 2xx within ``timeout_s``.

    Args:
        url: An ``http://`` or ``https://`` URL; userinfo, if present, is sent as Basic auth.
        timeout_s: Deadline for the whole probe, from DNS to the last body byte read.
        ssl_context: TLS settings for https; defaults to ``ssl.create_default_context()``.
        max_body: At most this many body bytes are read (and discarded) from a 2xx answer.

    Returns:
        None if the answer was 2xx, otherwise a short reason such as ``HTTP 503``,
        ``timeout after 5s`` or ``connection refused (127.0.0.1:9100)``.

    Raises:
        ValueError: ``url`` is not http(s), has no host or has an invalid port.
    """
    target = _parse_url(url)
    with trio.move_on_after(timeout_s):
        return await _http_get(target, ssl_context, max_body)
    return _format_timeout(timeout_s)


async def probe_tcp(host: str, port: int, *, timeout_s: float) -> str | None:
    """Opens a TCP connection to ``host``:``port`` and closes it.

    Args:
        host: A hostname or IP address (IPv6 without brackets).
        port: The TCP port.
        timeout_s: Deadline for resolution and connect together.

    Returns:
        None if the connection was established, otherwise a short reason such as
        ``connection refused (127.0.0.1:9100)``, ``timeout after 5s`` or ``DNS: ...``.
    """
    with trio.move_on_after(timeout_s):
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            return _describe(exc, host, port)
        await trio.aclose_forcefully(stream)
        return None
    return _format_timeout(timeout_s)


def parse_endpoint(value: str) -> tuple[str, int]:
    """Parses ``host:port`` or ``[v6addr]:port``.

    Args:
        value: The endpoint as written in the configuration.

    Returns:
        The host (IPv6 without brackets) and the port.

    Raises:
        ValueError: ``value`` is not of that form or the port is not in 1..65535.
    """
    problem = f"invalid endpoint {value!r}: expected host:port or [ipv6]:port"
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isascii() or not port_text.isdigit():
        raise ValueError(problem)
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"invalid endpoint {value!r}: port must be in 1..65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(problem) from None
    elif not host or any(c in host for c in ":[]/@") or any(c.isspace() for c in host):
        raise ValueError(problem)
    return host, port
