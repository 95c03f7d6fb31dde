"""The command line's control commands: a gRPC client of a running daemon.

Commands (see :mod:`transport.daemon._cli` for the exit codes)::

    hostvisor status [AGENT...] [--json]
    hostvisor start|stop|restart (AGENT... | --all)
    hostvisor logs AGENT [-n N] [-f]
    hostvisor metrics AGENT [--since 1h] [--json]
    hostvisor config [daemon|agent]

Each finds the daemon in one of two ways:

* on this host, through its control socket, a Unix socket in its work directory (only
  the daemon's user may use it): ``--config FILE`` (default ``$HOSTVISOR_CONFIG``, else
  :data:`DEFAULT_CONFIG`) names the configuration whose ``daemon.work_dir`` holds it, or
  ``--work-dir DIR`` names that directory. A daemon configured without a control socket
  (``daemon.control_socket: false``) is reached on its TCP port instead when that has no
  TLS;
* anywhere, over TCP: ``--address HOST:PORT``, with ``--tls-ca FILE`` (the CA of the
  daemon's certificate) and ``--tls-cert FILE --tls-key FILE`` (a client certificate
  signed by the daemon's ``daemon.tls.ca_file``) for a daemon with TLS.

``start``, ``stop`` and ``restart`` act on every agent named (``--all``: every agent for
``stop``; every enabled agent for ``start`` and ``restart``) concurrently, wait for each
outcome, and print one line per agent. ``start`` also clears a ``failed`` agent.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._ctl_client import Target

__all__ = [
    "CONTROL_COMMANDS",
    "DEFAULT_CONFIG",
    "ControlError",
    "add_control_commands",
    "run_control",
]

DEFAULT_CONFIG = "/etc/hostvisor/daemon.yaml"
"""The configuration the control commands read when neither --config nor
``$HOSTVISOR_CONFIG`` names one."""
CONTROL_COMMANDS = ("status", "start", "stop", "restart", "logs", "metrics", "config")
"""The commands that talk to a running daemon."""
OPERATION_TIMEOUT_S = 300.0
"""Default --timeout of start, stop and restart (a stop may wait out stop_timeout)."""
QUERY_TIMEOUT_S = 30.0
"""Default --timeout of the other commands (``logs -f`` has none)."""


class ControlError(Exception):
    """A control command cannot go on: one line for the user, and the exit code.

    Args:
        code: The exit code (see ``EXIT_CODES``).
        message: What went wrong, in one line.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds; got {text!r}") from None
    if not (math.isfinite(seconds) and 0 < seconds <= 86400):
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 86400; got {text}")
    return seconds


def _lines(text: str) -> int:
    try:
        lines = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of lines; got {text!r}") from None
    if not 1 <= lines <= 1000:
        raise argparse.ArgumentTypeError(f"must be from 1 to 1000; got {lines}")
    return lines


def _duration(text: str) -> float:
    from supervisor import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not 0 < seconds <= 7 * 86400:
        raise argparse.ArgumentTypeError(f"must be more than 0s and at most 7d; got {text}")
    return seconds


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("reaching the daemon")
    where.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help=f"its configuration (default: $HOSTVISOR_CONFIG, else {DEFAULT_CONFIG})",
    )
    where.add_argument("--work-dir", metavar="DIR", help="its work directory, instead of --config")
    where.add_argument("--address", metavar="HOST:PORT", help="reach it over TCP instead")
    where.add_argument("--tls-ca", metavar="FILE", help="with --address: the daemon's CA (PEM)")
    where.add_argument("--tls-cert", metavar="FILE", help="with --address: client certificate")
    where.add_argument("--tls-key", metavar="FILE", help="with --address: its private key")
    where.add_argument(
        "--tls-server-name", metavar="NAME", help="with --address: the name in its certificate"
    )
    where.add_argument(
        "--timeout", type=_seconds, metavar="SECONDS", help="give up after this long"
    )
    return common


def add_control_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the control commands to the ``hostvisor`` parser.

    Args:
        commands: The parser's subcommands.
    """
    common = _common()
    status = commands.add_parser(
        "status", parents=[common], help="show the agents of the running daemon"
    )
    status.add_argument("agents", nargs="*", metavar="AGENT", help="only these (default: all)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    for verb, what in (("start", "start"), ("stop", "stop"), ("restart", "restart")):
        operate = commands.add_parser(
            verb, parents=[common], help=f"{what} agents and wait for the outcome"
        )
        operate.add_argument("agents", nargs="*", metavar="AGENT")
        operate.add_argument(
            "--all",
            action="store_true",
            help="every agent" if verb == "stop" else "every enabled agent",
        )
    logs = commands.add_parser("logs", parents=[common], help="show an agent's log")
    logs.add_argument("agent", metavar="AGENT")
    logs.add_argument(
        "-n", "--lines", type=_lines, metavar="N", help="last N lines, 1 to 1000 (100; -f: 10)"
    )
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C ends)"
    )
    metrics = commands.add_parser(
        "metrics", parents=[common], help="show an agent's CPU, memory, disk and open files"
    )
    metrics.add_argument("agent", metavar="AGENT")
    metrics.add_argument(
        "--since", type=_duration, default=3600.0, metavar="DURATION", help="e.g. 10m (1h)"
    )
    metrics.add_argument("--json", action="store_true", help="print JSON instead of a table")
    config = commands.add_parser(
        "config", parents=[common], help="show the effective configuration (secrets hidden)"
    )
    config.add_argument(
        "section", nargs="?", choices=("daemon", "agent"), help="only this part (default: both)"
    )


def resolve_target(args: argparse.Namespace) -> Target:
    """Where the command finds the daemon (see the module docstring).

    Raises:
        ControlError: The configuration is unusable, or the options contradict each other.
    """
    from ._cli import EXIT_USAGE
    from ._ctl_client import local_target, remote_target

    tls_options = (args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    if args.address is not None:
        if args.config is not None or args.work_dir is not None:
            raise ControlError(
                EXIT_USAGE, "--address cannot be combined with --config or --work-dir"
            )
        return remote_target(args.address, *tls_options)
    if any(option is not None for option in tls_options):
        raise ControlError(
            EXIT_USAGE, "--tls-* options need --address (the control socket has no TLS)"
        )
    if args.work_dir is not None:
        return local_target(os.path.abspath(args.work_dir), None)
    path = args.config or os.environ.get("HOSTVISOR_CONFIG") or DEFAULT_CONFIG
    return local_target(None, path)


def run_control(args: argparse.Namespace) -> int:
    """Run one control command against the daemon; its exit code.

    Args:
        args: The parsed command line (``args.command`` in :data:`CONTROL_COMMANDS`).

    Returns:
        The exit code.
    """
    import trio

    from ._ctl_client import execute

    if args.command in ("start", "stop", "restart") and bool(args.agents) == bool(args.all):
        print(f"hostvisor {args.command}: name agents, or give --all", file=sys.stderr)
        return 2  # EXIT_USAGE
    try:
        target = resolve_target(args)
        return trio.run(execute, args, target)
    except ControlError as exc:
        print(f"hostvisor {args.command}: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:  # logs -f ends with Ctrl-C
        return 0
    except BrokenPipeError:  # `hostvisor logs x | head`
        _quiet_stdout()
        return 0


def _quiet_stdout() -> None:
    """After a broken pipe, send what is left of stdout nowhere (no second error at exit)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def uptime(seconds: float) -> str:
    """A short duration for the status table: ``45s``, ``12m05s``, ``3h02m``, ``5d03h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def size(value: int) -> str:
    """Bytes for a table: ``512B``, ``12.0KiB``, ``340.5MiB``, ``1.2GiB``."""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{int(amount)}{unit}" if unit == "B" else f"{amount:.1f}{unit}"
        amount /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as left-aligned columns (the first row is the header); no trailing blanks."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def shorten(text: str, most: int = 72) -> str:
    """One line of at most ``most`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= most else line[: most - 3] + "..."
