"""Certificates for a test fleet: a CA, the Manager's and every node's (``hostvisor certs``).

Who trusts what
---------------
Two connections, both mutual TLS:

* daemon -> Manager (gRPC, port 9090): the daemon checks the Manager's server certificate
  against ``ca.pem``; the Manager checks the daemon's client certificate against the same
  CA and, with ``grpc.tls.bind_node_identity``, accepts it only for the node id it names.
  The Manager reads the names of a client certificate from its subject common name and
  its subject alternative names (:func:`transport._bridge._peer_identities`): a node's
  certificate has the node id as its common name and as a DNS name (also when it is not
  a valid host name, e.g. ``web_1``: gRPC and OpenSSL read it as it is).
* Manager -> daemon (gRPC, port 9091): the Manager checks the daemon's server
  certificate (the node's one certificate serves both ways) against ``ca.pem``; the
  daemon checks the Manager's client certificate against ``daemon-clients-ca.pem``.

The second CA exists because a daemon accepts any client its CA vouches for, and checks
no name: had one CA signed everything, a node's certificate could operate the agents of
every other node. ``daemon-clients-ca`` signs only the Manager's client certificate.

:func:`make_fleet_certificates` validates everything before it writes anything, refuses
to replace an existing CA unless told to (every certificate the old one signed would stop
being trusted), or signs with it when asked to (``reuse_ca``: to add nodes later), writes
each file whole (a temporary file renamed into place) and every private key with mode
0600. Keys are ECDSA P-256; the validity period starts an hour before ``now`` (clocks of
a fleet disagree a little). ``now`` is a parameter.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateError",
    "CertificateExistsError",
    "FleetCertificates",
    "KeyPair",
    "make_fleet_certificates",
    "parse_node",
]

#: Where :meth:`FleetCertificates.guide` tells to put a node's files.
NODE_TLS_DIR = "/etc/hostvisor/tls"

#: The longest validity :func:`make_fleet_certificates` accepts (ten years), in days.
MAX_DAYS = 3650

_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


class CertificateError(ValueError):
    """The request for certificates is invalid; the message names what and why."""


class CertificateExistsError(CertificateError):
    """The directory already holds a CA, and replacing it was not asked for."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class FleetCertificates:
    """The files :func:`make_fleet_certificates` wrote.

    Attributes:
        directory: Where they are.
        ca: The fleet's CA: signs the Manager's server certificate and the nodes'.
        daemon_clients_ca: Signs only the Manager's client certificate; daemons trust it
            (``daemon.tls.ca_file``) for their callers.
        manager: The Manager's gRPC server certificate (its hosts as names).
        manager_client: The Manager's client certificate, for its calls to daemons.
        nodes: Each node's certificate (``nodes/ID.pem``), by node id: the daemon's gRPC
            server certificate and its client certificate towards the Manager.
        manager_hosts: The Manager's names and addresses (in its certificate).
        not_valid_after: When the certificates expire.
    """

    directory: Path
    ca: KeyPair
    daemon_clients_ca: KeyPair
    manager: KeyPair
    manager_client: KeyPair
    nodes: Mapping[str, KeyPair]
    manager_hosts: tuple[str, ...]
    not_valid_after: datetime.datetime

    def guide(self) -> str:
        """Which file goes in which configuration key, on the Manager and on each node."""
        clients_ca = self.daemon_clients_ca.cert
        lines = [
            f"Certificates in {self.directory} (valid until {self.not_valid_after:%Y-%m-%d}).",
            "",
            "On the Manager (manager.yaml):",
            "  grpc:",
            "    tls:",
            "      enabled: true",
            f"      cert_file: {self.manager.cert}",
            f"      key_file: {self.manager.key}",
            f"      ca_file: {self.ca.cert}",
            "      bind_node_identity: true   # a node's certificate registers its own id only",
            "  daemon_client:",
            "    tls:",
            f"      cert_file: {self.manager_client.cert}",
            f"      key_file: {self.manager_client.key}",
            f"      ca_file: {self.ca.cert}",
        ]
        for node_id, pair in self.nodes.items():
            files = (pair.cert, pair.key, self.ca.cert, clients_ca)
            there = {path: f"{NODE_TLS_DIR}/{path.name}" for path in files}
            lines += [
                "",
                f"On node {node_id}: copy {', '.join(str(path) for path in files)}"
                f" to {NODE_TLS_DIR}/ (the key readable by the daemon's user only);"
                " daemon.yaml:",
                "  daemon:",
                f"    id: {node_id}",
                "    grpc_host: 0.0.0.0",
                "    tls:",
                f"      cert_file: {there[pair.cert]}",
                f"      key_file: {there[pair.key]}",
                f"      ca_file: {there[clients_ca]}",
                "  manager:",
                f"    address: {self.manager_hosts[0]}:9090",
                "    tls:",
                f"      cert_file: {there[pair.cert]}",
                f"      key_file: {there[pair.key]}",
                f"      ca_file: {there[self.ca.cert]}",
            ]
        lines += [
            "",
            f"Keep {self.ca.key.name} and {self.daemon_clients_ca.key.name} off the hosts:"
            " whoever has them can make certificates the fleet trusts.",
        ]
        return "\n".join(lines)


def parse_node(text: str) -> tuple[str, tuple[str, ...]]:
    """``ID`` or ``ID=HOST[,HOST...]`` (the ``--node`` option) -> (node id, hosts).

    Raises:
        CertificateError: The id or a host is not valid (see :func:`make_fleet_certificates`).
    """
    node_id, _, hosts_text = text.partition("=")
    _check_node_id(node_id)
    hosts = tuple(h.strip() for h in hosts_text.split(",")) if hosts_text else ()
    for host in hosts:
        _check_host(host, f"--node {text}")
    return node_id, hosts


def make_fleet_certificates(
    directory: str | os.PathLike[str],
    *,
    manager_hosts: Sequence[str],
    node_ids: Sequence[str] = (),
    node_hosts: Mapping[str, Sequence[str]] | None = None,
    days: int = 365,
    force: bool = False,
    reuse_ca: bool = False,
    now: datetime.datetime | None = None,
) -> FleetCertificates:
    """Write a CA and the certificates of a Manager and its nodes into ``directory``.

    Args:
        directory: Where the files go (created if missing).
        manager_hosts: The names and IP addresses daemons reach the Manager at (at least
            one); each becomes a subject alternative name of its server certificate.
        node_ids: The nodes (``daemon.id``): letters, digits, ``.``, ``_`` and ``-``, at
            most 64, starting with a letter or digit. Each certificate's common name and
            first subject alternative name.
        node_hosts: Names and IP addresses of a node (the address the Manager calls it
            at, usually the IP its daemon registered): subject alternative names of its
            certificate, which the Manager checks when it calls the daemon.
        days: How long the certificates are valid (1 to 3650).
        force: Replace an existing CA (and everything else) in ``directory``.
        reuse_ca: Sign with the CAs already in ``directory`` (to add nodes to a fleet, or
            renew certificates): only the Manager's and the named nodes' files are
            written, valid at most as long as the CAs.
        now: The start of validity (less an hour); None: the current time.

    Returns:
        The paths written.

    Raises:
        CertificateError: An invalid host, node id or ``days``; a node's host that is
            another node's id (its certificate would be valid for that node).
        CertificateExistsError: ``directory`` holds a CA and neither ``force`` nor
            ``reuse_ca`` is set.
        OSError: The files could not be written.
    """
    hosts_of = {node_id: tuple(hosts) for node_id, hosts in (node_hosts or {}).items()}
    _validate(manager_hosts, node_ids, hosts_of, days)
    if force and reuse_ca:
        raise CertificateError("--force makes a new CA, --reuse-ca keeps it: give one of them")
    now = datetime.datetime.now(datetime.UTC) if now is None else now
    not_before = now - datetime.timedelta(hours=1)
    not_after = now + datetime.timedelta(days=days)
    out = Path(directory).absolute()
    fleet = FleetCertificates(
        directory=out,
        ca=_pair(out, "ca"),
        daemon_clients_ca=_pair(out, "daemon-clients-ca"),
        manager=_pair(out, "manager"),
        manager_client=_pair(out, "manager-client"),
        nodes={node_id: _pair(out / "nodes", node_id) for node_id in node_ids},
        manager_hosts=tuple(manager_hosts),
        not_valid_after=not_after,
    )
    cas = (fleet.ca.cert, fleet.ca.key, fleet.daemon_clients_ca.cert, fleet.daemon_clients_ca.key)
    existing = [path for path in cas if path.exists()]
    if existing and not (force or reuse_ca):
        raise CertificateExistsError(
            f"{existing[0]} exists: pass --reuse-ca to sign with it, or --force to replace"
            " it (every certificate it signed stops being trusted)"
        )
    if reuse_ca:
        ca, clients_ca = _Issuer.load(fleet.ca), _Issuer.load(fleet.daemon_clients_ca)
        not_after = min(not_after, ca.cert.not_valid_after_utc, clients_ca.cert.not_valid_after_utc)
        fleet = replace(fleet, not_valid_after=not_after)
    validity = (not_before, not_after)
    (out / "nodes").mkdir(parents=True, exist_ok=True)
    if not reuse_ca:
        ca = _Issuer.new("hostvisor fleet CA", validity)
        clients_ca = _Issuer.new("hostvisor daemon clients CA", validity)
        for pair, issuer in ((fleet.ca, ca), (fleet.daemon_clients_ca, clients_ca)):
            _write(pair, issuer.cert, issuer.key)
    leaves = [
        (fleet.manager, ca, "hostvisor-manager", tuple(manager_hosts), _SERVER),
        (fleet.manager_client, clients_ca, "hostvisor-manager", ("hostvisor-manager",), _CLIENT),
    ]
    for node_id, pair in fleet.nodes.items():
        names = (node_id, *hosts_of.get(node_id, ()))
        leaves.append((pair, ca, node_id, tuple(dict.fromkeys(names)), _SERVER + _CLIENT))
    for pair, issuer, common_name, names, usages in leaves:
        key = ec.generate_private_key(ec.SECP256R1())
        _write(pair, issuer.sign(key, common_name, names, usages, validity), key)
    return fleet


# --------------------------------------------------------------------------- validation


def _validate(
    manager_hosts: Sequence[str],
    node_ids: Sequence[str],
    hosts_of: Mapping[str, Sequence[str]],
    days: int,
) -> None:
    if isinstance(manager_hosts, str):
        raise CertificateError("manager_hosts: expected a list of hosts, got a string")
    if not manager_hosts:
        raise CertificateError(
            "no Manager host: give the names or addresses daemons reach the Manager at"
            " (--manager-host)"
        )
    for host in manager_hosts:
        _check_host(host, "--manager-host")
    seen: set[str] = set()
    for node_id in node_ids:
        _check_node_id(node_id)
        if node_id in seen:
            raise CertificateError(f"--node {node_id}: given twice")
        seen.add(node_id)
    for node_id, hosts in hosts_of.items():
        if node_id not in seen:
            raise CertificateError(f"hosts for node {node_id!r}, which is not one of the nodes")
        for host in hosts:
            _check_host(host, f"--node {node_id}")
            if host != node_id and host in seen:
                raise CertificateError(
                    f"--node {node_id}: host {host!r} is another node's id; its certificate"
                    f" would be valid for node {host} too"
                )
    if not 1 <= days <= MAX_DAYS:
        raise CertificateError(f"--days: must be 1 to {MAX_DAYS}, got {days}")


def _check_node_id(node_id: str) -> None:
    if not _NODE_ID.fullmatch(node_id):
        raise CertificateError(
            f"node id {node_id!r}: use 1 to 64 letters, digits, '.', '_' or '-', starting"
            " with a letter or digit"
        )


def _check_host(host: str, where: str) -> None:
    if _ip(host) is None and not _is_dns_name(host):
        raise CertificateError(f"{where}: {host!r} is neither an IP address nor a DNS name")


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_dns_name(name: str) -> bool:
    labels = name.split(".")
    return (
        0 < len(name) <= 253
        and all(_DNS_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()  # 10.0.0.300 is a typo, not a name
    )


# --------------------------------------------------------------------------- issuing

_SERVER: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.SERVER_AUTH,)
_CLIENT: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,)


@dataclass(frozen=True, slots=True)
class _Issuer:
    """A CA's key and self-signed certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def new(cls, name: str, validity: tuple[datetime.datetime, datetime.datetime]) -> _Issuer:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            _builder(subject, subject, key.public_key(), validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load(cls, pair: KeyPair) -> _Issuer:
        """A CA written earlier (``--reuse-ca``)."""
        try:
            cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
            key = serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
        except FileNotFoundError as exc:
            raise CertificateError(f"no CA to reuse: {exc.filename} is missing") from None
        except (OSError, ValueError, TypeError) as exc:
            raise CertificateError(f"{pair.cert.parent}: cannot read the CA: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise CertificateError(f"{pair.key} is not the key of {pair.cert}")
        return cls(key, cert)

    def sign(
        self,
        key: ec.EllipticCurvePrivateKey,
        common_name: str,
        names: Sequence[str],
        usages: Sequence[x509.ObjectIdentifier],
        validity: tuple[datetime.datetime, datetime.datetime],
    ) -> x509.Certificate:
        """A leaf certificate for ``key``: ``common_name``, ``names`` as SANs, ``usages``."""
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        issuer_key = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        builder = (
            _builder(subject, self.cert.subject, key.public_key(), validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_key),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
            )
        return builder.sign(self.key, hashes.SHA256())


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    validity: tuple[datetime.datetime, datetime.datetime],
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Signatures (ECDSA keys sign the handshake); a CA also signs certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _general_name(name: str) -> x509.GeneralName:
    address = _ip(name)
    return x509.DNSName(name) if address is None else x509.IPAddress(address)


# --------------------------------------------------------------------------- files


def _pair(directory: Path, stem: str) -> KeyPair:
    return KeyPair(directory / f"{stem}.pem", directory / f"{stem}.key")


def _write(pair: KeyPair, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _replace(pair.key, key_pem, 0o600)
    _replace(pair.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _replace(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` whole with ``mode``: a new file renamed over any old one."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # a temporary file left by a crash kept its mode
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
