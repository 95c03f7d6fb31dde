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
import contextlib
import errno
import functools
import ipaddress
import os
import re
import select
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import h11
import trio

__all__ = ["Probe", "parse_endpoint", "probe_http", "probe_many", "probe_tcp"]

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
    wire: bytes  # the request as sent


@functools.cache
def _default_context() -> ssl.SSLContext:
    """``ssl.create_default_context()``, made once: loading the CA store is not free."""
    return ssl.create_default_context()


def _format_timeout(timeout_s: float) -> str:
    return f"timeout after {timeout_s:g}s"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@functools.lru_cache(maxsize=1024)
def _parse_url(url: str) -> _Target:
    """Validates ``url`` and builds the request, raising ValueError naming the URL.

    Cached: a monitor probes the same few URLs every round.
    """
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
    conn = h11.Connection(h11.CLIENT)
    wire = conn.send(request) + conn.send(h11.EndOfMessage())
    return _Target(tls, parts.hostname, port or (443 if tls else 80), request, wire)


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


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?\r\n")
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_HEAD_LIMIT = 64 * 1024  # a response head longer than this goes to h11, which refuses it


class _Judge:
    """Judges an HTTP response from the bytes received so far, for either prober.

    The common answers (a non-2xx status; a 2xx with a ``Content-Length`` body, or a body
    up to the end of the stream) are judged from the buffered bytes directly: the probe
    round runs hundreds of these, and building an h11 connection per probe costs more
    than the rest of the probe. Anything else (``Transfer-Encoding``, 1xx, odd framing,
    a stream that ends early) is replayed into h11, whose verdicts and messages apply.
    """

    def __init__(self, target: _Target, max_body: int) -> None:
        self._request = target.request
        self.request = target.wire
        self._max_body = max_body
        self._buf = bytearray()
        self._head: tuple[int, int, int] | None = None
        self._conn: h11.Connection | None = None
        self._status: int | None = None
        self._received = 0

    def feed(self, data: bytes) -> tuple[bool, str | None]:
        """Take received bytes (``b""`` at end of stream).

        Returns:
            (done, verdict): whether the answer is judged, and if so None (2xx) or why not.

        Raises:
            h11.RemoteProtocolError: The answer is not valid HTTP.
        """
        if self._conn is not None:
            return self._feed_h11(data)
        self._buf += data
        at_end = not data
        if self._head is None:
            head_end = self._buf.find(b"\r\n\r\n")
            if head_end < 0:
                if at_end or len(self._buf) >= _HEAD_LIMIT:
                    return self._to_h11(at_end=at_end)
                return False, None  # the head is still coming
            self._head = self._parse_head(head_end)
            if self._head is None:
                return self._to_h11(at_end=at_end)  # unusual: h11 decides
        status, framing, body_start = self._head
        if 300 <= status < 400:
            return True, f"HTTP {status} (redirect not followed)"
        if not 200 <= status < 300:
            return True, f"HTTP {status}"
        body = len(self._buf) - body_start
        if body >= self._max_body or (framing >= 0 and body >= framing):
            return True, None
        if at_end:  # complete if the body runs to the end; else h11 says what is wrong
            return (True, None) if framing < 0 else self._to_h11(at_end=True)
        return False, None  # the body is still coming

    def _parse_head(self, head_end: int) -> tuple[int, int, int] | None:
        """(status, body length or -1 for "to the end", body offset), or None for h11."""
        match = _STATUS_LINE.match(self._buf)
        if match is None:
            return None
        status = int(match.group(1))
        framing = self._framing(bytes(self._buf[match.end() : head_end + 2]))
        if framing is None or status < 200:
            return None  # unusual headers, or 1xx (h11 skips it)
        return status, framing, head_end + 4

    @staticmethod
    def _framing(headers: bytes) -> int | None:
        """The body's length, -1 for "up to the end", None when h11 must decide."""
        length = -1
        for line in headers.split(b"\r\n"):
            if not line:
                continue
            name, sep, value = line.partition(b":")
            if not sep or not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
                return None
            key = name.lower()
            if key == b"transfer-encoding":
                return None
            if key == b"content-length":
                text = value.strip()
                if length >= 0 or not text.isdigit():
                    return None  # repeated or malformed: h11 judges
                length = int(text)
        return length

    def _to_h11(self, *, at_end: bool) -> tuple[bool, str | None]:
        conn = self._conn = h11.Connection(h11.CLIENT)
        conn.send(self._request)
        conn.send(h11.EndOfMessage())
        buffered, self._buf = bytes(self._buf), bytearray()
        if at_end and not buffered:
            return True, "bad response: connection closed without a response"
        if buffered:
            done = self._feed_h11(buffered)
            if done[0] or not at_end:
                return done
        return self._feed_h11(b"")

    def _feed_h11(self, data: bytes) -> tuple[bool, str | None]:
        conn = self._conn
        assert conn is not None
        if not data and self._status is None and not conn.trailing_data[0]:
            return True, "bad response: connection closed without a response"
        conn.receive_data(data)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                return False, None
            if isinstance(event, h11.Response):
                status = self._status = event.status_code
                if 300 <= status < 400:
                    return True, f"HTTP {status} (redirect not followed)"
                if not 200 <= status < 300:
                    return True, f"HTTP {status}"
            elif isinstance(event, h11.Data):
                self._received += len(event.data)
                if self._received >= self._max_body:
                    return True, None
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return True, None
            # InformationalResponse (1xx) is skipped; the final response follows.


async def _exchange(stream: trio.abc.Stream, target: _Target, max_body: int) -> str | None:
    """Sends the target's request and judges the response read from ``stream``."""
    judge = _Judge(target, max_body)
    await stream.send_all(judge.request)
    while True:
        done, verdict = judge.feed(bytes(await stream.receive_some(_CHUNK)))
        if done:
            return verdict


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
        return await _exchange(stream, target, max_body)
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


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe of a :func:`probe_many` round: an HTTP(S) GET or a TCP connect.

    Attributes:
        url: The URL to GET, or None for a TCP probe.
        endpoint: ``(host, port)`` to connect to, for a TCP probe.
        timeout_s: Deadline for the whole probe.
        max_body: Body bytes read (and discarded) from a 2xx answer, at most.
    """

    url: str | None = None
    endpoint: tuple[str, int] | None = None
    timeout_s: float = 5.0
    max_body: int = 1 << 20


@dataclass(slots=True)
class _Attempt:
    """A plain-http or TCP probe in flight on a raw non-blocking socket."""

    index: int
    host: str
    port: int
    deadline: float
    addresses: list[tuple[int, Any]]
    judge: _Judge | None  # None for a TCP probe
    sock: socket.socket | None = None
    connected: bool = False
    unsent: bytes = b""
    error: OSError | None = None


async def probe_many(
    probes: Sequence[Probe],
    *,
    ssl_context: ssl.SSLContext | None = None,
    poll_s: float = 0.02,
) -> list[str | None]:
    """Runs many probes at once, for the price of a few wake-ups.

    Plain-http and TCP probes share one private ``epoll`` set and one task: it waits
    until some socket is ready, lets ``poll_s`` pass so that more answers arrive, and
    then serves every ready socket in one go. On a small VM a wake-up costs far more
    than a probe's own work, so 300 probes cost a few dozen wake-ups instead of several
    hundred. Verdicts are those of :func:`probe_http` and :func:`probe_tcp`; https
    probes run through :func:`probe_http` side by side.

    Args:
        probes: What to probe.
        ssl_context: TLS settings for https probes.
        poll_s: Pause after each wake-up, to serve more sockets per wake-up.

    Returns:
        One verdict per probe, in order: None when healthy, else a short reason.

    Raises:
        ValueError: A URL that cannot be probed (see :func:`probe_http`), or a probe with
            neither or both of ``url`` and ``endpoint``.
    """
    results: list[str | None] = [None] * len(probes)
    plain: list[tuple[int, Probe, _Target | None]] = []
    secure: list[tuple[int, Probe]] = []
    for index, probe in enumerate(probes):
        if (probe.url is None) == (probe.endpoint is None):
            raise ValueError("a probe needs exactly one of url and endpoint")
        target = _parse_url(probe.url) if probe.url is not None else None
        if target is not None and target.tls:
            secure.append((index, probe))
        else:
            plain.append((index, probe, target))

    async def one_secure(index: int, probe: Probe) -> None:
        assert probe.url is not None
        results[index] = await probe_http(
            probe.url, timeout_s=probe.timeout_s, ssl_context=ssl_context, max_body=probe.max_body
        )

    async with trio.open_nursery() as nursery:
        for index, probe in secure:
            nursery.start_soon(one_secure, index, probe)
        await _probe_plain(plain, results, poll_s)
    return results


async def _resolve(hosts: set[tuple[str, int]]) -> dict[tuple[str, int], Any]:
    """Addresses (or the gaierror) of each distinct host and port, resolved once."""
    found: dict[tuple[str, int], Any] = {}
    for host, port in hosts:
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            found[host, port] = [(info[0], info[4]) for info in infos]
        except OSError as exc:
            found[host, port] = exc
    return found


async def _probe_plain(
    items: list[tuple[int, Probe, _Target | None]], results: list[str | None], poll_s: float
) -> None:
    if not items:
        return
    start = trio.current_time()
    pending: list[_Attempt] = []
    for index, probe, target in items:
        host, port = (target.host, target.port) if target is not None else probe.endpoint  # type: ignore[misc]
        judge = _Judge(target, probe.max_body) if target is not None else None
        pending.append(_Attempt(index, host, port, start + probe.timeout_s, [], judge))
    addresses = await _resolve({(a.host, a.port) for a in pending})
    ready = select.epoll()
    live: dict[int, _Attempt] = {}

    def finish(attempt: _Attempt, verdict: str | None) -> None:
        results[attempt.index] = verdict
        if attempt.sock is not None:
            close(attempt)

    def connect_next(attempt: _Attempt) -> None:
        """Start connecting to the next address, or finish with the last error."""
        if attempt.sock is not None:
            close(attempt)
        attempt.connected = False
        while attempt.addresses:
            family, address = attempt.addresses.pop(0)
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            code = sock.connect_ex(address)
            if code in (0, errno.EINPROGRESS):
                attempt.sock = sock
                live[sock.fileno()] = attempt
                ready.register(sock.fileno(), select.EPOLLOUT)
                return
            sock.close()
            attempt.error = OSError(code, os.strerror(code))
        error = attempt.error or OSError(errno.EHOSTUNREACH, "no address")
        finish(attempt, _describe(error, attempt.host, attempt.port))

    def close(attempt: _Attempt) -> None:
        assert attempt.sock is not None
        live.pop(attempt.sock.fileno(), None)
        with contextlib.suppress(OSError, ValueError):
            ready.unregister(attempt.sock.fileno())
        attempt.sock.close()
        attempt.sock = None

    def serve(attempt: _Attempt) -> None:
        sock = attempt.sock
        assert sock is not None
        try:
            if not attempt.connected:
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    attempt.error = OSError(code, os.strerror(code))
                    connect_next(attempt)
                    return
                if attempt.judge is None:
                    finish(attempt, None)  # TCP: connected
                    return
                attempt.connected, attempt.unsent = True, attempt.judge.request
            _serve_http(attempt, sock, ready, finish)
        except (OSError, h11.RemoteProtocolError) as exc:
            finish(attempt, _describe(exc, attempt.host, attempt.port))

    try:
        for attempt in pending:
            found = addresses[attempt.host, attempt.port]
            if isinstance(found, OSError):
                finish(attempt, _describe(found, attempt.host, attempt.port))
            else:
                attempt.addresses = list(found)
                connect_next(attempt)
        while live:
            deadline = min(a.deadline for a in live.values())
            with trio.move_on_at(deadline):
                await trio.lowlevel.wait_readable(ready.fileno())
                await trio.sleep(poll_s)
            for fd, _events in ready.poll(0):
                current = live.get(fd)
                if current is not None:
                    serve(current)
            now = trio.current_time()
            for attempt in [a for a in live.values() if a.deadline <= now]:
                finish(attempt, _format_timeout(attempt.deadline - start))
    finally:
        for attempt in list(live.values()):
            finish(attempt, "probe abandoned")
        ready.close()


def _serve_http(
    attempt: _Attempt,
    sock: socket.socket,
    ready: select.epoll,
    finish: Callable[[_Attempt, str | None], None],
) -> None:
    """Send what is left of the request, then judge what has arrived."""
    judge = attempt.judge
    assert judge is not None
    if attempt.unsent:
        try:
            sent = sock.send(attempt.unsent)
        except BlockingIOError:
            return
        attempt.unsent = attempt.unsent[sent:]
        if attempt.unsent:
            return
        ready.modify(sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
        return
    for _ in range(16):  # bounded per round: a fast talker cannot starve the others
        try:
            data = sock.recv(_CHUNK)
        except BlockingIOError:
            return
        done, verdict = judge.feed(data)
        if done:
            finish(attempt, verdict)
            return
        if not data:
            return
