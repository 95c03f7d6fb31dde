"""Network health probes: an HTTP(S) GET and a TCP connect, on Trio.

The health monitor runs these on shared ticks for every agent whose ``health_check`` asks for
them, so they are built to be cheap and strictly bounded:

* :func:`probe_http` sends one ``GET`` with ``Connection: close`` over
  :func:`trio.open_tcp_stream` (wrapped in a :class:`trio.SSLStream` for ``https``, with SNI
  and hostname verification from the URL). The answer is judged by
  :class:`~supervisor._health._judge.Judge`: the status line decides; on 2xx up to
  ``max_body`` bytes of the body are read and thrown away, so an endpoint that fails
  half-way through generating its body (node_exporter's ``/metrics``) is noticed.
  Redirects are not followed.
* :func:`probe_tcp` connects and closes.
* :func:`probe_many` runs a whole round of them with a few wake-ups (see there).

Each whole probe (resolution, connect, handshake, request, answer) runs under one
deadline, ``timeout_s`` from the start of the probe or of the round. Name resolution is
inside that deadline: in a round, every distinct name is resolved at once, side by side,
so a slow resolver makes only the probes that need that name fail (``DNS: resolution
timed out after 5s (name)``), never delays the others. A probe returns ``None`` when the
target is healthy and otherwise a short human-readable reason, e.g. ``connection refused
(127.0.0.1:9100)``, ``timeout after 5s``, ``HTTP 503``, ``HTTP 301 (redirect not
followed)``, ``TLS: certificate verify failed (self-signed certificate)``, ``bad
response: ...`` or ``DNS: ...``. Network problems never raise; a URL that cannot be probed
at all (not http(s), no host, bad port) is a configuration error and raises
:class:`ValueError` before any I/O. Every socket is closed on every path, including
cancellation.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import select
import socket
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from ._judge import Deferred, Judge, Target, clip, parse_url

if TYPE_CHECKING:
    import h11
else:
    h11 = Deferred("h11")

__all__ = ["Probe", "probe_http", "probe_many", "probe_tcp"]

_CHUNK = 64 * 1024
#: getaddrinfo flags that resolve an IP literal without asking any resolver (as Trio does).
_NUMERIC_ONLY = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV

#: Addresses of one host and port: (family, sockaddr) pairs, in getaddrinfo's order.
_Addresses = list[tuple[int, Any]]


@functools.cache
def _default_context() -> ssl.SSLContext:
    """``ssl.create_default_context()``, made once: loading the CA store is not free."""
    return ssl.create_default_context()


def _format_timeout(timeout_s: float) -> str:
    return f"timeout after {timeout_s:g}s"


def _invalid_name(host: str) -> str:
    return f"DNS: invalid name ({host})"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
            return f"bad response: {clip(str(seen))}"
        if isinstance(seen, OSError):
            return f"{_oserror_text(seen)} ({_hostport(host, port)})"
        seen = seen.__cause__ or seen.__context__
    return f"connection broken ({_hostport(host, port)})"


async def _exchange(stream: trio.abc.Stream, target: Target, max_body: int) -> str | None:
    """Sends the target's request and judges the response read from ``stream``."""
    judge = Judge(target, max_body)
    await stream.send_all(judge.request)
    while True:
        done, verdict = judge.feed(bytes(await stream.receive_some(_CHUNK)))
        if done:
            return verdict


async def _http_get(
    target: Target, ssl_context: ssl.SSLContext | None, max_body: int
) -> str | None:
    try:
        stream: trio.abc.Stream = await trio.open_tcp_stream(target.host, target.port)
    except OSError as exc:
        return _describe(exc, target.host, target.port)
    except UnicodeError:
        return _invalid_name(target.host)
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
    target = parse_url(url)
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
        except UnicodeError:
            return _invalid_name(host)
        await trio.aclose_forcefully(stream)
        return None
    return _format_timeout(timeout_s)


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
    timeout_s: float
    deadline: float
    judge: Judge | None  # None for a TCP probe
    addresses: _Addresses | None = None  # None while the name is being resolved
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

    The round has one deadline per probe, ``timeout_s`` from the start of the round, and
    it covers name resolution: IP literals need no resolver; the distinct names are
    resolved all at once, each while some probe still waits for it, and probes connect
    as soon as their own name is known. A name that does not resolve in time fails only
    the probes that need it (``DNS: resolution timed out after 5s (name)``), so the
    round takes at most its longest ``timeout_s``, whatever the resolver does.

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
    plain: list[tuple[int, Probe, Target | None]] = []
    secure: list[tuple[int, Probe]] = []
    for index, probe in enumerate(probes):
        if (probe.url is None) == (probe.endpoint is None):
            raise ValueError("a probe needs exactly one of url and endpoint")
        target = parse_url(probe.url) if probe.url is not None else None
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
        if plain:
            await _PlainRound(results, poll_s).run(plain)
    return results


def _numeric(host: str, port: int) -> _Addresses | None:
    """The addresses of an IP literal, found without a resolver; None for a name."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=_NUMERIC_ONLY)
    except (OSError, UnicodeError):  # a name (EAI_NONAME): the resolver must answer
        return None
    return [(info[0], info[4]) for info in infos]


class _PlainRound:
    """One round of plain-http and TCP probes: raw sockets, one ``epoll`` set, one task.

    Resolution runs beside the connections. Each distinct name that is not an IP literal
    gets a task that asks :func:`trio.socket.getaddrinfo` (the system resolver in a worker
    thread, or a custom resolver), bounded by the latest deadline of the probes waiting
    for it; when it answers, those probes start connecting and the serving loop is woken
    (its wait is a cancel scope that the resolver cancels). The loop's own deadline is the
    earliest of every unfinished probe, resolving ones included, and at each wake-up it
    fails the probes whose deadline has passed: ``timeout after`` when connecting or
    talking, ``DNS: resolution timed out after`` while still waiting for the name.

    Args:
        results: Where verdicts go, by probe index.
        poll_s: Pause after each wake-up, to serve more sockets per wake-up.
    """

    def __init__(self, results: list[str | None], poll_s: float) -> None:
        self._results = results
        self._poll_s = poll_s
        self._ready = select.epoll()
        self._live: dict[int, _Attempt] = {}  # by socket fd
        self._resolving: dict[tuple[str, int], list[_Attempt]] = {}
        self._wait: trio.CancelScope | None = None

    async def run(self, items: list[tuple[int, Probe, Target | None]]) -> None:
        """Probe ``items`` (index, probe, parsed URL or None for TCP) until all are judged."""
        try:
            start = trio.current_time()
            names: dict[tuple[str, int], list[_Attempt]] = {}
            for index, probe, target in items:
                if target is not None:
                    host, port = target.host, target.port
                else:
                    assert probe.endpoint is not None
                    host, port = probe.endpoint
                judge = Judge(target, probe.max_body) if target is not None else None
                deadline = start + probe.timeout_s
                attempt = _Attempt(index, host, port, probe.timeout_s, deadline, judge)
                names.setdefault((host, port), []).append(attempt)
            async with trio.open_nursery() as nursery:
                for (host, port), attempts in names.items():
                    found = _numeric(host, port)
                    if found is None:
                        self._resolving[host, port] = attempts
                        latest = max(a.deadline for a in attempts)
                        nursery.start_soon(self._resolve, host, port, latest)
                    else:
                        for attempt in attempts:
                            self._begin(attempt, found)
                await self._serve()
                nursery.cancel_scope.cancel()  # resolutions that nobody waits for any more
        finally:
            for attempt in list(self._live.values()):
                self._finish(attempt, "probe abandoned")
            for attempt in self._waiting():
                self._results[attempt.index] = "probe abandoned"
            self._ready.close()

    def _waiting(self) -> Iterator[_Attempt]:
        for attempts in self._resolving.values():
            yield from attempts

    async def _resolve(self, host: str, port: int, deadline: float) -> None:
        """Resolve one name by ``deadline``; start its probes, or leave them to time out."""
        with trio.move_on_at(deadline):
            found: _Addresses | OSError
            try:
                infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                found = [(info[0], info[4]) for info in infos]
            except OSError as exc:  # socket.gaierror included
                found = exc
            except UnicodeError:  # a name the IDNA codec refuses (a label empty or too long)
                found = socket.gaierror(socket.EAI_NONAME, "invalid name")
            for attempt in self._resolving.pop((host, port), []):
                self._begin(attempt, found)
            if self._wait is not None:
                self._wait.cancel()  # wake the loop: new sockets, or nothing left to wait for

    async def _serve(self) -> None:
        """Serve ready sockets until every probe has its verdict."""
        while self._live or self._resolving:
            pending = [*self._live.values(), *self._waiting()]
            with trio.move_on_at(min(a.deadline for a in pending)) as self._wait:
                await trio.lowlevel.wait_readable(self._ready.fileno())
                await trio.sleep(self._poll_s)
            self._wait = None
            for fd, _events in self._ready.poll(0):
                current = self._live.get(fd)
                if current is not None:
                    self._serve_one(current)
            self._expire(trio.current_time())

    def _expire(self, now: float) -> None:
        """Fail the probes whose deadline has passed."""
        for attempt in [a for a in self._live.values() if a.deadline <= now]:
            self._finish(attempt, _format_timeout(attempt.timeout_s))
        for name, attempts in list(self._resolving.items()):
            for attempt in attempts:
                if attempt.deadline <= now:
                    self._results[attempt.index] = (
                        f"DNS: resolution timed out after {attempt.timeout_s:g}s ({attempt.host})"
                    )
            attempts[:] = [a for a in attempts if a.deadline > now]
            if not attempts:
                del self._resolving[name]  # its resolver task ends at this same deadline

    def _begin(self, attempt: _Attempt, found: _Addresses | OSError) -> None:
        """The name is resolved (or failed): connect, or finish with the reason."""
        if isinstance(found, OSError):
            self._finish(attempt, _describe(found, attempt.host, attempt.port))
        else:
            attempt.addresses = list(found)
            self._connect_next(attempt)

    def _finish(self, attempt: _Attempt, verdict: str | None) -> None:
        self._results[attempt.index] = verdict
        if attempt.sock is not None:
            self._close(attempt)

    def _connect_next(self, attempt: _Attempt) -> None:
        """Start connecting to the next address, or finish with the last error."""
        if attempt.sock is not None:
            self._close(attempt)
        attempt.connected = False
        while attempt.addresses:
            family, address = attempt.addresses.pop(0)
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            code = sock.connect_ex(address)
            if code in (0, errno.EINPROGRESS):
                attempt.sock = sock
                self._live[sock.fileno()] = attempt
                self._ready.register(sock.fileno(), select.EPOLLOUT)
                return
            sock.close()
            attempt.error = OSError(code, os.strerror(code))
        error = attempt.error or OSError(errno.EHOSTUNREACH, "no address")
        self._finish(attempt, _describe(error, attempt.host, attempt.port))

    def _close(self, attempt: _Attempt) -> None:
        assert attempt.sock is not None
        self._live.pop(attempt.sock.fileno(), None)
        with contextlib.suppress(OSError, ValueError):
            self._ready.unregister(attempt.sock.fileno())
        attempt.sock.close()
        attempt.sock = None

    def _serve_one(self, attempt: _Attempt) -> None:
        sock = attempt.sock
        assert sock is not None
        try:
            if not attempt.connected:
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    attempt.error = OSError(code, os.strerror(code))
                    self._connect_next(attempt)
                    return
                if attempt.judge is None:
                    self._finish(attempt, None)  # TCP: connected
                    return
                attempt.connected, attempt.unsent = True, attempt.judge.request
            self._serve_http(attempt, sock)
        except (OSError, h11.RemoteProtocolError) as exc:
            self._finish(attempt, _describe(exc, attempt.host, attempt.port))

    def _serve_http(self, attempt: _Attempt, sock: socket.socket) -> None:
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
            self._ready.modify(sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
            return
        for _ in range(16):  # bounded per round: a fast talker cannot starve the others
            try:
                data = sock.recv(_CHUNK)
            except BlockingIOError:
                return
            done, verdict = judge.feed(data)
            if done:
                self._finish(attempt, verdict)
                return
            if not data:
                return
