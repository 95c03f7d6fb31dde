"""Loading and validating ``manager.yaml``: document in, :class:`ManagerConfig` out.

The file keeps the original Manager's keys and defaults, so that its users keep their
file, and adds ours beside them::

    data_dir: ./data                   # ours: the SQLite database and jwt.secret live here
    server: {host: 0.0.0.0, port: 8080, mode: release, read_timeout: 30s, write_timeout: 30s}
    grpc:
      host: 0.0.0.0
      port: 9090
      workers: 1                       # ours: ingest processes sharing the port (1-64)
      tls: {enabled: false, cert_file: ..., key_file: ..., ca_file: ...,
            bind_node_identity: false}   # ours: a client certificate names its node
    database: {driver: sqlite, dsn: ..., max_idle_conns: 10, max_open_conns: 100,
               conn_max_lifetime: 1h, log_level: warn}
    jwt: {secret: ..., expire_time: 24h, issuer: ops-manager}
    log: {level: info, output_path: ..., max_size: 100, max_backups: 10, max_age: 30,
          compress: false}
    metrics: {retention_days: 30, cleanup_schedule: "0 2 * * *"}
    node: {offline_duration_minutes: 3, offline_check_schedule: "@every 30s"}
    auth: {allow_register: false}     # ours
    alerts: {cpu_percent: 90, memory_percent: 90, disk_percent: 90}   # ours: the console's
    daemon_client: {port: 9091, max_channels: 256, timeout: 30s, operate_timeout: 90s,
                    tls: {cert_file: ..., key_file: ..., ca_file: ..., server_name: ...}}
    redis: ...                         # accepted and ignored, with a warning

Three layers, as the daemon's configuration (:mod:`transport.daemon._config`), whose
schema tools (:mod:`supervisor.schema`) and YAML loader this module reuses:

* :func:`parse_config` validates a document (a mapping) and builds the configuration.
  It is pure apart from resolving relative paths against a base directory and reading
  ``$HOSTVISOR_MANAGER_DATA``. Every problem is reported at once, each with its path
  (``grpc.port: must be 0-65535 ...``), unknown keys with a suggestion.
* :func:`check_files` looks at this machine: TLS files are readable PEM files of the right
  kind, the data directory and the log file can be created, an existing ``jwt.secret``
  file is private.
* :func:`load_config` reads a YAML file and runs both. An empty file, or none at all
  (:func:`default_config`), means every default: SQLite in ``./data``, gRPC on 9090,
  HTTP on 8080.

:func:`jwt_secret`, :func:`server_tls` and :func:`client_tls` read the secrets and
certificates at start-up. :func:`dump_config` is the inverse of :func:`parse_config`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from supervisor import ConfigError, format_duration
from supervisor.schema import (
    Block,
    Field,
    Invalid,
    Issues,
    creatable_dir,
    read_block,
    show,
    write_block,
)
from transport.daemon._config import _load_yaml
from transport.daemon._manager_config import read_pem

from ._config_spec import (
    ALERTS,
    AUTH,
    DAEMON_CLIENT,
    DAEMON_CLIENT_TLS,
    DATABASE,
    GRPC,
    GRPC_TLS,
    JWT,
    LOG,
    METRICS,
    NODE,
    SERVER,
    TOP,
    AlertsSpec,
    AuthSpec,
    DaemonClientSpec,
    DaemonClientTls,
    DatabaseSpec,
    GrpcSpec,
    GrpcTls,
    JwtSpec,
    LogSpec,
    ManagerConfig,
    MetricsSpec,
    NodeSpec,
    ServerSpec,
)
from ._errors import ManagerConfigError

if TYPE_CHECKING:
    from transport import ClientTls, ServerTls

__all__ = [  # and the records of ._config_spec, which it re-exports
    "DATA_DIR_ENV",
    "ManagerConfig",
    "check_files",
    "client_tls",
    "default_config",
    "dump_config",
    "jwt_secret",
    "load_config",
    "parse_config",
    "server_tls",
]

DATA_DIR_ENV = "HOSTVISOR_MANAGER_DATA"
"""The environment variable that gives ``data_dir`` its default (else ``./data``)."""
MIN_SECRET_BYTES = 32
"""HS256 keys shorter than this are weak (RFC 7518 section 3.2)."""

# --------------------------------------------------------------------------- parsing


def _attrs(layer: Mapping[str, Any], fields: Mapping[str, Field | Block]) -> dict[str, Any]:
    return {fields[key].attr: value for key, value in layer.items() if value is not None}


def parse_config(
    document: object, *, source: str | None = None, base_dir: str | None = None
) -> ManagerConfig:
    """Validate a configuration document and build the :class:`ManagerConfig` it describes.

    Args:
        document: The parsed file: a mapping (None or empty: every default). A null value
            anywhere means "not set".
        source: Where the document came from, named in errors and kept in ``source``.
        base_dir: The directory relative paths are resolved against (default: the
            current directory). ``data_dir`` defaults to ``$HOSTVISOR_MANAGER_DATA`` or
            ``./data``, resolved against the current directory.

    Returns:
        The configuration, defaults applied, paths absolute, ``database.url`` made.

    Raises:
        ManagerConfigError: Every problem, each with its path in the document.
    """
    issues = Issues()
    base = os.path.abspath(base_dir if base_dir is not None else os.getcwd())
    warnings: list[str] = []
    if document is None:
        document = {}
    if not isinstance(document, Mapping):
        raise ManagerConfigError([("", f"expected a mapping, got {show(document)}")], source=source)
    raw = dict(document)
    if "redis" in raw:
        del raw["redis"]
        warnings.append("redis: ignored (the Manager does not use Redis; nor did the original)")
    layer = read_block(raw, "", TOP, base, issues)
    default_dir = os.path.abspath(os.environ.get(DATA_DIR_ENV) or "data")
    top = _attrs(layer, TOP)
    sections: dict[str, Any] = {"data_dir": top.get("data_dir") or default_dir}
    nested = {
        "grpc": ("tls", GRPC_TLS, GrpcTls),
        "daemon_client": ("tls", DAEMON_CLIENT_TLS, DaemonClientTls),
    }
    specs = (
        ("server", SERVER, ServerSpec),
        ("grpc", GRPC, GrpcSpec),
        ("database", DATABASE, DatabaseSpec),
        ("jwt", JWT, JwtSpec),
        ("log", LOG, LogSpec),
        ("metrics", METRICS, MetricsSpec),
        ("node", NODE, NodeSpec),
        ("auth", AUTH, AuthSpec),
        ("daemon_client", DAEMON_CLIENT, DaemonClientSpec),
        ("alerts", ALERTS, AlertsSpec),
    )
    for name, table, cls in specs:
        attrs = _attrs(layer.get(name, {}), table)
        if name in nested:
            key, inner, inner_cls = nested[name]
            attrs[key] = inner_cls(**_attrs(attrs.get(key, {}), inner))
        sections[name] = cls(**attrs)
    config = ManagerConfig(**sections, source=source)
    database = _database(config, layer.get("database", {}), base, issues, warnings)
    config = replace(config, database=database)
    _check_rules(config, issues, warnings)
    if issues.items:
        raise ManagerConfigError([(i.path, i.message) for i in issues.items], source=source)
    return replace(config, warnings=tuple(warnings))


def _database(
    config: ManagerConfig, layer: Mapping[str, Any], base: str, issues: Issues, warnings: list[str]
) -> DatabaseSpec:
    spec = config.database
    dsn = spec.url.strip()
    driver = spec.driver
    if "driver" not in layer and _is_postgres(dsn):
        driver = "postgres"  # a PostgreSQL URL says what it is
    if issues.has("database.driver") or issues.has("database.dsn"):
        return spec
    try:
        url = _sqlite_url(dsn, base, config.data_dir) if driver == "sqlite" else _postgres_url(dsn)
    except Invalid as exc:
        issues.add("database.dsn", str(exc))
        return spec
    if spec.max_idle_conns > spec.max_open_conns:
        issues.add(
            "database.max_idle_conns",
            f"must not exceed database.max_open_conns ({spec.max_open_conns}),"
            f" got {spec.max_idle_conns}",
        )
    if driver == "postgres" and config.jwt.secret is None:
        warnings.append(
            "jwt.secret is not set: it is generated in data_dir; Managers sharing this"
            " database must share one jwt.secret, or their logins are valid on one only"
        )
    return replace(spec, driver=driver, url=url)


def _is_postgres(dsn: str) -> bool:
    return dsn.startswith(("postgres://", "postgresql://", "postgresql+")) or bool(
        re.match(r"\s*(host|dbname|user)\s*=", dsn)
    )


def _sqlite_url(dsn: str, base: str, data_dir: str) -> str:
    if not dsn:
        return "sqlite:///" + os.path.join(data_dir, "manager.db")
    if _is_postgres(dsn):
        raise Invalid("a PostgreSQL DSN with database.driver sqlite: set driver: postgres")
    path, query = dsn, ""
    if dsn.startswith("sqlite"):
        match = re.fullmatch(r"sqlite(?:\+pysqlite)?://(/[^?]*)?(\?.*)?", dsn)
        if match is None or not match.group(1) or match.group(1) == "/:memory:":
            raise Invalid(
                "expected sqlite:///path/to/manager.db or a file path (an in-memory"
                f" database loses everything at exit), got {show(dsn)}"
            )
        path, query = match.group(1)[1:], match.group(2) or ""
    elif dsn == ":memory:" or dsn.startswith("file:") or "@tcp(" in dsn:
        raise Invalid(f"expected a file path or sqlite:///path/to/manager.db, got {show(dsn)}")
    return "sqlite:///" + os.path.normpath(os.path.join(base, path)) + query


_KEYWORD = re.compile(r"\s*(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']*)")


def _postgres_url(dsn: str) -> str:
    if not dsn:
        raise Invalid("required with database.driver postgres: postgresql://user:pass@host/db")
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn.removeprefix(prefix)
    if dsn.startswith(("postgresql+", "sqlite")) or "://" in dsn:
        raise Invalid(f"expected postgresql://user:password@host:5432/dbname, got {show(dsn)}")
    pairs: dict[str, str] = {}
    position = 0
    while position < len(dsn.rstrip()):
        match = _KEYWORD.match(dsn, position)
        if match is None:
            raise Invalid(
                "expected postgresql://user:password@host:5432/dbname or"
                f" 'host=... dbname=...', got {show(dsn)}"
            )
        value = match.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        pairs[match.group(1)] = value
        position = match.end()
    user = quote(pairs.pop("user", ""), safe="")
    password = pairs.pop("password", None)
    auth = (
        f"{user}:{quote(password, safe='')}@"
        if password is not None
        else (f"{user}@" if user else "")
    )
    host = pairs.pop("host", "") if not pairs.get("host", "").startswith("/") else ""
    port = pairs.pop("port", "") if host else ""
    netloc = auth + (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    database = quote(pairs.pop("dbname", ""), safe="")
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs.items())
    return f"postgresql+psycopg://{netloc}/{database}" + (f"?{query}" if query else "")


def _check_rules(config: ManagerConfig, issues: Issues, warnings: list[str]) -> None:
    """The rules between keys: TLS needs its files; identity binding needs client certs."""
    tls = config.grpc.tls
    files = [key for key in ("cert_file", "key_file", "ca_file") if getattr(tls, key)]
    if tls.enabled:
        for key in ("cert_file", "key_file"):
            if getattr(tls, key) is None and not issues.has(f"grpc.tls.{key}"):
                issues.add(f"grpc.tls.{key}", "required when grpc.tls.enabled is true")
    elif files:
        warnings.append(
            f"grpc.tls.enabled is false: grpc.tls.{files[0]} is not used (gRPC is plaintext)"
        )
    if tls.bind_node_identity and not (tls.enabled and tls.ca_file):
        issues.add(
            "grpc.tls.bind_node_identity",
            "needs grpc.tls.enabled and grpc.tls.ca_file: only client certificates name a node",
        )
    if not tls.enabled and not _loopback(config.grpc.host):
        warnings.append(
            f"gRPC on {config.grpc.address} without TLS: any host that reaches it can register"
            " nodes and report for them (set grpc.tls)"
        )
    client = config.daemon_client.tls
    if (client.cert_file is None) != (client.key_file is None):
        given, missing = (
            ("cert_file", "key_file") if client.key_file is None else ("key_file", "cert_file")
        )
        issues.add(
            f"daemon_client.tls.{missing}",
            f"required with daemon_client.tls.{given}: a client certificate needs its key",
        )
    if client.server_name is not None and not client.enabled:
        issues.add("daemon_client.tls.server_name", "set without any TLS file: TLS is not used")
    secret = config.jwt.secret
    if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
        warnings.append(
            f"jwt.secret is shorter than {MIN_SECRET_BYTES} bytes: tokens signed with it can be"
            " forged by guessing it (leave it unset to have one generated)"
        )


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- files


_PEM = {"cert_file": "CERTIFICATE", "key_file": "PRIVATE KEY", "ca_file": "CERTIFICATE"}


def check_files(config: ManagerConfig) -> list[tuple[str, str]]:
    """Check what :func:`parse_config` cannot: the files and directories on this machine.

    TLS files in use are readable PEM files of the right kind; ``data_dir`` (for SQLite
    and a generated JWT secret) and the directory of ``log.output_path`` exist or can be
    created; an existing ``{data_dir}/jwt.secret`` is private. Nothing is created.

    Args:
        config: A validated configuration.

    Returns:
        The problems as ``(path, message)``; empty if none.
    """
    problems: list[tuple[str, str]] = []
    if config.grpc.tls.enabled:
        problems += _read_pems("grpc.tls", config.grpc.tls)[1]
    problems += _read_pems("daemon_client.tls", config.daemon_client.tls)[1]
    needs_dir = config.database.driver == "sqlite" or config.jwt.secret is None
    data_dir = creatable_dir(config.data_dir) if needs_dir else None
    if data_dir is not None:
        problems.append(("data_dir", data_dir))
    if config.log.output_path is not None:
        problem = creatable_dir(os.path.dirname(config.log.output_path) or ".")
        if problem is not None:
            problems.append(("log.output_path", problem))
    if config.jwt.secret is None and data_dir is None:
        try:
            _read_secret(config.jwt_secret_path)
        except ManagerConfigError as exc:
            problems.extend(exc.issues)
    return problems


def default_config() -> ManagerConfig:
    """The configuration without a file: every default (``data_dir`` from the environment)."""
    return parse_config({})


def load_config(path: str | os.PathLike[str]) -> ManagerConfig:
    """Read, validate and check a configuration file.

    Args:
        path: A YAML file (whatever its name ends with, as the original read it).
            Relative paths in it are resolved against its directory. An empty file, or
            one of comments only, means every default.

    Returns:
        The validated configuration; ``source`` is ``path``.

    Raises:
        ManagerConfigError: The file cannot be read, is not YAML, is invalid, or
            :func:`check_files` found problems; all of them together.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ManagerConfigError(
            [("", f"cannot read the file: {exc.strerror or exc}")], source=source
        ) from exc
    document: object = {}
    if not _only_comments(data):
        try:
            document = _load_yaml(data, source)
        except ConfigError as exc:
            raise ManagerConfigError(
                [(i.path, i.message) for i in exc.issues], source=source
            ) from None
    config = parse_config(
        document, source=source, base_dir=os.path.dirname(os.path.abspath(source))
    )
    problems = check_files(config)
    if problems:
        raise ManagerConfigError(problems, source=source)
    return config


def _only_comments(data: bytes) -> bool:
    """Whether a YAML file holds no document (blank lines, comments, ``---``, ``...``)."""
    return all(
        not line.strip() or line.lstrip().startswith(b"#") or line.strip() in (b"---", b"...")
        for line in data.splitlines()
    )


def dump_config(config: ManagerConfig) -> dict[str, Any]:
    """Write a configuration back as a plain document (for ``yaml.safe_dump``).

    Args:
        config: The configuration.

    Returns:
        A document from which :func:`parse_config` builds an equal configuration
        (durations as ``"1h30m"``, schedules as written, ``database.dsn`` the URL made).
    """
    document = write_block(config, TOP)
    for section in document.values():
        if isinstance(section, dict):
            for key in [k for k, v in section.items() if v == {}]:
                del section[key]
    return document


# --------------------------------------------------------------------------- secrets, TLS


def _read_secret(path: str) -> str | None:
    """The secret in ``path``; None if there is no such file.

    Raises:
        ManagerConfigError: The file may be read by others, or cannot be read, or is empty.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ManagerConfigError(
            [("jwt.secret", f"cannot read {path!r}: {exc.strerror or exc}")]
        ) from exc
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(file.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise ManagerConfigError([("jwt.secret", f"{path!r} is not a regular file")])
        if mode & 0o077:
            raise ManagerConfigError(
                [
                    (
                        "jwt.secret",
                        f"{path!r} may be read by others (mode {stat.S_IMODE(mode):04o}):"
                        f" run chmod 600 {path}, or set jwt.secret",
                    )
                ]
            )
        secret = file.read().decode("utf-8", "replace").strip()
    if not secret:
        raise ManagerConfigError(
            [("jwt.secret", f"{path!r} is empty: delete it to have one generated")]
        )
    return secret


def jwt_secret(config: ManagerConfig) -> str:
    """The JWT signing key: ``jwt.secret``, else ``{data_dir}/jwt.secret``, made once.

    A new secret is 48 random bytes (64 URL-safe characters), written with mode 0600 under
    a temporary name and linked into place, so that two Managers starting together on
    one data directory end up with the same secret.

    Args:
        config: The configuration.

    Returns:
        The key.

    Raises:
        ManagerConfigError: The file may be read by others (mode wider than 0600), is
            empty, or cannot be read or written.
    """
    if config.jwt.secret is not None:
        return config.jwt.secret
    path = config.jwt_secret_path
    secret = _read_secret(path)
    if secret is not None:
        return secret
    temporary = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        os.makedirs(config.data_dir, mode=0o700, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(secrets.token_urlsafe(48).encode() + b"\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)  # fails if another Manager made it first: use theirs
        except FileExistsError:
            pass
    except OSError as exc:
        raise ManagerConfigError(
            [("jwt.secret", f"cannot write {path!r}: {exc.strerror or exc}")]
        ) from exc
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)
    found = _read_secret(path)
    assert found is not None
    return found


def _read_pems(where: str, block: object) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
    """The TLS files of ``block`` that are set, and the problems of those that are bad."""
    found: dict[str, bytes] = {}
    problems: list[tuple[str, str]] = []
    for key, label in _PEM.items():
        path = getattr(block, key)
        if path is not None:
            data, problem = read_pem(path, label)
            if problem is not None:
                problems.append((f"{where}.{key}", problem))
            elif data is not None:
                found[key] = data
    return found, problems


def _pem_files(where: str, block: object) -> dict[str, bytes]:
    found, problems = _read_pems(where, block)
    if problems:
        raise ManagerConfigError(problems)
    return found


def server_tls(config: ManagerConfig) -> ServerTls | None:
    """The gRPC server's TLS, read from ``grpc.tls`` (None: plaintext).

    Raises:
        ManagerConfigError: A file is missing or not PEM (never plaintext instead).
    """
    if not config.grpc.tls.enabled:
        return None
    from transport import ServerTls

    found = _pem_files("grpc.tls", config.grpc.tls)
    return ServerTls(found["cert_file"], found["key_file"], client_ca=found.get("ca_file"))


def client_tls(config: ManagerConfig) -> ClientTls | None:
    """The daemon clients' TLS, read from ``daemon_client.tls`` (None: plaintext).

    Raises:
        ManagerConfigError: A file is missing or not PEM (never plaintext instead).
    """
    tls = config.daemon_client.tls
    if not tls.enabled:
        return None
    from transport import ClientTls

    found = _pem_files("daemon_client.tls", tls)
    return ClientTls(
        server_ca=found.get("ca_file"),
        cert_chain=found.get("cert_file"),
        private_key=found.get("key_file"),
        server_name=tls.server_name,
    )


def describe_durations(config: ManagerConfig) -> str:
    """A one-line summary of the timing settings, for the start-up log."""
    return (
        f"offline after {format_duration(config.node.offline_duration_minutes * 60)}"
        f" (checked {config.node.offline_check_schedule}), metrics kept"
        f" {config.metrics.retention_days} d (purged {config.metrics.cleanup_schedule})"
    )
