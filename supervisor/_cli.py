"""The command line: ``python -m supervisor`` (also installed as ``hostvisor``).

Commands::

    python -m supervisor run --config FILE [--work-dir DIR]
    python -m supervisor run --example [--work-dir DIR]
    python -m supervisor check-config FILE [--work-dir DIR]

``run`` supervises in the foreground in daemon mode: agents left running by an earlier
run are adopted, SIGHUP re-reads the configuration and applies the difference, SIGTERM
and SIGINT end the daemon and leave the agents running (unless
``daemon.stop_agents_on_exit`` is true).

Exit codes (:data:`EXIT_CODES`):

====  ================================================================
0     success (configuration valid; daemon ended by SIGTERM/SIGINT)
1     unexpected internal error
2     bad command line
3     configuration invalid or unreadable (D1001/D1002)
4     another daemon holds this work directory, or its state is unusable
====  ================================================================
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

import trio

from ._config import load_config
from ._errors import ConfigError, DaemonLockedError, StateFileError
from ._spec import Config
from ._supervisor import Supervisor

__all__ = ["EXIT_CODES", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_LOCKED = 4

#: Every exit code of the command line and its meaning.
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_ERROR: "unexpected internal error",
    EXIT_USAGE: "bad command line",
    EXIT_CONFIG: "configuration invalid or unreadable",
    EXIT_LOCKED: "work directory locked by another daemon, or state file unusable",
}

logger = logging.getLogger("supervisor")


def _parser() -> argparse.ArgumentParser:
    epilog = "exit codes:\n" + "\n".join(f"  {c}  {m}" for c, m in EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog="python -m supervisor",
        description="Keep agent processes running (hostvisor).",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    return parser


def example_config_path() -> str:
    """The path of the bundled example configuration."""
    from importlib import resources  # only for --example: the daemon stays lean

    return str(resources.files("supervisor.examples").joinpath("daemon.yaml"))


def _load(path: str, work_dir: str | None) -> Config | None:
    try:
        config = load_config(path, work_dir=work_dir)
    except ConfigError as exc:
        print(f"{path}: {len(exc.issues)} configuration error(s) [{exc.code}]", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return None
    for warning in config.warnings:
        print(f"{path}: warning: {warning}", file=sys.stderr)
    return config


def _check(args: argparse.Namespace) -> int:
    config = _load(args.file, args.work_dir)
    if config is None:
        return EXIT_CONFIG
    enabled = sum(spec.enabled for spec in config.agents)
    print(f"{args.file}: OK ({len(config.agents)} agent(s), {enabled} enabled)")
    return EXIT_OK


def _setup_logging(config: Config) -> None:
    level = getattr(logging, config.daemon.log_level.upper(), logging.INFO)
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


async def _serve(config: Config, path: str, work_dir: str | None) -> None:
    supervisor = Supervisor(config, daemon_mode=True, subreaper=True)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            logger.info(
                "supervising %d agent(s) from %s; pid %d", len(config.agents), path, os.getpid()
            )
            async for signum in signals:
                if signum != signal.SIGHUP:
                    logger.info("received %s; exiting", signal.Signals(signum).name)
                    break
                await _reload(supervisor, path, work_dir)
            nursery.cancel_scope.cancel()


async def _reload(supervisor: Supervisor, path: str, work_dir: str | None) -> None:
    logger.info("SIGHUP: re-reading %s", path)
    try:
        config = await trio.to_thread.run_sync(lambda: load_config(path, work_dir=work_dir))
    except ConfigError as exc:
        logger.error("reload refused, keeping the running configuration: %s", exc)
        return
    if config.daemon.work_dir != supervisor.config.daemon.work_dir:
        logger.warning("daemon.work_dir changed; it takes effect at the next daemon start")
    plan = await supervisor.reload(config)
    logger.info(
        "reload applied: %d added, %d removed, %d restarted, %d updated, %d unchanged",
        len(plan.add),
        len(plan.remove),
        len(plan.restart),
        len(plan.update),
        len(plan.unchanged),
    )


def _write_pid_file(path: str | None) -> None:
    if path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            f.write(f"{os.getpid()}\n")


def _run(args: argparse.Namespace) -> int:
    path = example_config_path() if args.example else args.config
    work_dir = args.work_dir
    if args.example and work_dir is None:
        work_dir = os.path.abspath(".hostvisor-example")
    config = _load(path, work_dir)
    if config is None:
        return EXIT_CONFIG
    _setup_logging(config)
    refused: list[BaseException] = []
    try:
        _write_pid_file(config.daemon.pid_file)
        trio.run(_serve, config, path, work_dir)
    except* (DaemonLockedError, StateFileError) as group:
        refused.extend(group.exceptions)
    finally:
        if config.daemon.pid_file:
            try:
                os.unlink(config.daemon.pid_file)
            except OSError:
                pass
    for exc in refused:
        logger.error("%s", exc)
    return EXIT_LOCKED if refused else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            return _check(args)
        return _run(args)
    except KeyboardInterrupt:  # pragma: no cover - SIGINT before the handler is installed
        return EXIT_OK
    except Exception:
        logger.exception("unexpected error")
        return EXIT_ERROR
