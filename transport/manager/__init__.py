"""The reference Manager: gRPC for daemons, a database of the fleet, and the REST API.

Run it with ``hostvisor-manager run [--config manager.yaml]`` (or ``python -m
transport.manager``): with no configuration it serves gRPC on 9090 and HTTP on 8080 and
keeps the fleet in SQLite under ``./data``. Programs may run it too::

    import trio
    from transport.manager import load_config, run_manager

    trio.run(run_manager, load_config("manager.yaml"))   # until SIGTERM or SIGINT

Its parts: :class:`Store` (the database, SQLite or PostgreSQL), the gRPC service and its
ingest, :class:`DaemonPool` (the clients to the nodes' daemons), the REST API
(``build_app``), the jobs (offline detection, retention), and :func:`serve_manager`, which
starts them all. Every name but the errors is loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._errors import (
    ConflictError as ConflictError,
    DaemonUnreachableError as DaemonUnreachableError,
    ManagerConfigError as ManagerConfigError,
    ManagerError as ManagerError,
    NotFoundError as NotFoundError,
    StoreError as StoreError,
)

if TYPE_CHECKING:
    from ._cli import EXIT_CODES as EXIT_CODES, main as main
    from ._config import (
        check_files as check_files,
        default_config as default_config,
        dump_config as dump_config,
        jwt_secret as jwt_secret,
        load_config as load_config,
        parse_config as parse_config,
    )
    from ._config_spec import ManagerConfig as ManagerConfig
    from ._http._app import build_app as build_app, serve_http as serve_http
    from ._jobs import Jobs as Jobs, Schedule as Schedule, parse_schedule as parse_schedule
    from ._pool import DaemonPool as DaemonPool
    from ._run import (
        Listening as Listening,
        open_store as open_store,
        run_manager as run_manager,
        serve_manager as serve_manager,
    )
    from ._store import Store as Store

_LAZY: dict[str, str] = {
    "EXIT_CODES": "._cli",
    "main": "._cli",
    "check_files": "._config",
    "default_config": "._config",
    "dump_config": "._config",
    "jwt_secret": "._config",
    "load_config": "._config",
    "parse_config": "._config",
    "ManagerConfig": "._config_spec",
    "build_app": "._http._app",
    "serve_http": "._http._app",
    "Jobs": "._jobs",
    "Schedule": "._jobs",
    "parse_schedule": "._jobs",
    "DaemonPool": "._pool",
    "Listening": "._run",
    "open_store": "._run",
    "run_manager": "._run",
    "serve_manager": "._run",
    "Store": "._store",
}


def __getattr__(name: str) -> object:
    """Load a public name's module on first use."""
    try:
        module_name = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'transport.manager' has no attribute {name!r}") from None
    value: object = getattr(importlib.import_module(module_name, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "main",
    "EXIT_CODES",
    "run_manager",
    "serve_manager",
    "Listening",
    "ManagerConfig",
    "load_config",
    "parse_config",
    "default_config",
    "check_files",
    "dump_config",
    "jwt_secret",
    "open_store",
    "Store",
    "DaemonPool",
    "build_app",
    "serve_http",
    "Jobs",
    "Schedule",
    "parse_schedule",
    "ManagerError",
    "ManagerConfigError",
    "StoreError",
    "NotFoundError",
    "ConflictError",
    "DaemonUnreachableError",
]
