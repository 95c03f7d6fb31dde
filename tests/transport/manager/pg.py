"""A throwaway PostgreSQL server for the store's tests (initdb + pg_ctl, unix socket only).

:class:`PostgresServer` makes a cluster in a temporary directory, starts it listening on
a unix socket in that directory only (no TCP port), creates one database per test and
stops the server with ``pg_ctl stop -m immediate`` at the end. The binaries come from
``/usr/lib/postgresql/<version>/bin`` (Debian's ``postgresql`` package) or ``PATH``.
``initdb`` refuses to run as root: as root, the cluster belongs to the ``postgres`` user
(or ``nobody``) and every server command runs as that user through ``runuser``.

Nothing is left running even when the test process is killed: a watchdog process waits for
its standard input (a pipe from the test process) to close, which happens when the test
process exits however it exits, and then stops the server and deletes its directory.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

__all__ = ["PostgresServer", "find_bindir"]

_WATCHDOG = """
import shutil, subprocess, sys
sys.stdin.read()
subprocess.run(sys.argv[2:], capture_output=True, timeout=120, check=False)
shutil.rmtree(sys.argv[1], ignore_errors=True)
"""


def find_bindir() -> Path | None:
    """The directory of initdb and pg_ctl (newest version first), or None."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda path: int(Path(path).parent.name) if Path(path).parent.name.isdigit() else 0,
        reverse=True,
    )
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    return None


def _run_as() -> str | None:
    """The user to run the server as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root, and there is no postgres or nobody user for initdb")


class PostgresServer:
    """A PostgreSQL cluster of its own in a temporary directory.

    Args:
        bindir: Where initdb and pg_ctl are.
        durable: Keep PostgreSQL's durability settings (fsync, synchronous commit, full
            page writes) on, as a production server runs; the tests switch them off.
    """

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.bindir = bindir
        self.durable = durable
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="hv-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log = self.root / "server.log"
        self._names = itertools.count()
        self._running = False
        self._watchdog: subprocess.Popen[bytes] | None = None

    def _argv(self, *args: str) -> list[str]:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        return [*prefix, *args]

    def _command(self, *args: str) -> None:
        result = subprocess.run(
            self._argv(*args), capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}\n{log}"
            )

    def start(self) -> None:
        """Create the cluster and start the server (waits until it accepts connections)."""
        self.socket_dir.mkdir()
        if self.user:
            entry = pwd.getpwnam(self.user)
            for path in (self.root, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._command(
            str(self.bindir / "initdb"),
            "-D", str(self.data),
            "-U", "postgres",
            "-A", "trust",
            "-E", "UTF8",
            "--locale=C",
            "--no-sync",
        )  # fmt: skip
        stop = self._argv(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"
        )
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(self.root), *stop],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        options = " ".join(
            (
                "-c listen_addresses=''",
                f"-c unix_socket_directories={self.socket_dir}",
                *(
                    ()
                    if self.durable
                    else ("-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")
                ),
                "-c max_connections=300",
            )
        )
        self._command(
            str(self.bindir / "pg_ctl"),
            "-D", str(self.data),
            "-l", str(self.log),
            "-o", options,
            "-w", "-t", "60",
            "start",
        )  # fmt: skip
        self._running = True

    def stop(self) -> None:
        """Stop the server at once and delete its files."""
        try:
            if self._running:
                self._command(
                    str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                    "stop",
                )  # fmt: skip
                self._running = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            if self._watchdog is not None:
                assert self._watchdog.stdin is not None
                self._watchdog.stdin.close()
                self._watchdog.wait(timeout=120)

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=str(self.socket_dir), dbname="postgres", user="postgres", autocommit=True
        )

    def create_database(self) -> str:
        """A new, empty database; returns its name."""
        name = f"hv_test_{next(self._names)}"
        with self._admin() as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still connected."""
        with self._admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def url(self, name: str) -> str:
        """The SQLAlchemy URL of database ``name``."""
        return f"postgresql+psycopg://postgres@/{name}?host={self.socket_dir}"
