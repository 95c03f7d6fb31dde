"""The wheel users install ships exactly the four packages, with their data files.

Built from a copy of the tree (so the checkout gets no ``build/`` or ``*.egg-info``), with
the setuptools already installed (no download).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("supervisor", "collectors", "updater", "transport")


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("hostvisor-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_ships_exactly_the_four_packages(wheel_files: set[str]) -> None:
    tops = {name.split("/")[0] for name in wheel_files if not name.startswith("hostvisor-")}
    assert tops == set(PACKAGES)
    for package in PACKAGES:
        assert f"{package}/py.typed" in wheel_files


def test_the_wheel_ships_every_data_file_of_the_tree(wheel_files: set[str]) -> None:
    """Migrations, protos, examples, unit files and the console's static files."""
    wanted = [
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]
    missing = sorted(set(wanted) - wheel_files)
    assert not missing, f"not in the wheel: {missing[:20]}"


def test_the_wheel_ships_the_systemd_units_and_example_configurations(
    wheel_files: set[str],
) -> None:
    """What the README tells users to install from the package (also found by the test
    above; named here so that a unit moved out of package data is noticed by name)."""
    for name in (
        "transport/daemon/examples/daemon.yaml",
        "transport/daemon/examples/hostvisor.service",
        "transport/manager/examples/manager.yaml",
        "transport/manager/examples/hostvisor-manager.service",
        "updater/contrib/hostvisor.service",
    ):
        assert name in wheel_files, name
