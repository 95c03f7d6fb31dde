"""hostvisor-manager's command line: configuration checks and the user commands, against a
real SQLite store in the test's data directory."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import argon2
import pytest

from transport.manager._cli import EXIT_CODES, _arguments, main
from transport.manager._config import DATA_DIR_ENV, default_config
from transport.manager._model import Role, UserStatus
from transport.manager._run import open_store
from transport.manager._store import Store

PASSWORD = "correct horse"


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    opened = open_store(default_config())
    try:
        yield opened
    finally:
        opened.close()


def run(monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(list(argv))


def create(monkeypatch: pytest.MonkeyPatch, name: str = "alice", role: str = "admin") -> int:
    return run(monkeypatch, "create-user", name, "--role", role, stdin=f"{PASSWORD}\n")


def verifies(stored: str, password: str) -> bool:
    try:
        return argon2.PasswordHasher().verify(stored, password)
    except argon2.exceptions.VerificationError:
        return False


# --------------------------------------------------------------------------- users


def test_create_user_from_standard_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Store
) -> None:
    code = run(
        monkeypatch,
        "create-user",
        "alice",
        "--role",
        "admin",
        "--email",
        "alice@example.com",
        stdin=f"{PASSWORD}\n",
    )
    assert code == 0
    user, stored = store.credentials("alice")
    assert capsys.readouterr().out == f"created user alice (id {user.id}, role admin)\n"
    assert user.role is Role.ADMIN
    assert user.email == "alice@example.com"
    assert stored.startswith("$argon2id$")
    assert verifies(stored, PASSWORD)
    (entry,) = store.list_audit(page=1, page_size=10).items
    assert (entry.actor, entry.action, entry.target) == ("cli", "user.create", f"user:{user.id}")
    assert entry.detail["role"] == "admin"


def test_create_user_prompts_twice_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, store: Store
) -> None:
    answers = iter([PASSWORD, PASSWORD])
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    monkeypatch.setattr("sys.stdin", _Terminal())
    assert main(["create-user", "bob", "--role", "viewer"]) == 0
    assert verifies(store.credentials("bob")[1], PASSWORD)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_passwords_that_differ_are_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Store
) -> None:
    answers = iter([PASSWORD, PASSWORD + "!"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    monkeypatch.setattr("sys.stdin", _Terminal())
    assert main(["create-user", "bob", "--role", "viewer"]) == 7
    assert capsys.readouterr().err == "error: the passwords differ\n"
    assert store.list_users(page=1, page_size=10).total == 0


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("short\n", "error: a password needs at least 8 characters\n"),
        ("", "error: a password needs at least 8 characters\n"),
        ("x" * 129 + "\n", "error: a password has at most 128 characters\n"),
    ],
)
def test_bad_passwords_are_refused(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    store: Store,
    stdin: str,
    message: str,
) -> None:
    assert run(monkeypatch, "create-user", "carol", "--role", "operator", stdin=stdin) == 7
    assert capsys.readouterr().err == message
    assert store.list_users(page=1, page_size=10).total == 0


def test_a_password_keeps_its_spaces_but_not_the_line_end(
    monkeypatch: pytest.MonkeyPatch, store: Store
) -> None:
    assert run(monkeypatch, "create-user", "dave", "--role", "viewer", stdin=" pass word \r\n") == 0
    assert verifies(store.credentials("dave")[1], " pass word ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["create-user", "-x", "--role", "admin"], None),
        (["create-user", "a", "--role", "admin"], "a user name has 3 to 50"),
        (["create-user", "al ice", "--role", "admin"], "a user name has 3 to 50"),
        (["create-user", "alice", "--role", "admin", "--email", "x@"], "not an e-mail address"),
    ],
)
def test_bad_names_are_refused(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str | None,
) -> None:
    if message is None:
        with pytest.raises(SystemExit) as exited:
            run(monkeypatch, *argv, stdin=f"{PASSWORD}\n")
        assert exited.value.code == 2
        return
    assert run(monkeypatch, *argv, stdin=f"{PASSWORD}\n") == 7
    assert message in capsys.readouterr().err


def test_a_user_cannot_be_created_twice(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Store
) -> None:
    assert create(monkeypatch) == 0
    assert create(monkeypatch, role="viewer") == 9
    assert capsys.readouterr().err == "error: user alice exists already\n"
    assert store.get_user_by_name("alice").role is Role.ADMIN


def test_users_lists_every_user(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Store
) -> None:
    for index in range(3):
        assert create(monkeypatch, f"user{index:03}", "viewer") == 0
    capsys.readouterr()
    assert run(monkeypatch, "users") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "USERNAME", "ROLE", "STATUS", "LAST", "LOGIN"]
    assert [line.split()[1:4] for line in lines[1:]] == [
        [f"user{index:03}", "viewer", "active"] for index in range(3)
    ]


def test_users_on_an_empty_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(monkeypatch, "users") == 0  # the command migrates a new database
    assert capsys.readouterr().out.split() == ["ID", "USERNAME", "ROLE", "STATUS", "LAST", "LOGIN"]


def test_disable_and_enable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Store
) -> None:
    assert create(monkeypatch) == 0
    assert run(monkeypatch, "disable-user", "alice") == 0
    assert store.get_user_by_name("alice").status is UserStatus.DISABLED
    assert run(monkeypatch, "enable-user", "alice") == 0
    assert store.get_user_by_name("alice").status is UserStatus.ACTIVE
    assert capsys.readouterr().out.splitlines()[1:] == ["user alice disabled", "user alice enabled"]
    actions = [entry.action for entry in store.list_audit(page=1, page_size=10).items]
    assert sorted(actions) == ["user.create", "user.disable", "user.enable"]


def test_reset_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Store
) -> None:
    assert create(monkeypatch) == 0
    assert run(monkeypatch, "reset-password", "alice", stdin="another secret\n") == 0
    stored = store.credentials("alice")[1]
    assert verifies(stored, "another secret")
    assert not verifies(stored, PASSWORD)
    assert "user.reset_password" in {e.action for e in store.list_audit(page=1, page_size=9).items}


@pytest.mark.parametrize("command", ["disable-user", "enable-user", "reset-password"])
def test_unknown_users(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    assert run(monkeypatch, command, "nobody", stdin=f"{PASSWORD}\n") == 8
    assert capsys.readouterr().err == "error: no such user: nobody\n"


def test_an_unusable_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], data_dir: Path
) -> None:
    (data_dir / "manager.db").mkdir(parents=True)  # a directory where the file should be
    assert run(monkeypatch, "users") == 4
    assert capsys.readouterr().err.startswith("error: the database failed: ")


# --------------------------------------------------------------------------- configuration


def test_the_user_commands_use_the_configured_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "manager.yaml"
    config.write_text("data_dir: elsewhere\n")
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{PASSWORD}\n"))
    assert main(["create-user", "alice", "--role", "admin", "--config", str(config)]) == 0
    with Store.open(f"sqlite:///{tmp_path}/elsewhere/manager.db") as store:
        assert store.get_user_by_name("alice").role is Role.ADMIN


def test_check_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "manager.yaml"
    config.write_text("grpc: {host: 127.0.0.1, port: 19090}\nserver: {port: 18080}\n")
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out == (
        f"{config}: OK (HTTP 0.0.0.0:18080, gRPC 127.0.0.1:19090 plaintext, sqlite"
        f" sqlite:///{tmp_path}/data/manager.db)\n"
    )


def test_configuration_errors_are_listed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "manager.yaml"
    config.write_text("grpc: {port: 70000}\ndatabase: {driver: mysql}\nredis: {}\n")
    for command in (
        ["check-config"],
        ["run"],
        ["users"],
        ["create-user", "al1", "--role", "admin"],
    ):
        assert main([*command, "-config", str(config)]) == 3
        assert capsys.readouterr().err == (
            f"{config}: 2 configuration error(s)\n"
            "  grpc.port: must be 0-65535 (0: any free port), got 70000\n"
            "  database.driver: mysql is not supported: use sqlite (embedded, the default) or"
            " postgres\n"
        )


def test_warnings_are_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "manager.yaml"
    config.write_text("redis: {host: localhost}\ngrpc: {host: 127.0.0.1}\n")
    assert main(["check-config", "-c", str(config)]) == 0
    assert capsys.readouterr().err == (
        f"{config}: warning: redis: ignored (the Manager does not use Redis; nor did the"
        " original)\n"
    )


def test_the_original_invocation_means_run() -> None:
    assert _arguments(["-config", "m.yaml"]) == ["run", "-config", "m.yaml"]
    assert _arguments(["users"]) == ["users"]
    assert _arguments([]) == []


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    with pytest.raises(SystemExit):
        main(["create-user", "alice", "--role", "root"])
    assert "invalid choice: 'root'" in capsys.readouterr().err
    assert set(EXIT_CODES) == {0, 1, 2, 3, 4, 5, 7, 8, 9}


@pytest.mark.parametrize("server", ["grpc", "server"])
def test_run_on_a_busy_port_exits_5(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    server: str,
) -> None:
    import logging

    from tests.transport.manager.test_run import busy_port

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with busy_port() as port:
        config = tmp_path / "manager.yaml"
        ports = {"server": 0, "grpc": 0, server: port}
        config.write_text(
            "".join(f"{name}: {{host: 127.0.0.1, port: {p}}}\n" for name, p in ports.items())
        )
        try:
            assert main(["run", "--config", str(config)]) == 5
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
    assert f"cannot listen on '127.0.0.1:{port}'" in capsys.readouterr().err
