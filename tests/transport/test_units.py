"""The systemd units shipped for the daemon and the Manager: they start real commands with
valid arguments, and keep the promises the README makes about them."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from transport.daemon._cli import _parser as daemon_parser
from transport.manager._cli import _parser as manager_parser
from updater import RESTART_EXIT_CODE

ROOT = Path(__file__).resolve().parents[2]
DAEMON_UNIT = resources.files("transport.daemon.examples").joinpath("hostvisor.service")
MANAGER_UNIT = resources.files("transport.manager.examples").joinpath("hostvisor-manager.service")
UNITS = {"hostvisor.service": DAEMON_UNIT, "hostvisor-manager.service": MANAGER_UNIT}


def read_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as systemd reads it: sections of keys, each with every value given."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            current = sections.setdefault(stripped[1:-1], {})
            continue
        assert current is not None, f"line {number}: a key before any section"
        key, equals, value = stripped.partition("=")
        assert equals, f"line {number}: not key=value: {line!r}"
        assert "#" not in value, f"line {number}: systemd has no inline comments"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    (value,) = unit[section][key]
    return value


def scripts() -> dict[str, str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        found: dict[str, str] = tomllib.load(f)["project"]["scripts"]
    return found


@pytest.mark.parametrize("name", sorted(UNITS))
def test_the_unit_reads_as_an_ini_file(name: str) -> None:
    """configparser (strict, no interpolation) reads it: no duplicate sections, every line
    a key, a section or a comment."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNITS[name].read_text())
    assert parser.sections() == ["Unit", "Service", "Install"]
    assert parser["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize(
    ("name", "script", "parse"),
    [
        ("hostvisor.service", "hostvisor", daemon_parser),
        ("hostvisor-manager.service", "hostvisor-manager", manager_parser),
    ],
)
def test_exec_start_runs_a_console_script_with_valid_arguments(
    name: str, script: str, parse: object
) -> None:
    unit = read_unit(UNITS[name].read_text())
    argv = shlex.split(one(unit, "Service", "ExecStart"))
    assert Path(argv[0]).name == script
    assert script in scripts()
    args = parse().parse_args(argv[1:])  # type: ignore[operator]
    assert args.command == "run"
    assert args.config.startswith("/etc/")


def test_the_daemon_unit_keeps_agents_and_restarts_after_a_self_update() -> None:
    unit = read_unit(DAEMON_UNIT.read_text())
    service = unit["Service"]
    assert service["KillMode"] == ["process"]  # agents survive the daemon's restarts
    assert service["Restart"] == ["on-failure"]
    assert service["RestartForceExitStatus"] == [str(RESTART_EXIT_CODE)]
    assert service["SuccessExitStatus"] == [str(RESTART_EXIT_CODE)]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # SIGHUP: reload
    assert "User" not in service  # root: agents run as the daemon's user


def test_the_manager_unit_runs_sandboxed_as_its_own_user() -> None:
    unit = read_unit(MANAGER_UNIT.read_text())
    service = unit["Service"]
    assert service["User"] == ["hostvisor-manager"]
    assert service["StateDirectory"] == ["hostvisor-manager"]
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[key] == [value], key
    assert "ExecReload" not in service  # the Manager has no SIGHUP handler: it would die
    # The example manager.yaml keeps its data where StateDirectory= gives write access.
    example = resources.files("transport.manager.examples").joinpath("manager.yaml").read_text()
    assert "\ndata_dir: /var/lib/hostvisor-manager\n" in example


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    """``systemd-analyze verify``, with ExecStart pointing at this environment's scripts
    (it checks that the program exists). Unknown keys or bad values are warnings there, so
    any line about the units fails the test."""
    bin_dir = Path(sys.executable).parent
    for name, unit in UNITS.items():
        text = unit.read_text().replace("/opt/hostvisor/venv/bin/", f"{bin_dir}/")
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / name) for name in UNITS)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    complaints = [
        line for line in (result.stdout + result.stderr).splitlines()
        if any(name in line for name in UNITS)
    ]  # fmt: skip
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr
