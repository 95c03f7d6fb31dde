"""manager.yaml: every key, its default, and path-precise errors (transport.manager._config)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from transport.manager import ManagerConfigError
from transport.manager._config import (
    DATA_DIR_ENV,
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
    parse_config,
)
from transport.manager._jobs import parse_schedule

# The original Manager's production example, as it ships (configs/manager.yaml), with
# the MySQL DSN our Manager refuses.
ORIGINAL: dict[str, Any] = {
    "server": {
        "host": "0.0.0.0",
        "port": 8080,
        "mode": "release",
        "read_timeout": "30s",
        "write_timeout": "30s",
    },
    "database": {
        "driver": "mysql",
        "dsn": "root:password@tcp(localhost:3306)/ops_manager?charset=utf8mb4",
        "max_idle_conns": 10,
        "max_open_conns": 100,
        "conn_max_lifetime": "1h",
        "log_level": "warn",
    },
    "redis": {"host": "localhost", "port": 6379, "password": "", "db": 0, "pool_size": 10},
    "grpc": {
        "host": "0.0.0.0",
        "port": 9090,
        "tls": {
            "enabled": True,
            "cert_file": "/etc/manager/certs/server.crt",
            "key_file": "/etc/manager/certs/server.key",
            "ca_file": "/etc/manager/certs/ca.crt",
        },
    },
    "jwt": {"secret": "your-secret-key-change-this-in-production", "expire_time": "24h"},
    "log": {
        "level": "info",
        "output_path": "/var/log/manager/manager.log",
        "max_size": 100,
        "max_backups": 10,
        "max_age": 30,
        "compress": True,
    },
    "metrics": {"retention_days": 30, "cleanup_schedule": "0 2 * * *"},
    "node": {"offline_duration_minutes": 3, "offline_check_schedule": "*/1 * * * *"},
}


def issues(document: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(ManagerConfigError) as caught:
        parse_config(document, **kwargs)
    return [f"{path}: {message}" for path, message in caught.value.issues]


def only(document: Any, **kwargs: Any) -> str:
    (issue,) = issues(document, **kwargs)
    return issue


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


# --------------------------------------------------------------------------- defaults


def test_no_document_is_every_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = parse_config(None)
    data = str(tmp_path / "data")
    assert config == ManagerConfig(
        data_dir=data,
        server=ServerSpec("0.0.0.0", 8080, "release", 30.0, 30.0),
        grpc=GrpcSpec("0.0.0.0", 9090, GrpcTls(False, None, None, None, False)),
        database=DatabaseSpec("sqlite", f"sqlite:///{data}/manager.db", 10, 100, 3600.0, "warn"),
        jwt=JwtSpec(None, 86400.0, "ops-manager"),
        log=LogSpec("info", None, 100, 10, 30, False),
        metrics=MetricsSpec(30, parse_schedule("0 2 * * *")),
        node=NodeSpec(3.0, parse_schedule("@every 30s")),
        auth=AuthSpec(allow_register=False),
        daemon_client=DaemonClientSpec(9091, 256, 30.0, 90.0, DaemonClientTls()),
        alerts=AlertsSpec(90.0, 90.0, 90.0),
    )
    assert config == parse_config({})
    assert config.jwt_secret_path == f"{data}/jwt.secret"
    assert config.grpc.address == "0.0.0.0:9090"
    assert config.server.address == "0.0.0.0:8080"
    # Plaintext gRPC on every interface is allowed, and said.
    assert config.warnings == (
        "gRPC on 0.0.0.0:9090 without TLS: any host that reaches it can register nodes and"
        " report for them (set grpc.tls)",
    )


def test_data_dir_defaults_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "state"))
    config = parse_config({})
    assert config.data_dir == str(tmp_path / "state")
    assert config.database.url == f"sqlite:///{tmp_path}/state/manager.db"
    # The file's key wins, resolved against the file's directory.
    assert parse_config({"data_dir": "var"}, base_dir="/etc/hv").data_dir == "/etc/hv/var"


# --------------------------------------------------------------------------- every key


def test_the_original_example_fails_only_on_mysql() -> None:
    assert only(ORIGINAL) == (
        "database.driver: mysql is not supported: use sqlite (embedded, the default) or postgres"
    )


def test_every_original_key_is_read() -> None:
    document = {**ORIGINAL, "database": {**ORIGINAL["database"], "driver": "sqlite", "dsn": ""}}
    config = parse_config(document, base_dir="/srv")
    assert config.server == ServerSpec("0.0.0.0", 8080, "release", 30.0, 30.0)
    assert config.grpc == GrpcSpec(
        "0.0.0.0",
        9090,
        GrpcTls(
            True,
            "/etc/manager/certs/server.crt",
            "/etc/manager/certs/server.key",
            "/etc/manager/certs/ca.crt",
        ),
    )
    assert config.database.max_idle_conns == 10
    assert config.database.max_open_conns == 100
    assert config.database.conn_max_lifetime_s == 3600.0
    assert config.jwt == JwtSpec("your-secret-key-change-this-in-production", 86400.0)
    assert config.log == LogSpec("info", "/var/log/manager/manager.log", 100, 10, 30, True)
    assert config.metrics == MetricsSpec(30, parse_schedule("0 2 * * *"))
    assert config.node == NodeSpec(3.0, parse_schedule("*/1 * * * *"))
    assert config.warnings == (
        "redis: ignored (the Manager does not use Redis; nor did the original)",
    )


def test_the_original_development_file_runs_on_sqlite(tmp_path: Path) -> None:
    document = {
        "server": {"host": "127.0.0.1", "port": 8080, "mode": "debug", "read_timeout": "30s"},
        "database": {
            "driver": "sqlite",
            "max_idle_conns": 5,
            "max_open_conns": 20,
            "conn_max_lifetime": "30m",
            "log_level": "info",
        },
        "redis": {"host": "127.0.0.1"},
        "grpc": {
            "host": "0.0.0.0",
            "port": 9090,
            "tls": {"enabled": False, "cert_file": "", "key_file": "", "ca_file": ""},
        },
        "jwt": {"secret": "dev-secret-key-do-not-use-in-production", "issuer": "ops-manager-dev"},
        "log": {"level": "debug", "output_path": "./logs/manager.log", "max_size": 50},
        "metrics": {"retention_days": 7, "cleanup_schedule": "0 2 * * *"},
    }
    config = parse_config(document, base_dir=str(tmp_path))
    assert config.server.mode == "debug"
    assert config.database == DatabaseSpec("sqlite", config.database.url, 5, 20, 1800.0, "info")
    assert config.grpc.tls == GrpcTls()  # empty paths are "not set"
    assert config.jwt.issuer == "ops-manager-dev"
    assert config.log.output_path == str(tmp_path / "logs" / "manager.log")
    assert config.metrics.retention_days == 7


def test_our_keys() -> None:
    config = parse_config(
        {
            "grpc": {
                "tls": {
                    "enabled": True,
                    "cert_file": "s.pem",
                    "key_file": "s.key",
                    "ca_file": "ca.pem",
                    "bind_node_identity": True,
                }
            },
            "auth": {"allow_register": True},
            "daemon_client": {
                "port": 19091,
                "max_channels": 8,
                "timeout": "5s",
                "operate_timeout": "2m",
                "tls": {
                    "cert_file": "c.pem",
                    "key_file": "c.key",
                    "ca_file": "ca.pem",
                    "server_name": "daemon.internal",
                },
            },
        },
        base_dir="/pki",
    )
    assert config.grpc.tls == GrpcTls(True, "/pki/s.pem", "/pki/s.key", "/pki/ca.pem", True)
    assert config.auth.allow_register
    assert config.daemon_client == DaemonClientSpec(
        19091,
        8,
        5.0,
        120.0,
        DaemonClientTls("/pki/c.pem", "/pki/c.key", "/pki/ca.pem", "daemon.internal"),
    )
    assert config.daemon_client.tls.enabled
    assert config.warnings == ()  # TLS on: no plaintext warning


def test_null_means_not_set() -> None:
    config = parse_config(
        {"server": None, "grpc": {"port": None, "tls": None}, "jwt": {"secret": None}}
    )
    assert config.server == ServerSpec()
    assert config.grpc.port == 9090
    assert config.jwt.secret is None


def test_ipv6_hosts_are_bracketed_in_addresses() -> None:
    config = parse_config({"grpc": {"host": "::1"}, "server": {"host": "[::]", "port": 0}})
    assert config.grpc.address == "[::1]:9090"
    assert config.server.address == "[::]:0"


# --------------------------------------------------------------------------- databases


@pytest.mark.parametrize(
    ("dsn", "url"),
    [
        ("", "sqlite:////etc/hv/data/manager.db"),
        ("fleet.db", "sqlite:////etc/hv/fleet.db"),
        ("/var/lib/hv/fleet.db", "sqlite:////var/lib/hv/fleet.db"),
        ("sqlite:///fleet.db", "sqlite:////etc/hv/fleet.db"),
        ("sqlite:////var/lib/hv/fleet.db", "sqlite:////var/lib/hv/fleet.db"),
        ("sqlite:////var/x.db?timeout=5", "sqlite:////var/x.db?timeout=5"),
    ],
)
def test_sqlite_dsn(dsn: str, url: str) -> None:
    document = {"data_dir": "data", "database": {"dsn": dsn}}
    assert parse_config(document, base_dir="/etc/hv").database.url == url


@pytest.mark.parametrize(
    ("dsn", "url"),
    [
        ("postgresql://hv:pw@db:5432/fleet", "postgresql+psycopg://hv:pw@db:5432/fleet"),
        (
            "postgres://hv@db/fleet?sslmode=require",
            "postgresql+psycopg://hv@db/fleet?sslmode=require",
        ),
        ("postgresql+psycopg://hv@db/fleet", "postgresql+psycopg://hv@db/fleet"),
        (
            "host=db port=5433 user=hv password='p w\\'x' dbname=fleet sslmode=require",
            "postgresql+psycopg://hv:p%20w%27x@db:5433/fleet?sslmode=require",
        ),
        (
            "host=/run/postgresql dbname=fleet",
            "postgresql+psycopg:///fleet?host=%2Frun%2Fpostgresql",
        ),
    ],
)
def test_postgres_dsn(dsn: str, url: str) -> None:
    config = parse_config({"database": {"driver": "postgres", "dsn": dsn, "max_idle_conns": 2}})
    assert config.database.driver == "postgres"
    assert config.database.url == url
    assert config.database.max_idle_conns == 2


def test_a_postgres_url_implies_the_driver() -> None:
    config = parse_config({"database": {"dsn": "postgresql://hv@db/fleet"}})
    assert config.database.driver == "postgres"
    assert any("must share one jwt.secret" in warning for warning in config.warnings)


def test_the_password_is_hidden_for_display() -> None:
    spec = parse_config({"database": {"dsn": "postgresql://hv:s3cret@db/fleet"}}).database
    assert spec.display_url == "postgresql+psycopg://hv:***@db/fleet"


@pytest.mark.parametrize(
    ("database", "expected"),
    [
        ({"driver": "mysql"}, "database.driver: mysql is not supported: use sqlite"),
        ({"driver": "oracle"}, "database.driver: must be one of sqlite, postgres, got 'oracle'"),
        ({"driver": "postgres"}, "database.dsn: required with database.driver postgres"),
        ({"driver": "postgres", "dsn": "mysql://x"}, "database.dsn: expected postgresql://"),
        ({"driver": "postgres", "dsn": "root@tcp(h)/db"}, "database.dsn: expected postgresql://"),
        ({"driver": "sqlite", "dsn": "postgresql://h/db"}, "database.dsn: a PostgreSQL DSN"),
        ({"dsn": "sqlite://"}, "database.dsn: expected sqlite:///path"),
        ({"dsn": "sqlite:///:memory:"}, "database.dsn: expected sqlite:///path"),
        ({"dsn": ":memory:"}, "database.dsn: expected a file path"),
        ({"max_idle_conns": 200}, "database.max_idle_conns: must not exceed"),
        ({"max_open_conns": 0}, "database.max_open_conns: must be an integer >= 1, got 0"),
        ({"conn_max_lifetime": "soon"}, "database.conn_max_lifetime: expected a duration"),
        ({"log_level": "loud"}, "database.log_level: must be one of silent, error, warn, info"),
    ],
)
def test_database_errors(database: dict[str, Any], expected: str) -> None:
    assert only({"database": database}).startswith(expected)


# --------------------------------------------------------------------------- errors


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    found = issues(
        {
            "grpc": {"port": 70000, "hots": "x", "tls": {"enabled": "yes"}},
            "server": {"port": -1, "mode": "fast"},
            "jwt": {"expire_time": "0s", "secret": ""},
            "log": {"level": "loud", "max_size": 0},
            "metrics": {"retention_days": 0, "cleanup_schedule": "0 25 * * *"},
            "node": {"offline_duration_minutes": 0},
            "daemon_client": {"port": 0, "tls": {"cert_file": "c.pem"}},
            "databse": {},
        }
    )
    assert found == [
        "grpc.port: must be 0-65535 (0: any free port), got 70000",
        "grpc.hots: unknown key (did you mean 'host'?)",
        "grpc.tls.enabled: expected a boolean; got 'yes'",
        "server.port: must be 0-65535 (0: any free port), got -1",
        "server.mode: must be one of release, debug, test, got 'fast'",
        "jwt.expire_time: must be longer than 0s; got '0s'",
        "jwt.secret: must not be empty, got ''",
        "log.level: expected one of debug, info, warning, error; got 'loud'",
        "log.max_size: must be an integer >= 1, got 0",
        "metrics.retention_days: must be an integer >= 1, got 0",
        "metrics.cleanup_schedule: hour: expected 0-23; got '25'",
        "node.offline_duration_minutes: must be a number > 0, got 0",
        "daemon_client.port: must be 1-65535, got 0",
        "databse: unknown key (did you mean 'database'?)",
        "daemon_client.tls.key_file: required with daemon_client.tls.cert_file: a client"
        " certificate needs its key",
    ]


def test_not_a_mapping() -> None:
    assert only(["server"]) == ": expected a mapping, got ['server']"
    assert only({"server": 8080}) == "server: expected a mapping; got 8080"


def test_tls_rules() -> None:
    assert issues({"grpc": {"tls": {"enabled": True, "ca_file": "ca.pem"}}}) == [
        "grpc.tls.cert_file: required when grpc.tls.enabled is true",
        "grpc.tls.key_file: required when grpc.tls.enabled is true",
    ]
    assert only({"grpc": {"tls": {"bind_node_identity": True}}}).startswith(
        "grpc.tls.bind_node_identity: needs grpc.tls.enabled and grpc.tls.ca_file"
    )
    assert only({"daemon_client": {"tls": {"server_name": "d"}}}) == (
        "daemon_client.tls.server_name: set without any TLS file: TLS is not used"
    )
    config = parse_config({"grpc": {"host": "127.0.0.1", "tls": {"cert_file": "s.pem"}}})
    assert config.warnings == (
        "grpc.tls.enabled is false: grpc.tls.cert_file is not used (gRPC is plaintext)",
    )


def test_a_short_jwt_secret_is_a_warning() -> None:
    config = parse_config({"grpc": {"host": "localhost"}, "jwt": {"secret": "short"}})
    assert config.warnings == (
        "jwt.secret is shorter than 32 bytes: tokens signed with it can be forged by guessing"
        " it (leave it unset to have one generated)",
    )


def test_error_names_its_source(tmp_path: Path) -> None:
    with pytest.raises(ManagerConfigError) as caught:
        parse_config({"grpc": {"port": "x"}}, source="manager.yaml")
    assert str(caught.value) == (
        "manager.yaml: invalid configuration:\n  grpc.port: must be 0-65535 (0: any free port),"
        " got 'x'"
    )
    assert caught.value.source == "manager.yaml"
    assert isinstance(caught.value, ValueError)


def test_relative_paths_resolve_against_the_base_directory() -> None:
    config = parse_config(
        {"log": {"output_path": "logs/m.log"}, "grpc": {"tls": {"ca_file": "../ca.pem"}}},
        base_dir="/etc/hv",
    )
    assert config.log.output_path == "/etc/hv/logs/m.log"
    assert config.grpc.tls.ca_file == "/etc/ca.pem"
    assert os.path.isabs(config.data_dir)


def test_alert_thresholds() -> None:
    """``alerts``: percentages > 0 and <= 100, each error at its path, unknown keys named."""
    config = parse_config({"alerts": {"cpu_percent": 75, "disk_percent": 99.5}})
    assert config.alerts == AlertsSpec(cpu_percent=75.0, memory_percent=90.0, disk_percent=99.5)
    with pytest.raises(ManagerConfigError) as caught:
        parse_config(
            {"alerts": {"cpu_percent": 0, "memory_percent": 100.5, "disk_percent": True, "x": 1}}
        )
    paths = [path for path, _ in caught.value.issues]
    assert paths == [
        "alerts.cpu_percent",
        "alerts.memory_percent",
        "alerts.disk_percent",
        "alerts.x",
    ]
