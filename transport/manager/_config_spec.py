"""The records and schema tables of ``manager.yaml`` (see :mod:`transport.manager._config`).

Each section is a frozen record (:class:`ServerSpec`, ...) and a :mod:`supervisor.schema`
table from document key to attribute and kind; :class:`ManagerConfig` holds them all.
The tables drive both reading and writing back, so the two stay in step. The kinds
reuse the daemon's (host names, positive durations) and the Go duration grammar the
original's files are written in (``24h``, ``1h``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from supervisor.schema import (
    BOOLEAN,
    DURATION,
    LOG_LEVEL,
    PATH,
    STRING,
    Block,
    Field,
    Invalid,
    Kind,
    show,
)
from transport.daemon._config import HOST
from transport.daemon._manager_config import POSITIVE_DURATION, TLS as CLIENT_TLS, ManagerTls

from ._alerts import Thresholds
from ._jobs import Schedule, parse_schedule

__all__ = [
    "TOP",
    "AlertsSpec",
    "AuthSpec",
    "DaemonClientSpec",
    "DaemonClientTls",
    "DatabaseSpec",
    "GrpcSpec",
    "GrpcTls",
    "JwtSpec",
    "LogSpec",
    "ManagerConfig",
    "MetricsSpec",
    "NodeSpec",
    "ServerSpec",
]

JWT_SECRET_FILE = "jwt.secret"
"""The generated JWT secret's file name in ``data_dir``."""
MAX_GRPC_WORKERS = 64
"""The most gRPC ingest worker processes (``grpc.workers``)."""

# --------------------------------------------------------------------------- kinds


def _port(value: object, base: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise Invalid(f"must be 0-65535 (0: any free port), got {show(value)}")
    return value


def _remote_port(value: object, base: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise Invalid(f"must be 1-65535, got {show(value)}")
    return value


def _integer(minimum: int) -> Kind:
    def read(value: object, base: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise Invalid(f"must be an integer >= {minimum}, got {show(value)}")
        return value

    return Kind(read)


def _workers(value: object, base: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_GRPC_WORKERS:
        raise Invalid(f"must be an integer from 1 to {MAX_GRPC_WORKERS}, got {show(value)}")
    return value


def _positive_number(value: object, base: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
        raise Invalid(f"must be a number > 0, got {show(value)}")
    return float(value)


def _percent(value: object, base: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 100:
        raise Invalid(f"must be a percentage > 0 and <= 100, got {show(value)}")
    return float(value)


def _choice(options: Mapping[str, str], refused: Mapping[str, str] | None = None) -> Kind:
    def read(value: object, base: str) -> str:
        text = value.strip().lower() if isinstance(value, str) else None
        if text is not None and refused and text in refused:
            raise Invalid(refused[text])
        if text is None or text not in options:
            raise Invalid(
                f"must be one of {', '.join(dict.fromkeys(options.values()))}, got {show(value)}"
            )
        return options[text]

    return Kind(read)


def _schedule(value: object, base: str) -> Schedule:
    try:
        return parse_schedule(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def _text(value: object, base: str) -> str:
    text = STRING.read(value, base)
    if not text.strip():
        raise Invalid(f"must not be empty, got {show(value)}")
    return str(text)


PORT = Kind(_port)
TEXT = Kind(_text)
SCHEDULE = Kind(_schedule, str)
DRIVER = _choice(
    {"sqlite": "sqlite", "sqlite3": "sqlite", "postgres": "postgres", "postgresql": "postgres"},
    {
        "mysql": "mysql is not supported: use sqlite (embedded, the default) or postgres",
        "mariadb": "mariadb is not supported: use sqlite (embedded, the default) or postgres",
    },
)

SERVER: Mapping[str, Field | Block] = {
    "host": Field("host", HOST),
    "port": Field("port", PORT),
    "mode": Field("mode", _choice({"release": "release", "debug": "debug", "test": "test"})),
    "read_timeout": Field("read_timeout_s", POSITIVE_DURATION),
    "write_timeout": Field("write_timeout_s", POSITIVE_DURATION),
}
GRPC_TLS: Mapping[str, Field | Block] = {
    "enabled": Field("enabled", BOOLEAN),
    "cert_file": Field("cert_file", PATH),
    "key_file": Field("key_file", PATH),
    "ca_file": Field("ca_file", PATH),
    "bind_node_identity": Field("bind_node_identity", BOOLEAN),
}
GRPC: Mapping[str, Field | Block] = {
    "host": Field("host", HOST),
    "port": Field("port", PORT),
    "workers": Field("workers", Kind(_workers)),
    "tls": Block("tls", GRPC_TLS),
}
DATABASE: Mapping[str, Field | Block] = {
    "driver": Field("driver", DRIVER),
    "dsn": Field("url", STRING),
    "max_idle_conns": Field("max_idle_conns", _integer(0)),
    "max_open_conns": Field("max_open_conns", _integer(1)),
    "conn_max_lifetime": Field("conn_max_lifetime_s", DURATION),
    "log_level": Field(
        "log_level",
        _choice({"silent": "silent", "error": "error", "warn": "warn", "info": "info"}),
    ),
}
JWT: Mapping[str, Field | Block] = {
    "secret": Field("secret", TEXT),
    "expire_time": Field("expire_time_s", POSITIVE_DURATION),
    "issuer": Field("issuer", TEXT),
}
LOG: Mapping[str, Field | Block] = {
    "level": Field("level", LOG_LEVEL),
    "output_path": Field("output_path", PATH),
    "max_size": Field("max_size_mb", _integer(1)),
    "max_backups": Field("max_backups", _integer(0)),
    "max_age": Field("max_age_days", _integer(0)),
    "compress": Field("compress", BOOLEAN),
}
METRICS: Mapping[str, Field | Block] = {
    "retention_days": Field("retention_days", _integer(1)),
    "cleanup_schedule": Field("cleanup_schedule", SCHEDULE),
}
NODE: Mapping[str, Field | Block] = {
    "offline_duration_minutes": Field("offline_duration_minutes", Kind(_positive_number)),
    "offline_check_schedule": Field("offline_check_schedule", SCHEDULE),
}
AUTH: Mapping[str, Field | Block] = {"allow_register": Field("allow_register", BOOLEAN)}
ALERTS: Mapping[str, Field | Block] = {
    "cpu_percent": Field("cpu_percent", Kind(_percent)),
    "memory_percent": Field("memory_percent", Kind(_percent)),
    "disk_percent": Field("disk_percent", Kind(_percent)),
}
DAEMON_CLIENT_TLS: Mapping[str, Field | Block] = CLIENT_TLS
DAEMON_CLIENT: Mapping[str, Field | Block] = {
    "port": Field("port", Kind(_remote_port)),
    "max_channels": Field("max_channels", _integer(1)),
    "timeout": Field("timeout_s", POSITIVE_DURATION),
    "operate_timeout": Field("operate_timeout_s", POSITIVE_DURATION),
    "tls": Block("tls", DAEMON_CLIENT_TLS),
}
TOP: Mapping[str, Field | Block] = {
    "data_dir": Field("data_dir", PATH),
    "server": Block("server", SERVER),
    "grpc": Block("grpc", GRPC),
    "database": Block("database", DATABASE),
    "jwt": Block("jwt", JWT),
    "log": Block("log", LOG),
    "metrics": Block("metrics", METRICS),
    "node": Block("node", NODE),
    "auth": Block("auth", AUTH),
    "daemon_client": Block("daemon_client", DAEMON_CLIENT),
    "alerts": Block("alerts", ALERTS),
}
"""The whole file's table (``redis`` is handled apart: accepted and ignored)."""

# --------------------------------------------------------------------------- specs


def _address(host: str, port: int) -> str:
    try:
        return f"[{host}]:{port}" if ipaddress.ip_address(host).version == 6 else f"{host}:{port}"
    except ValueError:
        return f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """``server``: the HTTP listener (REST API, ``/health``, ``/metrics``).

    Attributes:
        host: Where it listens.
        port: Its port (0: any free port).
        mode: The original's gin mode (release, debug, test); debug logs at debug level.
        read_timeout_s: Accepted for the original's files; the HTTP server keeps its own
            timeouts (hypercorn's).
        write_timeout_s: Likewise.
    """

    host: str = "0.0.0.0"
    port: int = 8080
    mode: str = "release"
    read_timeout_s: float = 30.0
    write_timeout_s: float = 30.0

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 hosts in brackets)."""
        return _address(self.host, self.port)


@dataclass(frozen=True, slots=True)
class GrpcTls:
    """``grpc.tls``: the gRPC server's certificate, and its clients' CA.

    Attributes:
        enabled: Serve TLS (needs cert_file and key_file).
        cert_file: The server's certificate chain (PEM).
        key_file: Its private key (PEM).
        ca_file: When set, daemons must present a client certificate signed by it.
        bind_node_identity: A client certificate is valid only for the node id it names
            (in its subject alternative names or common name).
    """

    enabled: bool = False
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    bind_node_identity: bool = False


@dataclass(frozen=True, slots=True)
class GrpcSpec:
    """``grpc``: the server daemons report to (``ManagerService``, ``SyncAgentStates``).

    Attributes:
        host: Where it listens.
        port: Its port (0: any free port).
        tls: TLS settings.
        workers: Ours: how many processes serve it. 1: the Manager's own process; more:
            that many ingest worker processes sharing the port (``SO_REUSEPORT``), each
            with its own writer and database connections (:mod:`._workers`).
    """

    host: str = "0.0.0.0"
    port: int = 9090
    tls: GrpcTls = field(default_factory=GrpcTls)
    workers: int = 1

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 hosts in brackets)."""
        return _address(self.host, self.port)


@dataclass(frozen=True, slots=True)
class DatabaseSpec:
    """``database``: where the fleet is stored.

    Attributes:
        driver: ``sqlite`` or ``postgres``.
        url: The SQLAlchemy URL (``sqlite:////abs/manager.db``,
            ``postgresql+psycopg://...``), made from ``database.dsn``.
        max_idle_conns: Connections kept open in the pool (at least 1).
        max_open_conns: The most connections open at once.
        conn_max_lifetime_s: Connections older than this are replaced when next used.
        log_level: silent, error, warn or info (info logs every statement).
    """

    driver: str = "sqlite"
    url: str = ""
    max_idle_conns: int = 10
    max_open_conns: int = 100
    conn_max_lifetime_s: float = 3600.0
    log_level: str = "warn"

    @property
    def display_url(self) -> str:
        """The URL with its password hidden, for logs."""
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", self.url)


@dataclass(frozen=True, slots=True)
class JwtSpec:
    """``jwt``: the login tokens.

    Attributes:
        secret: The HS256 key; None: generated once into ``{data_dir}/jwt.secret``.
        expire_time_s: How long a token is valid.
        issuer: The tokens' ``iss`` claim.
    """

    secret: str | None = field(default=None, repr=False)
    expire_time_s: float = 86400.0
    issuer: str = "ops-manager"


@dataclass(frozen=True, slots=True)
class LogSpec:
    """``log``: the Manager's own log (always on stderr, also in a file when set).

    Attributes:
        level: debug, info, warning or error.
        output_path: A log file; None: stderr only.
        max_size_mb: The file is rotated when it reaches this many megabytes.
        max_backups: Rotated files kept.
        max_age_days: Rotated files older than this are deleted (0: kept).
        compress: Rotated files are gzipped.
    """

    level: str = "info"
    output_path: str | None = None
    max_size_mb: int = 100
    max_backups: int = 10
    max_age_days: int = 30
    compress: bool = False


@dataclass(frozen=True, slots=True)
class MetricsSpec:
    """``metrics``: retention.

    Attributes:
        retention_days: Metrics older than this are deleted.
        cleanup_schedule: When (also once at start).
    """

    retention_days: int = 30
    cleanup_schedule: Schedule = field(default_factory=lambda: parse_schedule("0 2 * * *"))


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """``node``: offline detection.

    Attributes:
        offline_duration_minutes: A node whose last heartbeat is older is offline.
        offline_check_schedule: When nodes are checked.
    """

    offline_duration_minutes: float = 3.0
    offline_check_schedule: Schedule = field(default_factory=lambda: parse_schedule("@every 30s"))


@dataclass(frozen=True, slots=True)
class AuthSpec:
    """``auth``: who may get an account.

    Attributes:
        allow_register: ``POST /auth/register`` creates viewers (else it is refused).
    """

    allow_register: bool = False


AlertsSpec = Thresholds
"""``alerts``: the console dashboard's thresholds (``cpu_percent``, ``memory_percent``,
``disk_percent``, each > 0 and <= 100, default 90): a reading warns from its threshold and
is critical from ``max(threshold + 5, 95)`` (at most 100); see
:mod:`transport.manager._alerts`."""

DaemonClientTls = ManagerTls
"""``daemon_client.tls``: how the Manager connects to daemons (TLS when any file is set):
``cert_file`` and ``key_file`` (the Manager's client certificate), ``ca_file`` (the CA of the
daemons' certificates; None: the system's), ``server_name`` (the name to verify in the
daemons' certificates: they are dialled by IP address). The same record as a daemon's
``manager.tls``, its client side of the same kind of connection."""


@dataclass(frozen=True, slots=True)
class DaemonClientSpec:
    """``daemon_client``: the pool of connections to the nodes' daemons.

    Attributes:
        port: The daemons' gRPC port when a node announced none.
        max_channels: The most connections open at once (least recently used closed).
        timeout_s: The deadline of each call.
        operate_timeout_s: The deadline of OperateAgent (longer than a graceful stop).
        tls: TLS settings.
    """

    port: int = 9091
    max_channels: int = 256
    timeout_s: float = 30.0
    operate_timeout_s: float = 90.0
    tls: DaemonClientTls = field(default_factory=DaemonClientTls)


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    """A whole validated ``manager.yaml``.

    Attributes:
        data_dir: The SQLite database's and the generated JWT secret's directory.
        server: The HTTP listener.
        grpc: The gRPC listener.
        database: The store.
        jwt: Login tokens.
        log: The Manager's log.
        metrics: Retention.
        node: Offline detection.
        auth: Registration.
        daemon_client: Connections to daemons.
        alerts: The console dashboard's alert thresholds.
        warnings: Non-fatal remarks (ignored sections, plaintext gRPC, ...).
        source: The file it was loaded from, if any.
    """

    data_dir: str
    server: ServerSpec = field(default_factory=ServerSpec)
    grpc: GrpcSpec = field(default_factory=GrpcSpec)
    database: DatabaseSpec = field(default_factory=DatabaseSpec)
    jwt: JwtSpec = field(default_factory=JwtSpec)
    log: LogSpec = field(default_factory=LogSpec)
    metrics: MetricsSpec = field(default_factory=MetricsSpec)
    node: NodeSpec = field(default_factory=NodeSpec)
    auth: AuthSpec = field(default_factory=AuthSpec)
    daemon_client: DaemonClientSpec = field(default_factory=DaemonClientSpec)
    alerts: AlertsSpec = field(default_factory=AlertsSpec)
    warnings: tuple[str, ...] = field(default=(), compare=False)
    source: str | None = field(default=None, compare=False)

    @property
    def jwt_secret_path(self) -> str:
        """Where a generated JWT secret is kept."""
        return os.path.join(self.data_dir, JWT_SECRET_FILE)
