"""manager.yaml on disk: loading, the files it names, the JWT secret, TLS material."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from tests.transport.daemon.grpc_helpers import make_pki
from transport.manager import ManagerConfigError
from transport.manager._config import (
    DATA_DIR_ENV,
    check_files,
    client_tls,
    default_config,
    jwt_secret,
    load_config,
    parse_config,
    server_tls,
)


@pytest.fixture(autouse=True)
def _data_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def load_issues(path: Path) -> list[str]:
    with pytest.raises(ManagerConfigError) as caught:
        load_config(path)
    assert caught.value.source == str(path)
    return [f"{at}: {message}" for at, message in caught.value.issues]


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n", "---\n...\n"])
def test_an_empty_file_is_every_default(tmp_path: Path, text: str) -> None:
    config = load_config(write(tmp_path / "manager.yaml", text))
    assert config == default_config()
    assert config.source == str(tmp_path / "manager.yaml")


def test_paths_in_a_file_are_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = write(tmp_path / "etc" / "manager.yaml", "data_dir: state\nserver:\n  port: 18080\n")
    config = load_config(path)
    assert config.data_dir == str(tmp_path / "etc" / "state")
    assert config.database.url == f"sqlite:///{tmp_path}/etc/state/manager.db"
    assert config.server.port == 18080


def test_any_file_name_is_read_as_yaml(tmp_path: Path) -> None:
    assert load_config(write(tmp_path / "manager.conf", "grpc: {port: 19090}\n")).grpc.port == 19090


def test_invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    (issue,) = load_issues(write(tmp_path / "m.yaml", "server:\n  port: [8080\n"))
    assert issue.startswith(": invalid YAML at line 3, column 1")


def test_a_repeated_key_is_an_error(tmp_path: Path) -> None:
    (issue,) = load_issues(write(tmp_path / "m.yaml", "grpc:\n  port: 1\n  port: 2\n"))
    assert issue == ": invalid YAML at line 3, column 3: duplicate key 'port'"


def test_python_objects_are_refused(tmp_path: Path) -> None:
    (issue,) = load_issues(write(tmp_path / "m.yaml", "server: !!python/object:os.system {}\n"))
    assert "invalid YAML" in issue


def test_an_unreadable_file(tmp_path: Path) -> None:
    assert load_issues(tmp_path / "missing.yaml") == [
        ": cannot read the file: No such file or directory"
    ]


def test_validation_and_file_problems_together(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a directory should be")
    path = write(
        tmp_path / "m.yaml",
        "data_dir: blocker/data\n"
        "grpc:\n  port: 70000\n  tls: {enabled: true, cert_file: no.pem, key_file: no.key}\n",
    )
    found = load_issues(path)
    assert found[0] == "grpc.port: must be 0-65535 (0: any free port), got 70000"
    # parse errors come alone: file checks run on a configuration that parsed
    assert len(found) == 1
    path.write_text(
        "data_dir: blocker/data\n"
        "grpc:\n  tls: {enabled: true, cert_file: no.pem, key_file: no.key}\n"
    )
    assert load_issues(path) == [
        f"grpc.tls.cert_file: not found: '{tmp_path}/no.pem'",
        f"grpc.tls.key_file: not found: '{tmp_path}/no.key'",
        f"data_dir: {check_message(tmp_path / 'blocker' / 'data')}",
    ]


def check_message(path: Path) -> str:
    from supervisor.schema import creatable_dir

    message = creatable_dir(str(path))
    assert message is not None
    return message


def test_the_log_directory_must_be_creatable(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("")
    config = parse_config({"log": {"output_path": str(tmp_path / "blocker" / "m.log")}})
    ((at, _),) = check_files(config)
    assert at == "log.output_path"


# --------------------------------------------------------------------------- JWT secret


def test_the_secret_is_generated_once_and_private(tmp_path: Path) -> None:
    config = default_config()
    first = jwt_secret(config)
    path = Path(config.jwt_secret_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 64
    assert jwt_secret(config) == first
    assert jwt_secret(default_config()) == first
    assert sorted(os.listdir(config.data_dir)) == ["jwt.secret"]  # no temporary left


def test_a_configured_secret_is_used_and_nothing_written(tmp_path: Path) -> None:
    config = parse_config({"jwt": {"secret": "x" * 40}})
    assert jwt_secret(config) == "x" * 40
    assert not Path(config.data_dir).exists()


def test_a_secret_readable_by_others_is_refused(tmp_path: Path) -> None:
    config = default_config()
    jwt_secret(config)
    os.chmod(config.jwt_secret_path, 0o644)
    with pytest.raises(ManagerConfigError) as caught:
        jwt_secret(config)
    ((at, message),) = caught.value.issues
    assert at == "jwt.secret"
    assert "may be read by others (mode 0644)" in message
    assert f"chmod 600 {config.jwt_secret_path}" in message
    assert check_files(config) == list(caught.value.issues)


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    config = default_config()
    os.makedirs(config.data_dir)
    fd = os.open(config.jwt_secret_path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    with pytest.raises(ManagerConfigError, match="is empty"):
        jwt_secret(config)


def test_managers_starting_together_share_one_secret(tmp_path: Path) -> None:
    config = default_config()
    results: list[str] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        results.append(jwt_secret(config))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert sorted(os.listdir(config.data_dir)) == ["jwt.secret"]


# --------------------------------------------------------------------------- TLS


def test_server_and_client_tls_are_read(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    config = parse_config(
        {
            "grpc": {
                "tls": {
                    "enabled": True,
                    "cert_file": str(pki.server_cert),
                    "key_file": str(pki.server_key),
                    "ca_file": str(pki.ca),
                }
            },
            "daemon_client": {
                "tls": {
                    "cert_file": str(pki.client_cert),
                    "key_file": str(pki.client_key),
                    "ca_file": str(pki.ca),
                    "server_name": "localhost",
                }
            },
        }
    )
    assert check_files(config) == []
    server = server_tls(config)
    assert server is not None
    assert server.cert_chain == pki.server_cert.read_bytes()
    assert server.private_key == pki.server_key.read_bytes()
    assert server.client_ca == pki.ca.read_bytes()
    client = client_tls(config)
    assert client is not None
    assert client.server_ca == pki.ca.read_bytes()
    assert client.cert_chain == pki.client_cert.read_bytes()
    assert client.server_name == "localhost"


def test_without_tls_nothing_is_read(tmp_path: Path) -> None:
    config = parse_config({"grpc": {"tls": {"enabled": False, "cert_file": "/nonexistent"}}})
    assert server_tls(config) is None
    assert client_tls(config) is None
    assert check_files(config) == []


def test_a_key_where_a_certificate_belongs(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    config = parse_config(
        {
            "grpc": {
                "tls": {
                    "enabled": True,
                    "cert_file": str(pki.server_key),
                    "key_file": str(pki.server_key),
                }
            }
        }
    )
    with pytest.raises(ManagerConfigError) as caught:
        server_tls(config)
    assert caught.value.issues == (
        ("grpc.tls.cert_file", f"not a PEM file with a certificate: '{pki.server_key}'"),
    )


def test_the_bundled_example_is_valid() -> None:
    from importlib import resources

    import yaml

    path = resources.files("transport.manager.examples").joinpath("manager.yaml")
    text = path.read_text()
    config = parse_config(yaml.safe_load(text), source=str(path))
    assert config.data_dir == "/var/lib/hostvisor-manager"
    assert config.database.url == "sqlite:////var/lib/hostvisor-manager/manager.db"
    assert config.warnings == (
        "gRPC on 0.0.0.0:9090 without TLS: any host that reaches it can register nodes and"
        " report for them (set grpc.tls)",
    )
    # Every key it writes is a default: the example documents, it changes nothing.
    defaults = parse_config({"data_dir": "/var/lib/hostvisor-manager"})
    assert config == defaults
