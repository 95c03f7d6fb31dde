"""The ``manager:`` section, ``daemon.labels``, the node id and the host facts."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from supervisor import ConfigError
from transport.daemon._config import DaemonConfig
from transport.daemon._manager_config import (
    ManagerSpec,
    channel_options,
    load_tls_files,
    manager_config,
    parse_manager,
    read_labels,
)
from transport.daemon._node import cpu_extras, go_arch, host_facts, node_id, route_ip

from .reporter_helpers import make_pki


def issues(raw: object, base: str = "/etc/hostvisor") -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse_manager(raw, base_dir=base)
    return {issue.path: issue.message for issue in caught.value.issues}


def test_defaults() -> None:
    """Only the address is required; the rest has the seed's defaults."""
    spec = parse_manager({"address": "manager.example.com:9090"}, base_dir="/")
    assert spec == ManagerSpec(address="manager.example.com:9090")
    assert (spec.heartbeat_interval_s, spec.reconnect_interval_s, spec.timeout_s) == (60, 10, 30)
    assert spec.sync_interval_s == 30 and spec.keepalive.time_s == 30
    assert spec.keepalive.timeout_s == 10 and spec.keepalive.permit_without_calls
    assert spec.spool.max_age_s == 86400 and spec.spool.max_bytes == 64 << 20
    assert not spec.tls.enabled and (spec.host, spec.port) == ("manager.example.com", 9090)


def test_full_section() -> None:
    """Every key is read; durations and sizes use the project's grammar; paths resolve."""
    spec = parse_manager(
        {
            "address": "[::1]:7000",
            "tls": {"cert_file": "c.pem", "key_file": "k.pem", "ca_file": "/ca.pem",
                    "server_name": "manager.test"},
            "heartbeat_interval": "15s",
            "reconnect_interval": "1m",
            "timeout": 5,
            "sync_interval": "10s",
            "keepalive": {"time": "0s", "timeout": "3s", "permit_without_calls": False},
            "spool": {"max_bytes": "1MiB", "max_age": "2h"},
        },
        base_dir="/etc/hv",
    )  # fmt: skip
    assert spec.address == "[::1]:7000" and (spec.host, spec.port) == ("::1", 7000)
    assert spec.tls.cert_file == "/etc/hv/c.pem" and spec.tls.ca_file == "/ca.pem"
    assert spec.heartbeat_interval_s == 15 and spec.reconnect_interval_s == 60
    assert spec.keepalive.time_s == 0 and spec.spool.max_bytes == 1 << 20
    assert spec.spool.max_age_s == 7200
    assert not any(key.startswith("grpc.keepalive") for key, _ in channel_options(spec))


def test_problems_have_precise_paths() -> None:
    """Every problem is reported at once with its path."""
    found = issues(
        {
            "adress": "x",
            "tls": {"cert_file": "c.pem", "verify": True},
            "heartbeat_interval": "0s",
            "timeout": "soon",
            "keepalive": {"time": "10s"},
            "spool": {"max_bytes": 0},
        }
    )
    assert "did you mean 'address'" in found["manager.adress"]
    assert found["manager.address"].startswith("required")
    assert "unknown key" in found["manager.tls.verify"]
    assert "must be longer than 0s" in found["manager.heartbeat_interval"]
    assert "manager.timeout" in found
    assert "manager.spool.max_bytes" in found


def test_rules_between_keys() -> None:
    """A certificate needs its key; keepalive pings below 20 s are refused."""
    found = issues({"address": "m:1", "tls": {"cert_file": "c.pem"}, "keepalive": {"time": "10s"}})
    assert "required with manager.tls.cert_file" in found["manager.tls.key_file"]
    assert "ENHANCE_YOUR_CALM" in found["manager.keepalive.time"]
    assert "manager.tls.server_name" in issues({"address": "m:1", "tls": {"server_name": "x"}})


@pytest.mark.parametrize(
    ("raw", "address"),
    [
        ("manager.example.com", "manager.example.com:9090"),
        ("10.0.0.1:9443", "10.0.0.1:9443"),
        ("::1", "[::1]:9090"),
        ("[fe80::1]:1", "[fe80::1]:1"),
        ("Manager.Example.COM:80", "manager.example.com:80"),
    ],
)
def test_addresses(raw: str, address: str) -> None:
    """Host names, IPv4 and IPv6 addresses; the port defaults to the original's 9090."""
    assert parse_manager({"address": raw}, base_dir="/").address == address


@pytest.mark.parametrize("raw", ["", "host:0", "host:99999", "a b:1", "[::1]x", 7, "h:p"])
def test_bad_addresses(raw: object) -> None:
    """An address that is not host:port is refused with its path."""
    assert "manager.address" in issues({"address": raw})


def test_tls_files_are_checked_at_start(tmp_path: Path) -> None:
    """A missing or non-PEM file is a configuration error naming the key, never plaintext."""
    pki = make_pki(tmp_path)
    (tmp_path / "not.pem").write_text("hello")
    config = DaemonConfig(
        manager={
            "address": "m:1",
            "tls": {"cert_file": str(pki.client_cert), "key_file": "missing.pem",
                    "ca_file": "not.pem"},
        },
        source=str(tmp_path / "daemon.yaml"),
    )  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        manager_config(config)
    found = {i.path: i.message for i in caught.value.issues}
    assert set(found) == {"manager.tls.key_file", "manager.tls.ca_file"}
    assert found["manager.tls.key_file"].startswith("not found")
    assert "not a PEM file" in found["manager.tls.ca_file"]
    assert caught.value.source == str(tmp_path / "daemon.yaml")
    good = parse_manager(
        {"address": "m:1", "tls": {"cert_file": "client_cert.pem", "key_file": "client_key.pem"}},
        base_dir=str(tmp_path),
    )
    files = load_tls_files(good)
    assert files is not None and files.cert_chain == pki.client_cert.read_bytes()
    assert files.ca is None
    assert manager_config(DaemonConfig()) is None


def test_labels() -> None:
    """Labels map names to strings; numbers become strings; bad entries name their key."""
    assert dict(read_labels({"rack": "r1", "zone": 3})) == {"rack": "r1", "zone": "3"}
    with pytest.raises(ConfigError) as caught:
        read_labels({"rack": ["a"], "": "x"})
    assert {i.path for i in caught.value.issues} == {"daemon.labels.rack", "daemon.labels."}


def test_node_id_precedence(tmp_path: Path) -> None:
    """daemon.id, else NODE_NAME, else the stored id, else a new UUID written there."""
    assert node_id("configured", str(tmp_path), {"NODE_NAME": "env"}) == "configured"
    assert node_id("", str(tmp_path), {"NODE_NAME": "env"}) == "env"
    created = node_id("", str(tmp_path), {})
    uuid.UUID(created)
    assert (tmp_path / "node_id").read_text().strip() == created
    assert node_id("  ", str(tmp_path), {}) == created
    assert [p.name for p in tmp_path.iterdir()] == ["node_id"]
    assert oct(os.stat(tmp_path / "node_id").st_mode & 0o777) == "0o644"


def test_host_facts() -> None:
    """The route to a loopback Manager goes out by a loopback address; OS and arch use
    Go's names."""
    facts = host_facts("127.0.0.1", 9090)
    assert facts.ip == "127.0.0.1" and facts.hostname == socket.gethostname()
    assert facts.os == "linux" and facts.arch == go_arch(os.uname().machine)
    assert go_arch("x86_64") == "amd64" and go_arch("aarch64") == "arm64"
    assert route_ip("name.invalid", 9090) == ""


def test_cpu_extras(tmp_path: Path) -> None:
    """mhz is the mean of cpu MHz lines; iowait the fifth field of /proc/stat's cpu line."""
    (tmp_path / "cpuinfo").write_text("cpu MHz\t\t: 2000.0\nx: 1\ncpu MHz\t\t: 3000.0\n")
    ticks = os.sysconf("SC_CLK_TCK")
    (tmp_path / "stat").write_text(f"cpu  1 2 3 4 {ticks * 5} 6 7\ncpu0 1 2 3 4 5\n")
    extras = cpu_extras(str(tmp_path))
    assert (extras.cpu_mhz, extras.cpu_iowait_s) == (2500.0, 5.0)
    empty = cpu_extras(str(tmp_path / "nowhere"))
    assert (empty.cpu_mhz, empty.cpu_iowait_s) == (None, None)


def test_collectors_feeding_a_manager_run_at_most_once_a_second() -> None:
    """A report's timestamp is in whole seconds and the Manager keeps one per node, type
    and second: a faster collector would lose reports there, so it is refused (by path)."""
    from transport.daemon._config import parse_config
    from transport.daemon._run import collectors_config

    manager = {"address": "127.0.0.1:9090"}
    fast = {"cpu": {"interval": "500ms"}, "disk": {"enabled": False, "interval": "100ms"}}
    with pytest.raises(ConfigError) as caught:
        collectors_config(parse_config({"manager": manager, "collectors": fast}))
    assert [(i.path, i.message) for i in caught.value.issues] == [
        (
            "collectors.cpu.interval",
            "0.5s is below 1s: a report's timestamp is in whole seconds and the Manager"
            " keeps one report per node, metric type and second",
        )
    ]  # the disabled disk collector is not checked
    standalone = collectors_config(parse_config({"collectors": fast}))
    assert standalone is not None and standalone.cpu.interval_s == 0.5
    assert collectors_config(parse_config({"manager": manager, "collectors": {}})) is not None
