"""The command line: ``hostvisor`` (also ``python -m transport.daemon``).

Commands::

    hostvisor run --config FILE [--work-dir DIR]
    hostvisor run --example [--work-dir DIR]
    hostvisor check-config FILE [--work-dir DIR]
    hostvisor update --config FILE REQUEST.json [--timeout 600] [--work-dir DIR]
    hostvisor status [AGENT...] [--json]
    hostvisor start|stop|restart (AGENT... | --all)
    hostvisor logs AGENT [-n N] [-f]
    hostvisor metrics AGENT [--since 1h] [--json]
    hostvisor config [daemon|agent]
    hostvisor up [--dir DIR] [--http-port 8080] [--grpc-port 9090] [--daemon-port 9091]
    hostvisor certs DIR --manager-host HOST... [--node ID[=HOST,...]...] [--days N]
                    [--force | --reuse-ca]
    hostvisor --version

``run`` supervises in the foreground (see :mod:`transport.daemon._run`): agents left
running by an earlier run are adopted, SIGHUP re-reads the configuration and applies the
difference (daemon settings that need a restart are named in a warning), SIGTERM and
SIGINT end the daemon and leave the agents running (unless ``daemon.stop_agents_on_exit``
is true). With an ``update:`` block it also updates agents and itself (see
:mod:`transport.daemon._updates`): it recovers an interrupted update before starting
agents, confirms a self-update's trial once healthy, and runs the requests dropped into
``{work_dir}/updates/`` on SIGUSR1.

``up`` runs the whole system on this machine, a Manager and a daemon with the example
agents reporting to it, until Ctrl-C (see :mod:`transport._up`).

``certs`` writes a CA and the certificates of a Manager and its nodes for mutual TLS, and
prints which file goes in which configuration key (see :mod:`transport._certs`).

``update`` hands an update request (a JSON file with the fields of
:class:`updater.UpdateRequest`) to the running daemon and prints its result as JSON.

``status``, ``start``, ``stop``, ``restart``, ``logs``, ``metrics`` and ``config`` are
gRPC clients of the running daemon: through its control socket (found from ``--config``
or ``--work-dir``) or over TCP (``--address`` and the ``--tls-*`` options); see
:mod:`transport.daemon._ctl`.

Exit codes (:data:`EXIT_CODES`):

====  ================================================================
0     success (configuration valid; daemon or ``up`` ended by SIGTERM/SIGINT; update installed;
      a control command did what it was asked)
1     the update failed (the printed result says why), an agent's start, stop or restart
      failed (its line says why), ``certs``: the directory holds a CA (see ``--force``,
      ``--reuse-ca``)
      or a file cannot be written; ``up``: a port is in use, or a part could not start
      or ended; or an unexpected internal error
2     bad command line (``certs``: an invalid host, node id or ``--days``; no CA to reuse)
3     configuration invalid or unreadable (D1001/D1002), the ``update:`` block included;
      ``update`` with no ``update:`` block
4     another daemon holds this work directory, or its state or update spool is unusable
5     ``update``: no daemon is running for this work directory; control commands: none is
      running for it, or none answers at ``--address`` (or it refused the TLS handshake:
      the message says so)
6     ``update``: no result within ``--timeout`` (the request stays queued); control
      commands: no answer within ``--timeout``
7     ``update``: the request file is unreadable or not a valid request
8     a control command named an agent the daemon does not have
9     the daemon refused the request: not valid for it, not configured there, or not
      permitted (the control socket is its user's only)
75    the daemon must be restarted (``updater.RESTART_EXIT_CODE``): it switched to a new
      version of itself, or rolled back an unconfirmed one at start
====  ================================================================
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import signal
import sys
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

import trio

from supervisor import ConfigError, StateFileError

from ._config import DaemonConfig, load_config
from ._ctl import CONTROL_COMMANDS, add_control_commands, run_control
from ._errors import DaemonLockedError
from ._run import Daemon, collectors_config, level_of

if TYPE_CHECKING:
    from updater import UpdateSettings

__all__ = ["EXIT_CODES", "main", "version"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_LOCKED = 4
EXIT_NO_DAEMON = 5
EXIT_TIMEOUT = 6
EXIT_REQUEST = 7
EXIT_NO_AGENT = 8
EXIT_REFUSED = 9
#: ``updater.RESTART_EXIT_CODE`` (EX_TEMPFAIL); the systemd unit restarts on it.
EXIT_RESTART = 75

#: Every exit code of the command line and its meaning.
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_ERROR: "update or agent operation failed (see the output), certs: a CA exists or"
    " a file cannot be written, up: a port in use or a part failed, or internal error",
    EXIT_USAGE: "bad command line",
    EXIT_CONFIG: "configuration invalid or unreadable (or no update: block, for update)",
    EXIT_LOCKED: "work directory locked by another daemon, or state or spool unusable",
    EXIT_NO_DAEMON: "update: no daemon is running for this work directory (control commands:"
    " none is running, or answering at --address)",
    EXIT_TIMEOUT: "update: no result within --timeout, the request stays queued (control"
    " commands: no answer within --timeout)",
    EXIT_REQUEST: "update: request file unreadable or invalid",
    EXIT_NO_AGENT: "no such agent",
    EXIT_REFUSED: "the daemon refused the request (invalid, not configured, not permitted)",
    EXIT_RESTART: "restart requested: the daemon switched or rolled back its own version",
}

logger = logging.getLogger("hostvisor")


def version() -> str:
    """The installed distribution's version (``hostvisor``).

    Read from the first ``hostvisor-*.dist-info/METADATA`` on ``sys.path``, as
    ``importlib.metadata`` would find it, without importing it: with ``email``,
    ``zipfile`` and ``csv`` it costs 1.6 MiB and tens of milliseconds, and the daemon
    logs its version at every start. Any other layout is left to ``importlib.metadata``.
    """
    for entry in sys.path:
        try:
            names = sorted(n for n in os.listdir(entry or ".") if _DIST_INFO.fullmatch(n))
        except OSError:
            continue
        for name in names:
            try:
                with open(os.path.join(entry or ".", name, "METADATA"), encoding="utf-8") as f:
                    for line in f:
                        if line.startswith("Version:"):
                            return line.removeprefix("Version:").strip()
                        if not line.strip():
                            break  # the headers ended
            except OSError:
                continue
    from importlib.metadata import PackageNotFoundError, version as installed

    try:
        return installed("hostvisor")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


_DIST_INFO = re.compile(r"hostvisor-[^-]+\.dist-info", re.IGNORECASE)


class _Version(argparse.Action):
    """``--version``: the version is looked up only when asked for.

    ``importlib.metadata`` (with ``email``, ``zipfile``, ``csv``) costs 1.6 MiB and tens
    of milliseconds that ``hostvisor run`` would otherwise pay at every start.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(f"hostvisor {version()}")
        parser.exit()


def _timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds; got {text!r}") from None
    if not (math.isfinite(seconds) and 0 < seconds <= 86400 * 7):
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 604800; got {text}")
    return seconds


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number; got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be 1 to 65535; got {port}")
    return port


def _parser() -> argparse.ArgumentParser:
    epilog = "exit codes:\n" + "\n".join(f"  {c}  {m}" for c, m in EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog=os.path.basename(sys.argv[0]) if sys.argv[0].endswith("hostvisor") else "hostvisor",
        description="Keep agent processes running (hostvisor).",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="supervise in the foreground (daemon mode)")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", "-c", metavar="FILE", help="daemon.yaml or .toml")
    source.add_argument(
        "--example", action="store_true", help="run the bundled example configuration"
    )
    run.add_argument(
        "--work-dir",
        metavar="DIR",
        help="override daemon.work_dir (with --example: ./.hostvisor-example)",
    )
    check = commands.add_parser("check-config", help="validate a configuration and exit")
    check.add_argument("file", metavar="FILE")
    check.add_argument("--work-dir", metavar="DIR", help="override daemon.work_dir")
    update = commands.add_parser("update", help="hand an update request to the running daemon")
    update.add_argument("--config", "-c", metavar="FILE", required=True, help="daemon.yaml")
    update.add_argument("request", metavar="REQUEST.json", help="an UpdateRequest as JSON")
    update.add_argument(
        "--timeout", type=_timeout, default=600.0, metavar="SECONDS", help="wait this long"
    )
    update.add_argument("--work-dir", metavar="DIR", help="override daemon.work_dir")
    add_control_commands(commands)
    up = commands.add_parser(
        "up",
        help="run a Manager and a daemon with the example agents on this machine",
        description="Run the whole system on this machine: a Manager (SQLite, loopback) and"
        " a daemon with the bundled example agents reporting to it. Prints the console's URL"
        " and a new admin password; Ctrl-C stops everything.",
    )
    up.add_argument(
        "--dir",
        default=".hostvisor-up",
        metavar="DIR",
        help="configurations, data and logs (./.hostvisor-up)",
    )
    for option, default, what in (
        ("--http-port", 8080, "the Manager's HTTP port: console and REST API"),
        ("--grpc-port", 9090, "the Manager's gRPC port, for daemons"),
        ("--daemon-port", 9091, "the daemon's gRPC port, for the Manager"),
    ):
        up.add_argument(
            option, type=_port, default=default, metavar="PORT", help=f"{what} ({default})"
        )
    certs = commands.add_parser(
        "certs",
        help="make a CA and certificates for a Manager and its nodes (mutual TLS)",
        description="Write a CA, the Manager's server and client certificates and one"
        " certificate per node into DIR, and print which file goes in which configuration"
        " key.",
    )
    certs.add_argument("directory", metavar="DIR", help="where the files go")
    certs.add_argument(
        "--manager-host",
        action="append",
        required=True,
        metavar="HOST",
        help="a name or IP address daemons reach the Manager at (repeat for several)",
    )
    certs.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="ID[=HOST,...]",
        help="a node id (daemon.id), with the names or addresses the Manager calls it at",
    )
    certs.add_argument("--days", type=int, default=365, metavar="N", help="validity in days (365)")
    reuse = certs.add_mutually_exclusive_group()
    reuse.add_argument(
        "--force", action="store_true", help="replace a CA already in DIR (and every file)"
    )
    reuse.add_argument(
        "--reuse-ca",
        action="store_true",
        help="sign with the CA already in DIR (to add nodes): only certificates are written",
    )
    return parser


def example_config_path() -> str:
    """The path of the bundled example configuration."""
    from importlib import resources  # only for --example: the daemon stays lean

    return str(resources.files("transport.daemon.examples").joinpath("daemon.yaml"))


def _load(path: str, work_dir: str | None) -> tuple[DaemonConfig, UpdateSettings | None] | None:
    """Load and validate the configuration, the ``update:`` block included; print errors."""
    try:
        config = load_config(path, work_dir=work_dir)
        settings = _update_settings(config)
        collectors_config(config)
    except ConfigError as exc:
        _print_config_error(path, exc)
        return None
    for warning in config.warnings:
        print(f"{path}: warning: {warning}", file=sys.stderr)
    return config, settings


def _print_config_error(path: str, exc: BaseException) -> None:
    issues = exc.issues if isinstance(exc, ConfigError) else []
    code = exc.code if isinstance(exc, ConfigError) else ""
    print(f"{path}: {len(issues)} configuration error(s) [{code}]", file=sys.stderr)
    for issue in issues:
        print(f"  {issue}", file=sys.stderr)


def _update_settings(config: DaemonConfig) -> UpdateSettings | None:
    if not config.update:
        return None  # updates disabled: the updater is not even imported
    from ._updates import parse_update_settings

    return parse_update_settings(config)


def _check(args: argparse.Namespace) -> int:
    loaded = _load(args.file, args.work_dir)
    if loaded is None:
        return EXIT_CONFIG
    config, settings = loaded
    enabled = sum(spec.enabled for spec in config.agents)
    updates = ""
    if settings is not None:
        self_update = ", self-update" if settings.install_root else ""
        updates = f"; updates: {len(settings.targets)} agent(s){self_update}"
    print(f"{args.file}: OK ({len(config.agents)} agent(s), {enabled} enabled{updates})")
    return EXIT_OK


def _setup_logging(config: DaemonConfig) -> None:
    level = level_of(config.daemon.log_level)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if config.daemon.log_file:
        from logging.handlers import WatchedFileHandler  # 0.4 MiB: only when needed

        os.makedirs(os.path.dirname(config.daemon.log_file) or ".", exist_ok=True)
        # WatchedFileHandler reopens the file after logrotate moved it.
        handlers.append(WatchedFileHandler(config.daemon.log_file))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


def _run(args: argparse.Namespace) -> int:
    path = example_config_path() if args.example else args.config
    work_dir = args.work_dir
    if args.example and work_dir is None:
        work_dir = os.path.abspath(".hostvisor-example")
    loaded = _load(path, work_dir)
    if loaded is None:
        return EXIT_CONFIG
    config, settings = loaded
    _setup_logging(config)
    # A SIGUSR1 (from `update`) outside Trio's handler must not kill the daemon.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    _one_malloc_arena()
    daemon = Daemon(config, settings, path, work_dir)
    refused: list[BaseException] = []
    invalid: list[BaseException] = []
    code = EXIT_OK
    try:
        code = trio.run(partial(daemon.serve, restart_code=EXIT_RESTART))
    except* (DaemonLockedError, StateFileError) as group:
        refused.extend(group.exceptions)
    except* ConfigError as group:  # a TLS file that became unreadable since the check
        invalid.extend(group.exceptions)
    for exc in refused:
        logger.error("%s", exc)
    if refused:
        return EXIT_LOCKED
    for exc in invalid:
        _print_config_error(path, exc)
    if invalid:
        return EXIT_CONFIG
    if code == EXIT_RESTART and settings is not None and settings.restart == "reexec":
        from ._updates import reexec_daemon

        reexec_daemon(settings)  # returns only if the exec failed
    return code


def _one_malloc_arena() -> None:
    """Have every thread allocate from glibc's main arena (``mallopt(M_ARENA_MAX, 1)``).

    Each thread that allocates gets an arena of its own otherwise: the spawning threads'
    keep about 0.9 MiB resident at 300 agents. The threads mostly wait in system calls or
    for the GIL, so one arena costs them nothing. Call before any thread starts.
    """
    import ctypes  # the daemon loads it anyway (return_free_memory)

    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 1)


_M_ARENA_MAX = -8  # glibc's malloc.h


def _update(args: argparse.Namespace) -> int:
    loaded = _load(args.config, args.work_dir)
    if loaded is None:
        return EXIT_CONFIG
    config, settings = loaded
    if settings is None:
        print(f"{args.config}: updates are disabled (no update: block)", file=sys.stderr)
        return EXIT_CONFIG
    from ._updates import (
        NoDaemonError,
        RequestFileError,
        SpoolUnusableError,
        read_request_file,
        submit_and_wait,
    )

    try:
        request = read_request_file(args.request)
        name, result = submit_and_wait(config.daemon.work_dir, request, timeout_s=args.timeout)
    except RequestFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REQUEST
    except NoDaemonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NO_DAEMON
    except SpoolUnusableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    if result is None:
        print(
            f"error: no result within {args.timeout:g} s; request {name} stays queued",
            file=sys.stderr,
        )
        return EXIT_TIMEOUT
    print(json.dumps(result, indent=2))
    return EXIT_OK if result.get("success") is True else EXIT_ERROR


def _certs(args: argparse.Namespace) -> int:
    from transport._certs import (
        CertificateError,
        CertificateExistsError,
        make_fleet_certificates,
        parse_node,
    )

    try:
        nodes = [parse_node(text) for text in args.node]
        fleet = make_fleet_certificates(
            args.directory,
            manager_hosts=args.manager_host,
            node_ids=[node_id for node_id, _ in nodes],
            node_hosts=dict(nodes),
            days=args.days,
            force=args.force,
            reuse_ca=args.reuse_ca,
        )
    except CertificateExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except CertificateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"error: {args.directory}: cannot write the certificates: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(fleet.guide())
    return EXIT_OK


def _up(args: argparse.Namespace) -> int:
    from pathlib import Path

    from transport._up import UpSettings, up

    settings = UpSettings(
        Path(args.dir),
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        daemon_port=args.daemon_port,
    )
    return trio.run(up, settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            return _check(args)
        if args.command == "update":
            return _update(args)
        if args.command in CONTROL_COMMANDS:
            return run_control(args)
        if args.command == "certs":
            return _certs(args)
        if args.command == "up":
            return _up(args)
        return _run(args)
    except KeyboardInterrupt:  # pragma: no cover - SIGINT before the handler is installed
        return EXIT_OK
    except Exception:
        logger.exception("unexpected error")
        return EXIT_ERROR
