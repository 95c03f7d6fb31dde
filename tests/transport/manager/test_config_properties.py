"""Properties of manager.yaml's parser: writing a configuration back reads as equal, the
YAML form included, and invalid values are named by their path."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, strategies as st

from supervisor import format_duration
from transport.manager import ManagerConfigError
from transport.manager._config import DATA_DIR_ENV, dump_config, parse_config

DURATIONS = st.integers(1, 30 * 86400).map(format_duration)
PORTS = st.integers(0, 65535)
PATHS = st.sampled_from(["/srv/hv/a.pem", "rel/b.pem", "c.key"])
HOSTS = st.sampled_from(["0.0.0.0", "127.0.0.1", "::", "::1", "manager.example.com"])
SCHEDULES = st.sampled_from(["0 2 * * *", "*/1 * * * *", "@every 30s", "@daily", "15 3 * * 1-5"])


def section(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A section holding any subset of ``fields``."""
    return st.fixed_dictionaries({}, optional=fields)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    idle = draw(st.integers(0, 50))
    tls_on = draw(st.booleans())
    grpc_tls: dict[str, Any] = {"enabled": tls_on}
    if tls_on:
        grpc_tls.update(cert_file="s.pem", key_file="s.key")
        if draw(st.booleans()):
            grpc_tls.update(ca_file="ca.pem", bind_node_identity=draw(st.booleans()))
    client_tls = draw(
        st.sampled_from(
            [
                {},
                {"ca_file": "ca.pem"},
                {"cert_file": "c.pem", "key_file": "c.key", "server_name": "daemon"},
            ]
        )
    )
    database = draw(
        st.sampled_from(
            [
                {"driver": "sqlite"},
                {"driver": "sqlite", "dsn": "fleet.db"},
                {"dsn": "sqlite:////var/lib/fleet.db"},
                {"driver": "postgres", "dsn": "postgresql://hv:pw@db:5432/fleet"},
                {"driver": "postgresql", "dsn": "host=db dbname=fleet user=hv"},
            ]
        )
    )
    database.update(
        max_idle_conns=idle,
        max_open_conns=draw(st.integers(max(idle, 1), 200)),
        conn_max_lifetime=draw(DURATIONS),
        log_level=draw(st.sampled_from(["silent", "error", "warn", "info"])),
    )
    return {
        "data_dir": draw(st.sampled_from(["data", "/var/lib/hv"])),
        "server": draw(
            section(
                host=HOSTS,
                port=PORTS,
                mode=st.sampled_from(["release", "debug", "test"]),
                read_timeout=DURATIONS,
                write_timeout=DURATIONS,
            )
        ),
        "grpc": {"host": draw(HOSTS), "port": draw(PORTS), "tls": grpc_tls},
        "database": database,
        "jwt": draw(
            section(
                secret=st.text(min_size=1, max_size=40).filter(
                    lambda s: s.strip() and "\0" not in s
                ),
                expire_time=DURATIONS,
                issuer=st.sampled_from(["ops-manager", "hv"]),
            )
        ),
        "log": draw(
            section(
                level=st.sampled_from(["debug", "info", "warning", "error"]),
                output_path=PATHS,
                max_size=st.integers(1, 1000),
                max_backups=st.integers(0, 100),
                max_age=st.integers(0, 365),
                compress=st.booleans(),
            )
        ),
        "metrics": draw(section(retention_days=st.integers(1, 400), cleanup_schedule=SCHEDULES)),
        "node": draw(
            section(
                offline_duration_minutes=st.integers(1, 60) | st.floats(0.5, 60),
                offline_check_schedule=SCHEDULES,
            )
        ),
        "auth": draw(section(allow_register=st.booleans())),
        "daemon_client": {
            **draw(
                section(
                    port=st.integers(1, 65535),
                    max_channels=st.integers(1, 5000),
                    timeout=DURATIONS,
                    operate_timeout=DURATIONS,
                )
            ),
            "tls": client_tls,
        },
        "alerts": draw(
            section(
                cpu_percent=st.integers(1, 100) | st.floats(0.5, 100),
                memory_percent=st.integers(1, 100),
                disk_percent=st.floats(0.01, 100),
            )
        ),
    }


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


@given(documents())
def test_dump_then_parse_is_the_identity(document: dict[str, Any]) -> None:
    config = parse_config(document, base_dir="/etc/hv")
    dumped = dump_config(config)
    assert parse_config(dumped, base_dir="/elsewhere") == config  # every path is absolute
    # ... and through YAML, as a user would save it.
    assert parse_config(yaml.safe_load(yaml.safe_dump(dumped))) == config
    assert dump_config(parse_config(dumped)) == dumped


@given(documents(), st.sampled_from(["grpc", "server", "log", "metrics", "node", "auth"]))
def test_an_unknown_key_is_named_with_its_section(document: dict[str, Any], name: str) -> None:
    document[name] = {**document[name], "unknown_key": 1}
    with pytest.raises(ManagerConfigError) as caught:
        parse_config(document)
    assert caught.value.issues == ((f"{name}.unknown_key", "unknown key"),)


@given(st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.none(), st.floats()))
def test_a_port_is_an_integer_in_range(value: object) -> None:
    valid = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535
    if valid or value is None:
        assert parse_config({"grpc": {"port": value}}).grpc.port == (
            9090 if value is None else value
        )
        return
    with pytest.raises(ManagerConfigError) as caught:
        parse_config({"grpc": {"port": value}})
    assert [path for path, _ in caught.value.issues] == ["grpc.port"]
