"""Small command line for the daemon's self-update trial, for service-manager units.

``python -m updater.boot recover --root /opt/hostvisor --state-dir /var/lib/hostvisor/updater``
    Finish or undo an interrupted update, counting a start of a daemon trial; prints the
    report as JSON. Exits with :data:`updater.RESTART_EXIT_CODE` if ``current`` was rolled
    back (the service manager then starts the restored version).
``python -m updater.boot confirm ...``
    Commit the daemon's trial (its health checks passed).
``python -m updater.boot rollback ...``
    Roll an open daemon trial back unconditionally: the ``OnFailure=`` rollback unit of
    ``updater/contrib/hostvisor.service`` runs this from the ``previous`` version.

The daemon itself calls the same library functions in-process; this tool is for the unit
files and for operators.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from ._config import UpdateConfig
from ._errors import UpdaterError
from ._manager import UpdateManager
from ._recovery import RecoveryReport
from ._selfupdate import RESTART_EXIT_CODE, DaemonInstall, force_rollback, needs_restart

__all__ = ["main"]


def _report(report: RecoveryReport | None) -> str:
    if report is None:
        return json.dumps({"outcome": None})
    return json.dumps(
        {
            "component": report.component,
            "outcome": report.outcome.value,
            "reason": report.reason.value if report.reason else None,
            "version": report.version,
            "phase": report.journal_phase.value,
        }
    )


async def _run(args: argparse.Namespace) -> int:
    state = Path(args.state_dir)
    config = UpdateConfig(
        state_dir=state,
        download_dir=state / "downloads",
        backup_dir=state / "backups",
        platform="any",
        max_backups=args.max_backups,
    )
    install = DaemonInstall(Path(args.root))
    manager = UpdateManager(config, daemon=install)
    if args.command == "recover":
        report = await manager.recover()
    elif args.command == "confirm":
        report = await install.confirm(manager)
    else:
        report = await force_rollback(manager)
    print(_report(report))
    return RESTART_EXIT_CODE if needs_restart(report) and args.command != "rollback" else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m updater.boot``.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        0, :data:`RESTART_EXIT_CODE` when a restart is needed, or 2 on an error (a
        ``RollbackError`` means a human is needed; the journal is kept).
    """
    parser = argparse.ArgumentParser(prog="python -m updater.boot", description=__doc__)
    parser.add_argument("command", choices=["recover", "confirm", "rollback"])
    parser.add_argument("--root", required=True, help="install root (versions/, current)")
    parser.add_argument("--state-dir", required=True, help="the updater's state directory")
    parser.add_argument("--max-backups", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        return trio.run(_run, args)
    except UpdaterError as exc:
        print(f"error: {exc.code} {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
