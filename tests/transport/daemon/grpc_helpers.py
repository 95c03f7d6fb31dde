"""Helpers for the daemon's gRPC tests: the services in process, certificates, a compile of
the .proto files by stock tools."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import transport
from supervisor import AgentSpec, Supervisor, open_supervisor
from transport import Channel, Listener, open_channel, open_grpc_loop, serve_grpc
from transport.daemon._config import DaemonConfig, DaemonSpec
from transport.daemon._service import Backend, DaemonServiceHandlers, UpdatePort
from transport.daemon._streams import HostvisorHandlers

#: A safety net against a hung test, never a timing assertion.
SAFETY_S = 60
PROTOS = Path(transport.__file__).parent / "protos"


@dataclass
class Served:
    """The services over a real supervisor, served on loopback and a Unix socket."""

    supervisor: Supervisor
    config: DaemonConfig
    tcp: Channel
    unix: Channel
    addresses: tuple[str, ...]
    backend: Backend
    extra: dict[str, object] = field(default_factory=dict)


@asynccontextmanager
async def serving(
    tmp: Path,
    sock_dir: Path,
    agents: Sequence[AgentSpec],
    *,
    updates: UpdatePort | None = None,
    daemon: DaemonSpec | None = None,
) -> AsyncIterator[Served]:
    """A supervisor running ``agents``, both services served over it, and a channel to
    each listener; everything is closed (agents stopped) after the block."""
    work = tmp / "work"
    config = DaemonConfig(daemon=daemon or DaemonSpec(work_dir=str(work)), agents=tuple(agents))
    with trio.fail_after(SAFETY_S):
        async with (
            open_supervisor(agents, work_dir=str(work)) as supervisor,
            open_grpc_loop(),
            trio.open_nursery() as nursery,
        ):
            backend = Backend(supervisor, lambda: config, updates)
            routes = DaemonServiceHandlers(backend).routes() + HostvisorHandlers(backend).routes()
            listeners = [Listener("127.0.0.1:0"), Listener(f"unix:{sock_dir}/d.sock")]
            addresses = await nursery.start(partial(serve_grpc, routes, listeners))
            async with open_channel(addresses[0]) as tcp, open_channel(addresses[1]) as unix:
                yield Served(supervisor, config, tcp, unix, addresses, backend)
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pki:
    """A test CA, a server certificate for ``localhost``/127.0.0.1 and a client one."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"

    @property
    def stranger_cert(self) -> Path:
        return self.directory / "stranger.pem"

    @property
    def stranger_key(self) -> Path:
        return self.directory / "stranger.key"


def _certificate(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    *,
    server: bool = False,
) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name = (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]) if issuer else subject
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        import ipaddress

        names: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    signer = issuer[1] if issuer else key
    return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_pki(directory: Path) -> Pki:
    """Write a CA, a server and a client certificate it signed, and a stranger's (signed by
    another CA) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    ca_key, other_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    pki.ca.write_bytes(_certificate("test-ca", ca_key, None))
    for cert, key_path, name, issuer, server in (
        (pki.server_cert, pki.server_key, "localhost", ("test-ca", ca_key), True),
        (pki.client_cert, pki.client_key, "manager", ("test-ca", ca_key), False),
        (pki.stranger_cert, pki.stranger_key, "stranger", ("other-ca", other_key), False),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert.write_bytes(_certificate(name, key, issuer, server=server))
        key_path.write_bytes(_key(key))
        key_path.chmod(0o600)
    return pki


# --------------------------------------------------------------------------- stock tools


def compile_protos() -> Path:
    """The .proto files compiled by grpc_tools' protoc (Python messages and stubs) into a
    fresh directory; the caller removes it."""
    from grpc_tools import protoc  # type: ignore[import-untyped]

    out = Path(tempfile.mkdtemp(prefix="hv-protoc-"))
    protos = sorted(p.relative_to(PROTOS).as_posix() for p in PROTOS.rglob("*.proto"))
    status = protoc.main(
        ["protoc", f"-I{PROTOS}", f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    )
    if status != 0:
        shutil.rmtree(out, ignore_errors=True)
        raise RuntimeError(f"protoc failed with {status}")
    return out


def run_stock_client(out: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with only the stock-compiled modules (not ours) on its path."""
    path = out / "client.py"
    path.write_text(script)
    return subprocess.run(
        [sys.executable, str(path), *args],
        cwd=out,
        env={"PYTHONPATH": str(out), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
