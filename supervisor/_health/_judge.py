"""What a probe sends and how its answer is judged, without any I/O (sans-IO).

Theory of operation
-------------------
The network probes (:mod:`supervisor._health._probes`) do the I/O; the decisions live here,
so they are tested with plain bytes:

* :func:`parse_url` checks a health-check URL once (http or https, a host, a valid port)
  and builds the ``GET`` request with ``Connection: close`` (userinfo becomes Basic auth)
  and its bytes on the wire. Cached: a monitor probes the same few URLs every round.
* :class:`Judge` reads the answer as it arrives. The status line decides (2xx healthy, 3xx
  a redirect that is not followed, anything else unhealthy); on 2xx up to ``max_body``
  bytes of the body are taken, so an endpoint that fails half-way through its body
  (node_exporter's ``/metrics``) is noticed. Common answers are judged from the buffered
  bytes; unusual ones are replayed into h11, whose verdicts and messages apply.
* :func:`parse_endpoint` checks a TCP check's ``host:port``.
"""

from __future__ import annotations

import base64
import functools
import importlib
import ipaddress
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

__all__ = ["Judge", "Target", "clip", "parse_endpoint", "parse_url"]


class Deferred:
    """A module imported at the first access to one of its attributes.

    h11 costs 0.3 MiB and about 14 ms at start-up that a daemon without HTTP probes never
    needs; every use of it is on the probing path.
    """

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        module = sys.modules.get(self._name) or importlib.import_module(self._name)
        return getattr(module, attribute)


if TYPE_CHECKING:
    import h11
else:
    h11 = Deferred("h11")

_USER_AGENT = "hostvisor-health"
_MAX_DETAIL = 120  # characters of a peer-controlled error detail kept in a reason


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed probe URL: where to connect and what to send."""

    tls: bool
    host: str
    port: int
    request: h11.Request
    wire: bytes  # the request as sent


@functools.lru_cache(maxsize=1024)
def parse_url(url: str) -> Target:
    """Validates ``url`` and builds the request, raising ValueError naming the URL.

    Cached: a monitor probes the same few URLs every round.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"health check URL {url!r}: scheme must be http or https")
    if not parts.hostname:
        raise ValueError(f"health check URL {url!r} has no host")
    if not _resolvable(parts.hostname):
        raise ValueError(f"health check URL {url!r}: {parts.hostname!r} is not a valid host name")
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
    return Target(tls, parts.hostname, port or (443 if tls else 80), request, wire)


def clip(text: str) -> str:
    """Shortens peer-controlled text kept in a reason to ``_MAX_DETAIL`` characters."""
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?\r\n")
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_HEAD_LIMIT = 64 * 1024  # a response head longer than this goes to h11, which refuses it


class Judge:
    """Judges an HTTP response from the bytes received so far, for either prober.

    The common answers (a non-2xx status; a 2xx with a ``Content-Length`` body, or a body
    up to the end of the stream) are judged from the buffered bytes directly: the probe
    round runs hundreds of these, and building an h11 connection per probe costs more
    than the rest of the probe. Anything else (``Transfer-Encoding``, 1xx, odd framing,
    a stream that ends early) is replayed into h11, whose verdicts and messages apply.
    """

    def __init__(self, target: Target, max_body: int) -> None:
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


def parse_endpoint(value: str) -> tuple[str, int]:
    """Parses ``host:port`` or ``[v6addr]:port``.

    Args:
        value: The endpoint as written in the configuration.

    Returns:
        The host (IPv6 without brackets) and the port.

    Raises:
        ValueError: ``value`` is not of that form, the host is not a valid name, or the
            port is not in 1..65535.
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
    elif not _resolvable(host):
        raise ValueError(f"invalid endpoint {value!r}: {host!r} is not a valid host name")
    return host, port


def _resolvable(host: str) -> bool:
    """Whether ``host`` can be looked up at all.

    Python's socket module encodes every host name with the IDNA codec, which refuses an
    empty or over-long label (``a..b``, 64 letters): such a name could never be resolved,
    and the probe would fail with an encoding error at every round.
    """
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True
