"""The ``manager:`` section of ``daemon.yaml``: where the Manager is and how to talk to it.

The section is described with :mod:`supervisor.schema` tables, like the ``daemon``
section, so it behaves the same way: every problem at once, each with its path
(``manager.tls.cert_file``), unknown keys with a suggestion, null meaning "not set"::

    manager:
      address: manager.example.com:9090      # required; the port defaults to 9090
      tls:                                   # optional; without it: plaintext
        cert_file: /etc/hostvisor/client.crt # the client certificate (with key_file)
        key_file: /etc/hostvisor/client.key
        ca_file: /etc/hostvisor/ca.crt       # the CA of the Manager's certificate
        server_name: manager.example.com     # the name to verify, if not the address's
      heartbeat_interval: 60s
      reconnect_interval: 10s                # the longest wait between reconnections
      timeout: 30s                           # of every call
      sync_interval: 30s                     # full agent-state sync
      keepalive: {time: 30s, timeout: 10s, permit_without_calls: true}
      spool: {max_bytes: 64MiB, max_age: 24h}

Keepalive must agree with the Manager's ping policy: a gRPC server answers pings that come
more often than it allows with GOAWAY (``ENHANCE_YOUR_CALM``) and closes the connection.
The original Manager allows one every 20 s, so ``keepalive.time`` below
:data:`MIN_PING_INTERVAL_S` is refused (0 disables pings). The seed's 10 s / 3 s would be
closed by it.

TLS is all or nothing at start-up: a certificate, key or CA file that is missing or not
PEM is a configuration error (:func:`load_tls_files`, :func:`check_manager_files`), never
a fall-back to plaintext as in the original. gRPC's Python API cannot set a minimum TLS
version: TLS 1.3 is negotiated whenever the Manager offers it; a Manager can refuse older
versions itself.

Also here: the ``daemon.labels`` kind (a mapping of strings, sent at registration).
Importing this module imports neither grpc nor trio.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from supervisor import ConfigError, ConfigIssue, format_duration, parse_duration, parse_size
from supervisor.schema import (
    BOOLEAN,
    PATH,
    STRING,
    Block,
    Field,
    Invalid,
    Issues,
    Kind,
    read_block as _read_block,
    show,
)

from ._spool_policy import SpoolLimits

if TYPE_CHECKING:
    from ._config import DaemonConfig

__all__ = [
    "DEFAULT_MANAGER_PORT",
    "LABELS",
    "MANAGER",
    "MIN_PING_INTERVAL_S",
    "KeepaliveSpec",
    "ManagerSpec",
    "ManagerTls",
    "SpoolSpec",
    "TlsFiles",
    "channel_options",
    "check_manager_files",
    "load_tls_files",
    "check_manager_section",
    "manager_config",
    "manager_file_issues",
    "parse_manager",
    "read_labels",
]

DEFAULT_MANAGER_PORT = 9090
"""The Manager's gRPC port when ``manager.address`` gives none (the original's)."""
MIN_PING_INTERVAL_S = 20.0
"""The shortest ping interval the original Manager's server accepts."""

# --------------------------------------------------------------------------- kinds


def _positive_duration(value: object, base: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    if seconds <= 0:
        raise Invalid(f"must be longer than 0s; got {show(value)}")
    return seconds


def _duration(value: object, base: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def _size(value: object, base: str) -> int:
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    if size <= 0:
        raise Invalid(f"must be larger than 0; got {show(value)}")
    return size


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?")


def _address(value: object, base: str) -> str:
    """``host:port``, ``host`` (port 9090), ``[v6]:port`` or a bare IPv6 address."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected host:port (e.g. manager.example.com:9090); got {show(value)}")
    text = value.strip()
    host, port = text, str(DEFAULT_MANAGER_PORT)
    if text.startswith("["):
        close = text.find("]")
        rest = text[close + 1 :] if close > 0 else "?"
        if rest and not rest.startswith(":"):
            raise Invalid(f"expected [IPv6 address]:port; got {show(value)}")
        host, port = text[1:close], rest[1:] or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise Invalid(f"expected a port from 1 to 65535; got {show(value)}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.fullmatch(host):
            message = f"expected a host name or IP address and a port; got {show(value)}"
            raise Invalid(message) from None
        return f"{host.lower()}:{int(port)}"
    return f"[{ip}]:{int(port)}" if ip.version == 6 else f"{ip}:{int(port)}"


def _labels(value: object, base: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise Invalid(f"expected a mapping of names to strings; got {show(value)}")
    labels: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for key, item in value.items():
        if not isinstance(key, str) or not key.strip() or "\0" in key:
            problems.append((f".{key}", f"expected a non-empty name; got {show(key)}"))
        elif isinstance(item, bool) or not isinstance(item, str | int | float):
            problems.append((f".{key}", f"expected a string; got {show(item)}"))
        elif "\0" in str(item):
            problems.append((f".{key}", "must not contain a NUL character"))
        else:
            labels[key] = str(item)
    if problems:
        raise Invalid.many(problems)
    return labels


POSITIVE_DURATION = Kind(_positive_duration, format_duration)
DURATION = Kind(_duration, format_duration)
SIZE = Kind(_size)
ADDRESS = Kind(_address)
LABELS = Kind(_labels, dict)
"""``daemon.labels``: names to strings (numbers are written as strings)."""

TLS: Mapping[str, Field | Block] = {
    "cert_file": Field("cert_file", PATH),
    "key_file": Field("key_file", PATH),
    "ca_file": Field("ca_file", PATH),
    "server_name": Field("server_name", STRING),
}
KEEPALIVE: Mapping[str, Field | Block] = {
    "time": Field("time_s", DURATION),
    "timeout": Field("timeout_s", POSITIVE_DURATION),
    "permit_without_calls": Field("permit_without_calls", BOOLEAN),
}
SPOOL: Mapping[str, Field | Block] = {
    "max_bytes": Field("max_bytes", SIZE),
    "max_age": Field("max_age_s", POSITIVE_DURATION),
}
MANAGER: Mapping[str, Field | Block] = {
    "address": Field("address", ADDRESS),
    "tls": Block("tls", TLS),
    "heartbeat_interval": Field("heartbeat_interval_s", POSITIVE_DURATION),
    "reconnect_interval": Field("reconnect_interval_s", POSITIVE_DURATION),
    "timeout": Field("timeout_s", POSITIVE_DURATION),
    "sync_interval": Field("sync_interval_s", POSITIVE_DURATION),
    "keepalive": Block("keepalive", KEEPALIVE),
    "spool": Block("spool", SPOOL),
}
"""The ``manager`` section's table."""

# --------------------------------------------------------------------------- specs


@dataclass(frozen=True, slots=True)
class ManagerTls:
    """``manager.tls``: TLS is used when any file is set.

    Attributes:
        cert_file: The daemon's client certificate chain (PEM); with ``key_file``.
        key_file: Its private key (PEM).
        ca_file: The CA the Manager's certificate must chain to; None: the system's.
        server_name: The name to verify in the Manager's certificate instead of the
            address's host (for a Manager reached by IP address).
    """

    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    server_name: str | None = None

    @property
    def enabled(self) -> bool:
        """Whether the connection uses TLS."""
        return any(f is not None for f in (self.cert_file, self.key_file, self.ca_file))


@dataclass(frozen=True, slots=True)
class KeepaliveSpec:
    """``manager.keepalive``: HTTP/2 pings that find a dead connection between calls.

    Attributes:
        time_s: Seconds between pings (0: no pings; else at least 20 s).
        timeout_s: How long a ping may go unanswered before the connection is closed.
        permit_without_calls: Ping also while no call is in flight.
    """

    time_s: float = 30.0
    timeout_s: float = 10.0
    permit_without_calls: bool = True


@dataclass(frozen=True, slots=True)
class SpoolSpec:
    """``manager.spool``: the bounds of the undelivered-report spool.

    The defaults hold a day of reports: a report of the four collectors is 2 to 6 KiB
    (more with many mounts or interfaces), 1,440 a day at the 60 s default, so about
    9 MiB; state syncs do not accumulate (a newer one replaces an older one).

    Attributes:
        max_bytes: The most bytes the spool holds; the oldest entries go first.
        max_age_s: The oldest an entry may get.
    """

    max_bytes: int = 64 * 1024 * 1024
    max_age_s: float = 24 * 3600.0

    @property
    def limits(self) -> SpoolLimits:
        """The bounds as the spool policy takes them."""
        return SpoolLimits(self.max_bytes, self.max_age_s)


@dataclass(frozen=True, slots=True)
class ManagerSpec:
    """The validated ``manager`` section.

    Attributes:
        address: ``host:port`` of the Manager's gRPC server (``ManagerService``).
        tls: TLS settings.
        heartbeat_interval_s: Seconds between heartbeats.
        reconnect_interval_s: The longest wait between two reconnection attempts
            (the first ones come sooner, with exponential backoff and jitter).
        timeout_s: The deadline of every call.
        sync_interval_s: Seconds between full agent-state syncs.
        keepalive: Ping settings.
        spool: Bounds of the undelivered-report spool.
    """

    address: str
    tls: ManagerTls = field(default_factory=ManagerTls)
    heartbeat_interval_s: float = 60.0
    reconnect_interval_s: float = 10.0
    timeout_s: float = 30.0
    sync_interval_s: float = 30.0
    keepalive: KeepaliveSpec = field(default_factory=KeepaliveSpec)
    spool: SpoolSpec = field(default_factory=SpoolSpec)

    @property
    def host(self) -> str:
        """The address's host (without brackets)."""
        host = self.address.rpartition(":")[0]
        return host[1:-1] if host.startswith("[") else host

    @property
    def port(self) -> int:
        """The address's port."""
        return int(self.address.rpartition(":")[2])


def _attrs(layer: Mapping[str, Any], fields: Mapping[str, Field | Block]) -> dict[str, Any]:
    return {fields[key].attr: value for key, value in layer.items() if value is not None}


def _read(raw: object, base: str, issues: Issues) -> ManagerSpec | None:
    layer = _read_block(raw, "manager", MANAGER, base, issues)
    attrs = _attrs(layer, MANAGER)
    attrs["tls"] = ManagerTls(**_attrs(attrs.get("tls", {}), TLS))
    attrs["keepalive"] = KeepaliveSpec(**_attrs(attrs.get("keepalive", {}), KEEPALIVE))
    attrs["spool"] = SpoolSpec(**_attrs(attrs.get("spool", {}), SPOOL))
    if "address" not in attrs and isinstance(raw, Mapping) and not issues.has("manager.address"):
        issues.add("manager.address", "required: the Manager's host:port")
    spec = ManagerSpec(**{"address": "", **attrs})
    _check_rules(spec, issues)  # also when the address is wrong: every problem at once
    return spec if spec.address else None


def _check_rules(spec: ManagerSpec, issues: Issues) -> None:
    tls = spec.tls
    if (tls.cert_file is None) != (tls.key_file is None):
        given, missing = ("cert_file", "key_file")
        if tls.cert_file is None:
            given, missing = missing, given
        issues.add(
            f"manager.tls.{missing}",
            f"required with manager.tls.{given}: a client certificate needs its key",
        )
    if tls.server_name is not None and not tls.enabled:
        issues.add("manager.tls.server_name", "set without any TLS file: TLS is not used")
    time_s = spec.keepalive.time_s
    if 0 < time_s < MIN_PING_INTERVAL_S:
        issues.add(
            "manager.keepalive.time",
            f"{format_duration(time_s)} is below {format_duration(MIN_PING_INTERVAL_S)}, the"
            " shortest ping interval the Manager accepts: it would close the connection"
            " (GOAWAY ENHANCE_YOUR_CALM); use 0s to send no pings",
        )


def parse_manager(raw: object, *, base_dir: str) -> ManagerSpec:
    """Validate a ``manager`` section.

    Args:
        raw: The section as found in the document (a mapping).
        base_dir: The directory relative TLS paths are resolved against.

    Returns:
        The validated section, defaults applied, paths absolute.

    Raises:
        ConfigError: Every problem, each with its path (``manager.tls.key_file``).
    """
    issues = Issues()
    spec = _read(raw, base_dir, issues)
    if issues.items or spec is None:
        raise ConfigError(issues.items or [ConfigIssue("manager", "expected a mapping")])
    return spec


def check_manager_section(raw: object, base_dir: str, issues: Issues) -> None:
    """Validate a ``manager`` section into the daemon configuration's issues.

    For :func:`transport.daemon._config.parse_config`: the section stays verbatim in
    ``DaemonConfig.manager`` and its problems are reported with every other one.
    """
    if raw:
        _read(raw, base_dir, issues)


def manager_file_issues(raw: object, base_dir: str) -> list[ConfigIssue]:
    """The TLS file problems of a valid ``manager`` section (for ``load_config``).

    Returns:
        Problems with paths such as ``manager.tls.cert_file``; empty when the section is
        absent or invalid (its own problems are reported by the parser).
    """
    if not raw:
        return []
    issues = Issues()
    spec = _read(raw, base_dir, issues)
    return check_manager_files(spec) if spec is not None and not issues.items else []


def manager_config(config: DaemonConfig) -> ManagerSpec | None:
    """The validated ``manager`` section of a daemon configuration, or None without one.

    Relative paths are resolved against the configuration file's directory.

    Raises:
        ConfigError: The section is invalid, or a TLS file is missing or not PEM
            (:func:`check_manager_files`); ``source`` is the configuration file.
    """
    if not config.manager:
        return None
    base = os.path.dirname(os.path.abspath(config.source)) if config.source else os.getcwd()
    try:
        spec = parse_manager(config.manager, base_dir=base)
    except ConfigError as exc:
        raise ConfigError(exc.issues, source=config.source) from None
    problems = check_manager_files(spec)
    if problems:
        raise ConfigError(problems, source=config.source)
    return spec


# --------------------------------------------------------------------------- files


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The contents of the TLS files, read once at start-up.

    Attributes:
        ca: The CA certificates (PEM), or None for the system's.
        cert_chain: The client certificate chain (PEM), or None.
        private_key: Its key (PEM), or None.
        server_name: As :attr:`ManagerTls.server_name`.
    """

    ca: bytes | None
    cert_chain: bytes | None
    private_key: bytes | None = field(repr=False)
    server_name: str | None = None


_PEM_LABELS = {"cert_file": "CERTIFICATE", "key_file": "PRIVATE KEY", "ca_file": "CERTIFICATE"}


def read_pem(path: str, label: str) -> tuple[bytes | None, str | None]:
    """The file's bytes, or why it is not a readable PEM file holding a ``label``."""
    try:
        with open(path, "rb") as file:
            data = file.read(1 << 20)
    except FileNotFoundError:
        return None, f"not found: {path!r}"
    except IsADirectoryError:
        return None, f"is a directory, not a file: {path!r}"
    except OSError as exc:
        return None, f"cannot be read: {path!r} ({exc.strerror or exc})"
    if b"-----BEGIN" not in data or label.encode() + b"-----" not in data:
        return None, f"not a PEM file with a {label.lower()}: {path!r}"
    return data, None


def _read_files(tls: ManagerTls) -> tuple[dict[str, bytes], list[ConfigIssue]]:
    found: dict[str, bytes] = {}
    problems: list[ConfigIssue] = []
    for key, label in _PEM_LABELS.items():
        path = getattr(tls, key)
        if path is None:
            continue
        data, problem = read_pem(path, label)
        if problem is not None:
            problems.append(ConfigIssue(f"manager.tls.{key}", problem))
        elif data is not None:
            found[key] = data
    return found, problems


def check_manager_files(spec: ManagerSpec) -> list[ConfigIssue]:
    """Check that every configured TLS file is a readable PEM file of the right kind.

    Returns:
        The problems, with paths such as ``manager.tls.cert_file``; empty if none.
    """
    return _read_files(spec.tls)[1]


def load_tls_files(spec: ManagerSpec) -> TlsFiles | None:
    """Read the TLS files once, for the channel.

    Returns:
        Their contents, or None when ``manager.tls`` sets no file (plaintext).

    Raises:
        ConfigError: A file is missing, unreadable or not PEM: never plaintext instead.
    """
    tls = spec.tls
    if not tls.enabled:
        return None
    found, problems = _read_files(tls)
    if problems:
        raise ConfigError(problems)
    return TlsFiles(
        ca=found.get("ca_file"),
        cert_chain=found.get("cert_file"),
        private_key=found.get("key_file"),
        server_name=tls.server_name,
    )


def channel_options(spec: ManagerSpec) -> tuple[tuple[str, int | str], ...]:
    """The grpc channel arguments of the connection to the Manager.

    Keepalive as configured; grpc's own reconnection backoff from 1 s up to
    ``reconnect_interval``; grpc's transparent retries off (the client retries itself,
    with the spool behind it).
    """
    keepalive = spec.keepalive
    reconnect_ms = max(1000, round(spec.reconnect_interval_s * 1000))
    options: list[tuple[str, int | str]] = [
        ("grpc.enable_retries", 0),
        ("grpc.initial_reconnect_backoff_ms", min(1000, reconnect_ms)),
        ("grpc.min_reconnect_backoff_ms", min(1000, reconnect_ms)),
        ("grpc.max_reconnect_backoff_ms", reconnect_ms),
        ("grpc.max_receive_message_length", 4 << 20),
    ]
    if keepalive.time_s > 0:
        options += [
            ("grpc.keepalive_time_ms", round(keepalive.time_s * 1000)),
            ("grpc.keepalive_timeout_ms", round(keepalive.timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", int(keepalive.permit_without_calls)),
            ("grpc.http2.max_pings_without_data", 0),
        ]
    return tuple(options)


def read_labels(value: object) -> Mapping[str, str]:
    """``daemon.labels`` outside a schema walk (tests, programs).

    Raises:
        ConfigError: A name or value is not acceptable (paths ``daemon.labels.<name>``).
    """
    try:
        return MappingProxyType(_labels(value, ""))
    except Invalid as exc:
        issues = [ConfigIssue(f"daemon.labels{at}", message) for at, message in exc.problems]
        raise ConfigError(issues) from None
