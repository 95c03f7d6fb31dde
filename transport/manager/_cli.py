"""The command line: ``hostvisor-manager`` (also ``python -m transport.manager``).

Commands::

    hostvisor-manager run [--config FILE]          (also the original's -config FILE)
    hostvisor-manager check-config [--config FILE]
    hostvisor-manager create-user NAME --role admin|operator|viewer [--email ADDRESS]
    hostvisor-manager users
    hostvisor-manager disable-user NAME
    hostvisor-manager enable-user NAME
    hostvisor-manager reset-password NAME
    hostvisor-manager --version

Every command takes ``--config FILE``; without it the defaults apply (SQLite in
``$HOSTVISOR_MANAGER_DATA`` or ``./data``). ``hostvisor-manager -config FILE``, the
original Manager's invocation, means ``run``.

``run`` serves in the foreground (see :mod:`transport.manager._run`) until SIGTERM or
SIGINT. The user commands open the database directly (migrating it if needed, so they
bootstrap an empty one), also while a Manager runs on it, and write an audit entry with
the actor ``cli``. A password is read from the terminal twice (not echoed) when standard
input is a terminal, else as one line of standard input (``printf '%s\\n' "$PW" |
hostvisor-manager create-user ...``); it needs at least 8 characters.

Exit codes (:data:`EXIT_CODES`):

====  ================================================================
0     success (Manager ended by SIGTERM/SIGINT)
1     unexpected internal error
2     bad command line
3     configuration invalid or unreadable
4     the database cannot be opened or migrated, or failed
5     a listener cannot be bound (address in use, not permitted)
7     bad input: user name, password (too short, not repeated the same)
8     no such user
9     the user exists already
====  ================================================================
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ._config import ManagerConfig, default_config, load_config
from ._errors import ConflictError, ManagerConfigError, NotFoundError, StoreError
from ._model import Role, User, UserStatus

if TYPE_CHECKING:
    from ._store import Store

__all__ = ["EXIT_CODES", "main", "version"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_STORE = 4
EXIT_LISTEN = 5
EXIT_INPUT = 7
EXIT_NO_USER = 8
EXIT_EXISTS = 9

#: Every exit code of the command line and its meaning.
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_ERROR: "unexpected internal error",
    EXIT_USAGE: "bad command line",
    EXIT_CONFIG: "configuration invalid or unreadable",
    EXIT_STORE: "the database cannot be opened, migrated or used",
    EXIT_LISTEN: "a listener cannot be bound (address in use, not permitted)",
    EXIT_INPUT: "bad user name or password",
    EXIT_NO_USER: "no such user",
    EXIT_EXISTS: "the user exists already",
}

AUDIT_ACTOR = "cli"
"""The actor of the audit entries the user commands write."""
MAX_PASSWORD = 128

logger = logging.getLogger("hostvisor.manager")


def version() -> str:
    """The installed distribution's version (``hostvisor``)."""
    from importlib.metadata import PackageNotFoundError, version as installed

    try:
        return installed("hostvisor")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


class _Refused(Exception):
    """A user command cannot do what it was asked; carries the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _parser() -> argparse.ArgumentParser:
    epilog = "exit codes:\n" + "\n".join(f"  {c}  {m}" for c, m in EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog="hostvisor-manager",
        description="The hostvisor Manager: gRPC for daemons, the REST API, the fleet database.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hostvisor-manager {version()}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", "-config", "-c", metavar="FILE", help="manager.yaml (default: no file)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", parents=[common], help="serve in the foreground")
    commands.add_parser("check-config", parents=[common], help="validate the configuration")
    create = commands.add_parser("create-user", parents=[common], help="add a user")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--role", required=True, choices=[str(role) for role in Role])
    create.add_argument("--email", default="", metavar="ADDRESS")
    commands.add_parser("users", parents=[common], help="list the users")
    for command, text in (
        ("disable-user", "stop a user from logging in (their tokens stop working)"),
        ("enable-user", "let a disabled user log in again"),
        ("reset-password", "set a user's password"),
    ):
        commands.add_parser(command, parents=[common], help=text).add_argument(
            "name", metavar="NAME"
        )
    return parser


def _arguments(argv: Sequence[str]) -> list[str]:
    """The original's ``manager -config FILE`` means ``run -config FILE``."""
    arguments = list(argv)
    if arguments and arguments[0] in ("-config", "--config", "-c"):
        arguments.insert(0, "run")
    return arguments


def _config(path: str | None, *, warn: bool = True) -> ManagerConfig | None:
    """Load the configuration and print its warnings; print the errors and return None."""
    try:
        config = load_config(path) if path is not None else default_config()
    except ManagerConfigError as exc:
        where = exc.source or "configuration"
        print(f"{where}: {len(exc.issues)} configuration error(s)", file=sys.stderr)
        for at, message in exc.issues:
            print(f"  {at}: {message}" if at else f"  {message}", file=sys.stderr)
        return None
    for warning in config.warnings if warn else ():
        print(f"{path or 'configuration'}: warning: {warning}", file=sys.stderr)
    return config


def _check(args: argparse.Namespace) -> int:
    config = _config(args.config)
    if config is None:
        return EXIT_CONFIG
    tls = "TLS" if config.grpc.tls.enabled else "plaintext"
    print(
        f"{args.config or 'defaults'}: OK (HTTP {config.server.address}, gRPC"
        f" {config.grpc.address} {tls}, {config.database.driver} {config.database.display_url})"
    )
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    config = _config(args.config)
    if config is None:
        return EXIT_CONFIG
    import trio

    from transport import ListenError

    from ._run import run_manager, setup_logging

    setup_logging(config)
    failures: list[tuple[int, BaseException]] = []
    try:
        trio.run(run_manager, config)
    except* ManagerConfigError as group:  # a TLS file that became unreadable since the check
        failures += [(EXIT_CONFIG, exc) for exc in group.exceptions]
    except* StoreError as group:
        failures += [(EXIT_STORE, exc) for exc in group.exceptions]
    except* ListenError as group:
        failures += [(EXIT_LISTEN, exc) for exc in group.exceptions]
    for _, exc in failures:
        logger.error("%s", exc)
    return failures[0][0] if failures else EXIT_OK


# --------------------------------------------------------------------------- users


@contextmanager
def _opened(config: ManagerConfig) -> Iterator[Store]:
    from ._run import open_store

    store = open_store(config)
    try:
        yield store
    finally:
        store.close()


def _password(name: str) -> str:
    """A new password: twice from the terminal, else one line of standard input."""
    from ._http._users import MIN_PASSWORD

    if sys.stdin.isatty():
        password = getpass.getpass(f"Password for {name}: ")
        if getpass.getpass("Repeat it: ") != password:
            raise _Refused("the passwords differ", EXIT_INPUT)
    else:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password.removesuffix("\r")
    if len(password) < MIN_PASSWORD:
        raise _Refused(f"a password needs at least {MIN_PASSWORD} characters", EXIT_INPUT)
    if len(password) > MAX_PASSWORD:
        raise _Refused(f"a password has at most {MAX_PASSWORD} characters", EXIT_INPUT)
    return password


def _hash(config: ManagerConfig, store: Store, password: str) -> str:
    """Hash a password as the REST API does (Argon2id with its parameters)."""
    import trio

    from ._http._auth import Authenticator
    from ._run import auth_settings

    authenticator = Authenticator(store, auth_settings(config))
    return trio.run(authenticator.hash_password, password)


def _user(store: Store, name: str) -> User:
    try:
        return store.get_user_by_name(name)
    except NotFoundError:
        raise _Refused(f"no such user: {name}", EXIT_NO_USER) from None


def _audit(store: Store, action: str, user: User, **detail: str) -> None:
    store.audit(
        AUDIT_ACTOR,
        action,
        target=f"user:{user.id}",
        source_ip="",
        outcome="ok",
        detail={"username": user.username, **detail},
        now=time.time(),
    )


def _create_user(config: ManagerConfig, args: argparse.Namespace) -> int:
    from ._http._users import USERNAME_RULE, valid_username

    name: str = args.name
    if not valid_username(name):
        raise _Refused(f"a user name has {USERNAME_RULE}; got {name!r}", EXIT_INPUT)
    email = args.email.strip()
    if email and (email.count("@") != 1 or email.startswith("@") or email.endswith("@")):
        raise _Refused(f"not an e-mail address: {email!r}", EXIT_INPUT)
    with _opened(config) as store:
        try:
            store.get_user_by_name(name)
        except NotFoundError:
            pass
        else:
            raise _Refused(f"user {name} exists already", EXIT_EXISTS)
        password = _password(name)
        hashed = _hash(config, store, password)
        try:
            role = Role(args.role)
            user = store.create_user(name, hashed, role=role, email=email, now=time.time())
        except ConflictError:
            raise _Refused(f"user {name} exists already", EXIT_EXISTS) from None
        _audit(store, "user.create", user, role=str(user.role))
    print(f"created user {user.username} (id {user.id}, role {user.role})")
    return EXIT_OK


def _list_users(config: ManagerConfig) -> int:
    users: list[User] = []
    with _opened(config) as store:
        page = 1
        while True:
            found = store.list_users(page=page, page_size=100)
            users += found.items
            if page >= found.pages:
                break
            page += 1
    width = max([len(user.username) for user in users] + [8])
    print(f"{'ID':>5}  {'USERNAME':<{width}}  {'ROLE':<8}  {'STATUS':<8}  LAST LOGIN")
    for user in users:
        login = "-"
        if user.last_login_at is not None:
            login = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(user.last_login_at))
            login += f" from {user.last_login_ip}" if user.last_login_ip else ""
        print(
            f"{user.id:>5}  {user.username:<{width}}  {user.role!s:<8}  {user.status!s:<8}  {login}"
        )
    return EXIT_OK


def _set_status(config: ManagerConfig, name: str, status: UserStatus) -> int:
    verb = "disable" if status is UserStatus.DISABLED else "enable"
    with _opened(config) as store:
        user = _user(store, name)
        store.set_user_status(user.id, status, now=time.time())
        _audit(store, f"user.{verb}", user)
    print(f"user {name} {verb}d")
    return EXIT_OK


def _reset_password(config: ManagerConfig, name: str) -> int:
    with _opened(config) as store:
        user = _user(store, name)
        hashed = _hash(config, store, _password(name))
        store.set_password(user.id, hashed, now=time.time())
        _audit(store, "user.reset_password", user)
    print(f"password of {name} changed (their login tokens stop working)")
    return EXIT_OK


def _users(args: argparse.Namespace) -> int:
    config = _config(args.config, warn=False)  # the warnings are about serving
    if config is None:
        return EXIT_CONFIG
    try:
        if args.command == "create-user":
            return _create_user(config, args)
        if args.command == "users":
            return _list_users(config)
        if args.command == "reset-password":
            return _reset_password(config, args.name)
        status = UserStatus.DISABLED if args.command == "disable-user" else UserStatus.ACTIVE
        return _set_status(config, args.name, status)
    except _Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except ManagerConfigError as exc:  # the JWT secret file, read for the password settings
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StoreError as exc:
        print(f"error: the database failed: {exc}", file=sys.stderr)
        return EXIT_STORE
    except (EOFError, KeyboardInterrupt):
        print("\nerror: no password given", file=sys.stderr)
        return EXIT_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code (:data:`EXIT_CODES`).
    """
    args = _parser().parse_args(_arguments(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "check-config":
            return _check(args)
        if args.command == "run":
            return _run(args)
        return _users(args)
    except KeyboardInterrupt:  # pragma: no cover - SIGINT before the handler is installed
        return EXIT_OK
    except Exception:
        logging.basicConfig()
        logger.exception("unexpected error")
        return EXIT_ERROR
    finally:
        sys.stdout.flush()
