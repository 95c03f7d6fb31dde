"""Tests of the HTTP and TCP health probes against real servers on 127.0.0.1."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import NoReturn

import h11
import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings, strategies as st

from supervisor._health._judge import Judge, parse_endpoint, parse_url
from supervisor._health._probes import Probe, probe_http, probe_many, probe_tcp
from tests.supervisor.helpers import free_port

Handler = Callable[[trio.abc.Stream], Awaitable[None]]

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
REDIRECT = b"HTTP/1.1 301 Moved Permanently\r\nLocation: /new\r\nContent-Length: 0\r\n\r\n"
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"
GARBAGE = b"SSH-2.0-OpenSSH_9.2\r\n\r\n"
BIG = 8 << 20


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Virtual time that jumps once every task has been blocked for 10 ms of real time.

    The small real threshold leaves loopback I/O time to be delivered before a jump.
    """
    return trio.testing.MockClock(autojump_threshold=0.01)


async def read_head(stream: trio.abc.Stream) -> bytes:
    """Reads a request up to the blank line after its headers."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        data += chunk
    return data


def canned(response: bytes, seen: list[bytes] | None = None) -> Handler:
    """A handler that reads the request, answers ``response`` and closes."""

    async def handler(stream: trio.abc.Stream) -> None:
        head = await read_head(stream)
        if seen is not None:
            seen.append(head)
        await stream.send_all(response)

    return handler


async def big_body(stream: trio.abc.Stream) -> None:
    await read_head(stream)
    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)
    chunk = b"x" * 65536
    for _ in range(BIG // len(chunk)):
        await stream.send_all(chunk)


async def silent(stream: trio.abc.Stream) -> None:
    """Reads the request and never answers; closes when the client does."""
    while await stream.receive_some(4096):
        pass


async def blurt(stream: trio.abc.Stream) -> None:
    """Talks first, without waiting for the request (like an SSH server)."""
    await stream.send_all(GARBAGE)


async def hang_up(stream: trio.abc.Stream) -> None:
    """Closes the connection without reading or writing anything."""


async def serve(nursery: trio.Nursery, handler: Handler, wrap: ssl.SSLContext | None = None) -> int:
    """Serves ``handler`` on an ephemeral 127.0.0.1 port (TLS with ``wrap``); returns the port."""

    async def guarded(stream: trio.SocketStream) -> None:
        conn: trio.abc.Stream = stream
        if wrap is not None:
            conn = trio.SSLStream(stream, wrap, server_side=True, https_compatible=True)
        try:
            await handler(conn)
        except (trio.BrokenResourceError, OSError):
            pass  # the client went away first (refused certificate, body not read)
        finally:
            await trio.aclose_forcefully(conn)

    listeners = await nursery.start(partial(trio.serve_tcp, guarded, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def _many_http(
    url: str, *, timeout_s: float, ssl_context: ssl.SSLContext | None = None
) -> str | None:
    [verdict] = await probe_many([Probe(url=url, timeout_s=timeout_s)], ssl_context=ssl_context)
    return verdict


async def _many_tcp(host: str, port: int, *, timeout_s: float) -> str | None:
    [verdict] = await probe_many([Probe(endpoint=(host, port), timeout_s=timeout_s)])
    return verdict


@pytest.fixture(autouse=True, params=["one", "many"])
def prober(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every probe test runs twice: with the single probes and through a probe_many round."""
    if request.param == "many":
        monkeypatch.setitem(globals(), "probe_http", _many_http)
        monkeypatch.setitem(globals(), "probe_tcp", _many_tcp)
    return str(request.param)


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a self-signed cert for localhost/127.0.0.1 and a client trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostvisor test")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    directory: Path = tmp_path_factory.mktemp("tls")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "cert.pem").write_bytes(cert_pem)
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (OK, None),
        (NO_CONTENT, None),
        (b"HTTP/1.0 200 OK\r\n\r\nbody until close", None),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + OK, None),
        (REDIRECT, "HTTP 301 (redirect not followed)"),
        (UNAVAILABLE, "HTTP 503"),
        (b"HTTP/1.1 404 Not Found\r\n\r\n", "HTTP 404"),
        (GARBAGE, "bad response: "),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "bad response: peer closed"),
        (b"HTTP/1.1 200 OK\r\n", "bad response: peer unexpectedly closed"),
    ],
)
async def test_http_answers(nursery: trio.Nursery, response: bytes, expected: str | None) -> None:
    port = await serve(nursery, canned(response))
    result = await probe_http(f"http://127.0.0.1:{port}/metrics", timeout_s=5)
    if expected is None or expected.startswith("HTTP"):
        assert result == expected
    else:
        assert result is not None and result.startswith(expected), result


async def test_http_request_headers(nursery: trio.Nursery) -> None:
    seen: list[bytes] = []
    port = await serve(nursery, canned(OK, seen))
    assert await probe_http(f"http://u%40x:p%3Aw@127.0.0.1:{port}/m?a=1#f", timeout_s=5) is None
    lines = seen[0].decode().split("\r\n")
    assert lines[0] == "GET /m?a=1 HTTP/1.1"
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if line)}
    assert headers["host"] == f"127.0.0.1:{port}"
    assert headers["user-agent"] == "hostvisor-health"
    assert headers["connection"] == "close"
    assert headers["authorization"] == "Basic " + base64.b64encode(b"u@x:p:w").decode()


async def test_http_closed_immediately(nursery: trio.Nursery) -> None:
    port = await serve(nursery, hang_up)
    result = await probe_http(f"http://127.0.0.1:{port}/", timeout_s=5)
    assert result is not None
    assert result.startswith(("bad response: connection closed", "connection reset")), result


async def test_http_connection_refused() -> None:
    port = free_port()
    result = await probe_http(f"http://127.0.0.1:{port}/", timeout_s=5)
    assert result == f"connection refused (127.0.0.1:{port})"


async def test_http_timeout_is_exact(nursery: trio.Nursery, clock: trio.testing.MockClock) -> None:
    port = await serve(nursery, silent)
    start = trio.current_time()
    assert await probe_http(f"http://127.0.0.1:{port}/", timeout_s=5) == "timeout after 5s"
    assert trio.current_time() - start == pytest.approx(5)
    assert await probe_http(f"http://127.0.0.1:{port}/", timeout_s=0.5) == "timeout after 0.5s"


async def test_http_large_body_is_discarded(nursery: trio.Nursery) -> None:
    port = await serve(nursery, big_body)
    assert await probe_http(f"http://127.0.0.1:{port}/", timeout_s=5) is None


async def test_https_trusted(
    nursery: trio.Nursery, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server, client = tls
    port = await serve(nursery, canned(OK), wrap=server)
    for host in ("127.0.0.1", "localhost"):
        url = f"https://{host}:{port}/"
        assert await probe_http(url, timeout_s=5, ssl_context=client) is None


async def test_https_untrusted(
    nursery: trio.Nursery, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server, _ = tls
    port = await serve(nursery, canned(OK), wrap=server)
    result = await probe_http(f"https://127.0.0.1:{port}/", timeout_s=5)
    assert result is not None and result.startswith("TLS: certificate verify failed"), result


async def test_https_to_plain_http_server(nursery: trio.Nursery) -> None:
    port = await serve(nursery, blurt)
    result = await probe_http(f"https://127.0.0.1:{port}/", timeout_s=5)
    assert result is not None and result.startswith("TLS: "), result


async def test_dns_failure() -> None:
    class FailingResolver(trio.abc.HostnameResolver):
        async def getaddrinfo(self, *args: object, **kwargs: object) -> NoReturn:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        async def getnameinfo(self, *args: object) -> NoReturn:
            raise NotImplementedError

    trio.socket.set_custom_hostname_resolver(FailingResolver())
    result = await probe_http("http://nosuch.example/", timeout_s=5)
    assert result == "DNS: name or service not known (nosuch.example)"
    assert await probe_tcp("nosuch.example", 80, timeout_s=5) == result


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/",
        "127.0.0.1:9100/metrics",
        "http://",
        "http:///metrics",
        "http://127.0.0.1:99999/",
        "http://127.0.0.1:port/",
        "http://127.0.0.1/a b",
        "http://a..b/",
        f"http://{'x' * 64}.example/",
    ],
)
async def test_bad_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ValueError, match="health check URL"):
        await probe_http(url, timeout_s=5)


async def test_tcp_success_and_refused(nursery: trio.Nursery) -> None:
    port = await serve(nursery, hang_up)
    assert await probe_tcp("127.0.0.1", port, timeout_s=5) is None
    closed = free_port()
    assert await probe_tcp("127.0.0.1", closed, timeout_s=5) == (
        f"connection refused (127.0.0.1:{closed})"
    )


async def test_tcp_timeout(clock: trio.testing.MockClock) -> None:
    # A listener with a full accept queue drops further SYNs: connect hangs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        fillers = [socket.socket() for _ in range(3)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(address)
            start = trio.current_time()
            assert await probe_tcp(*address, timeout_s=5) == "timeout after 5s"
            assert trio.current_time() - start == pytest.approx(5)
        finally:
            for filler in fillers:
                filler.close()


async def test_no_fd_leak(
    nursery: trio.Nursery, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server, client = tls
    ok = await serve(nursery, canned(OK))
    bad = await serve(nursery, canned(UNAVAILABLE))
    junk = await serve(nursery, canned(GARBAGE))
    slow = await serve(nursery, silent)
    gone = await serve(nursery, hang_up)
    secure = await serve(nursery, canned(OK), wrap=server)
    refused = free_port()
    probes: list[tuple[Callable[[], Awaitable[str | None]], bool]] = [
        (lambda: probe_http(f"http://127.0.0.1:{ok}/", timeout_s=5), True),
        (lambda: probe_http(f"http://127.0.0.1:{bad}/", timeout_s=5), False),
        (lambda: probe_http(f"http://127.0.0.1:{junk}/", timeout_s=5), False),
        (lambda: probe_http(f"http://127.0.0.1:{slow}/", timeout_s=0.005), False),
        (lambda: probe_http(f"http://127.0.0.1:{gone}/", timeout_s=5), False),
        (lambda: probe_http(f"http://127.0.0.1:{refused}/", timeout_s=5), False),
        (lambda: probe_http(f"https://127.0.0.1:{secure}/", timeout_s=5, ssl_context=client), True),
        (lambda: probe_http(f"https://127.0.0.1:{secure}/", timeout_s=5), False),
        (lambda: probe_tcp("127.0.0.1", ok, timeout_s=5), True),
        (lambda: probe_tcp("127.0.0.1", refused, timeout_s=5), False),
    ]
    await trio.testing.wait_all_tasks_blocked()
    before = len(os.listdir("/proc/self/fd"))
    for i in range(200):
        probe, healthy = probes[i % len(probes)]
        assert ((await probe()) is None) == healthy, i
    await trio.testing.wait_all_tasks_blocked()
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("localhost:1", ("localhost", 1)),
        ("[::1]:65535", ("::1", 65535)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
    ],
)
def test_parse_endpoint(value: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(value) == expected


@pytest.mark.parametrize(
    "value",
    ["", "host", "host:", ":80", "::1:80", "[::1]", "[::1]80", "[nope]:80", "h:0", "h:65536",
     "h:8o", "h:٣", "a b:80", "[::1:80", "http://h:80", "a..b:80", ".h:80", f"{'x' * 64}:80"],
)  # fmt: skip
def test_parse_endpoint_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="invalid endpoint") as info:
        parse_endpoint(value)
    assert repr(value) in str(info.value)


async def test_a_round_of_many_probes_keeps_each_verdict_in_order(
    nursery: trio.Nursery, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """Mixed http, https and TCP probes, healthy and not, in one round."""
    ok = await serve(nursery, canned(OK))
    bad = await serve(nursery, canned(UNAVAILABLE))
    refused = free_port()
    server, client = tls
    secure = await serve(nursery, canned(OK), wrap=server)
    probes = [
        Probe(url=f"http://127.0.0.1:{ok}/"),
        Probe(url=f"http://127.0.0.1:{bad}/"),
        Probe(endpoint=("127.0.0.1", refused)),
        Probe(url=f"https://127.0.0.1:{secure}/"),
        Probe(endpoint=("127.0.0.1", ok)),
        Probe(url=f"http://localhost:{ok}/"),
    ] * 20
    verdicts = await probe_many(probes, ssl_context=client)
    expected = [None, "HTTP 503", f"connection refused (127.0.0.1:{refused})", None, None, None]
    assert verdicts == expected * 20
    with pytest.raises(ValueError, match="exactly one"):
        await probe_many([Probe()])


def _h11_verdict(response: bytes, max_body: int) -> str | None:
    """The reference: the whole answer through h11 alone, then the end of the stream."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    status, received = None, 0
    for data in (response, b""):
        if not data and status is None and not conn.trailing_data[0]:
            return "bad response: connection closed without a response"
        try:
            conn.receive_data(data)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    break
                if isinstance(event, h11.Response):
                    status = event.status_code
                    if 300 <= status < 400:
                        return f"HTTP {status} (redirect not followed)"
                    if not 200 <= status < 300:
                        return f"HTTP {status}"
                elif isinstance(event, h11.Data):
                    received += len(event.data)
                    if received >= max_body:
                        return None
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return None
        except h11.RemoteProtocolError:
            return "bad response"
    return "incomplete"


_heads = st.sampled_from(
    [
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.0 204 No Content\r\n",
        b"HTTP/1.1 503 Service Unavailable\r\n",
        b"HTTP/1.1 301 Moved\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 200\r\n",
        b"HTTX/1.1 200 OK\r\n",
    ]
)
_headers = st.lists(
    st.sampled_from(
        [
            b"Content-Length: 5\r\n",
            b"Content-Length: 0\r\n",
            b"content-length:  12 \r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Content-Type: text/plain\r\n",
            b"Server: x\r\n",
            b" folded\r\n",
            b"Content-Length: x\r\n",
        ]
    ),
    max_size=3,
)
_bodies = st.sampled_from([b"", b"hello", b"hello world!", b"5\r\nhello\r\n0\r\n\r\n", b"x" * 40])


@settings(max_examples=500)
@given(_heads, _headers, _bodies, st.integers(1, 64), st.lists(st.integers(1, 30), max_size=6))
def test_judge_agrees_with_h11(
    head: bytes, headers: list[bytes], body: bytes, max_body: int, cuts: list[int]
) -> None:
    """However the answer is split into reads, the quick path's verdict is h11's."""
    response = head + b"".join(headers) + b"\r\n" + body
    judge = Judge(parse_url("http://x/"), max_body)
    verdict: str | None = "incomplete"
    rest = response
    try:
        for size in [*cuts, len(response)]:
            chunk, rest = rest[:size], rest[size:]
            if not chunk:
                continue
            done, verdict = judge.feed(chunk)
            if done:
                break
        else:
            done, verdict = judge.feed(b"")
            if not done:
                verdict = "incomplete"
    except h11.RemoteProtocolError:
        verdict = "bad response"
    expected = _h11_verdict(response, max_body)
    if expected is not None and expected.startswith("bad response"):
        assert verdict is not None and verdict.startswith("bad response"), (verdict, expected)
    else:
        assert verdict == expected
