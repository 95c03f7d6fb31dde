"""A fault-injecting HTTP/HTTPS server on 127.0.0.1, served with Trio, for the updater tests.

Routes (``name`` is a key of :attr:`FaultServer.files`):

* ``/f/<name>``: the file, with ``Content-Length``.
* ``/truncate/<name>``: announces the full length, sends half, closes.
* ``/nolength/<name>``: no ``Content-Length``, body ends when the connection closes.
* ``/corrupt/<name>``: same length, one byte flipped.
* ``/drip/<name>?every=<s>``: headers, then one byte every ``s`` seconds (default 20).
* ``/endless``: no ``Content-Length``, random-ish bytes forever.
* ``/biglength``: announces a 1 TB body.
* ``/silent``: reads the request and never answers.
* ``/redirect?to=<url>``: 302 to ``url``.
* ``/status/<code>``: an empty response with that status.

Every request path is recorded in :attr:`FaultServer.hits`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import urllib.parse
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio


@dataclass
class TLSFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost."""

    ca_pem: bytes
    cert_path: Path
    key_path: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem.decode())

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context


def make_tls_files(directory: Path) -> TLSFiles:
    """Create a self-signed CA and a leaf certificate signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "updater test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path = directory / "server.crt"
    key_path = directory / "server.key"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TLSFiles(ca.public_bytes(serialization.Encoding.PEM), cert_path, key_path)


@dataclass
class FaultServer:
    """The server's state: files to serve, where it listens, what was asked."""

    files: dict[str, bytes] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    port: int = 0
    tls: bool = False

    def url(self, path: str) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def handle(self, stream: trio.abc.Stream) -> None:
        try:
            await self._handle(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client hung up: that is what many tests do on purpose
        finally:
            await trio.aclose_forcefully(stream)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            data = await stream.receive_some(4096)
            if not data:
                return
            buffer += data
        target = buffer.split(b"\r\n", 1)[0].split(b" ")[1].decode()
        self.hits.append(target)
        parts = urllib.parse.urlsplit(target)
        query = urllib.parse.parse_qs(parts.query)
        _, kind, *rest = parts.path.split("/", 2)
        name = rest[0] if rest else ""

        async def head(status: str, length: int | None, extra: str = "") -> None:
            text = f"HTTP/1.1 {status}\r\nConnection: close\r\n{extra}"
            if length is not None:
                text += f"Content-Length: {length}\r\n"
            await stream.send_all((text + "\r\n").encode())

        body = self.files.get(name, b"")
        if kind == "f":
            if name not in self.files:
                await head("404 Not Found", 0)
                return
            await head("200 OK", len(body))
            for start in range(0, len(body), 256 * 1024):
                await stream.send_all(body[start : start + 256 * 1024])
        elif kind == "truncate":
            await head("200 OK", len(body))
            await stream.send_all(body[: len(body) // 2])
        elif kind == "nolength":
            await head("200 OK", None)
            await stream.send_all(body)
        elif kind == "corrupt":
            await head("200 OK", len(body))
            await stream.send_all(body[:-1] + bytes([body[-1] ^ 0xFF]))
        elif kind == "drip":
            every = float(query.get("every", ["20"])[0])
            await head("200 OK", len(body))
            for index in range(len(body)):
                await trio.sleep(every)
                await stream.send_all(body[index : index + 1])
        elif kind == "endless":
            await head("200 OK", None)
            chunk = bytes(range(256)) * 256
            while True:
                await stream.send_all(chunk)
        elif kind == "biglength":
            await head("200 OK", 10**12)
            await stream.send_all(b"x" * 1024)
        elif kind == "silent":
            await trio.sleep_forever()
        elif kind == "redirect":
            await head("302 Found", 0, f"Location: {query['to'][0]}\r\n")
        elif kind == "status":
            await head(f"{name} Whatever", 0)
        else:
            await head("404 Not Found", 0)


async def serve(
    nursery: trio.Nursery, server: FaultServer, tls: TLSFiles | None = None
) -> FaultServer:
    """Start ``server`` on 127.0.0.1 (an ephemeral port) in ``nursery``; returns it."""
    context = tls.server_context() if tls else None

    async def handler(stream: trio.SocketStream) -> None:
        if context is None:
            await server.handle(stream)
            return
        wrapped = trio.SSLStream(stream, context, server_side=True)
        try:
            await wrapped.do_handshake()
        except trio.BrokenResourceError:
            await trio.aclose_forcefully(wrapped)
            return
        await server.handle(wrapped)

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    server.port = listeners[0].socket.getsockname()[1]
    server.tls = tls is not None
    return server
