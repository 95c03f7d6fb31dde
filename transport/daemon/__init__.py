"""The reference daemon program: ``hostvisor``.

The composition root of the project: it reads ``daemon.yaml`` (every section: the agents
through :func:`supervisor.parse_agents`'s builder, ``update`` through :mod:`updater`,
``collectors`` through :mod:`collectors`), supervises the agents with a
:class:`supervisor.Supervisor` that leaves them running across its own restarts (their
records in ``{work_dir}/state.json``, the work directory locked against a second daemon),
runs the collectors and the updater, and handles the signals.

Run it with ``hostvisor run --config daemon.yaml`` (or ``python -m transport.daemon``).
Programs may also load the configuration the same way::

    from transport.daemon import load_config

    config = load_config("daemon.yaml")       # raises supervisor.ConfigError
    print([spec.id for spec in config.agents])
"""

# First, before anything imports trio: ssl and hmac load only when used (see _lean).
from . import _lean as _lean
from ._cli import EXIT_CODES as EXIT_CODES, main as main, version as version
from ._config import (
    DaemonConfig as DaemonConfig,
    DaemonSpec as DaemonSpec,
    check_paths as check_paths,
    dump_config as dump_config,
    load_config as load_config,
    parse_config as parse_config,
)
from ._control import UpdateControl as UpdateControl
from ._errors import DaemonError as DaemonError, DaemonLockedError as DaemonLockedError
from ._run import Daemon as Daemon
from ._state import (
    DaemonLock as DaemonLock,
    StateFile as StateFile,
    read_state as read_state,
    write_state as write_state,
)

__all__ = [
    "main",
    "version",
    "EXIT_CODES",
    "Daemon",
    "DaemonConfig",
    "DaemonSpec",
    "load_config",
    "parse_config",
    "check_paths",
    "dump_config",
    "StateFile",
    "DaemonLock",
    "read_state",
    "write_state",
    "UpdateControl",
    "DaemonError",
    "DaemonLockedError",
]
