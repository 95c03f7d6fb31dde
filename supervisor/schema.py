"""The table-driven schema walker the agent builder uses, for programs' own sections.

A program that keeps agents in a configuration file of its own usually has other sections
too. Describing them with the same tables gives them the same behaviour as agent entries:
every problem found at once, each with its path (``daemon.log_level``), unknown keys with a
suggestion, null meaning "not set", and a writer that is the reader's inverse. The
reference daemon (:mod:`transport.daemon`) describes its ``daemon`` section this way::

    from supervisor.schema import BOOLEAN, PATH, Field, Issues, read_block

    DAEMON = {"work_dir": Field("work_dir", PATH), "verbose": Field("verbose", BOOLEAN)}
    issues = Issues()
    layer = read_block({"work_dir": "run", "verbos": True}, "daemon", DAEMON, "/srv", issues)
    # layer == {"work_dir": "/srv/run"}; issues.items[0].path == "daemon.verbos"

A :class:`Kind` converts one value (``read(value, base_dir)`` raising :class:`Invalid`) and
writes it back; :class:`Field` binds a document key to an attribute and a kind;
:class:`Block` nests a table. Durations and sizes use :func:`supervisor.parse_duration`
and :func:`supervisor.parse_size`.
"""

from ._config import (
    creatable_dir as creatable_dir,
    read_agents as read_agents,
    script_interpreter as script_interpreter,
)
from ._config_fields import (
    BOOLEAN as BOOLEAN,
    DURATION as DURATION,
    LOG_LEVEL as LOG_LEVEL,
    PATH as PATH,
    STRING as STRING,
    Block as Block,
    Field as Field,
    Invalid as Invalid,
    Issues as Issues,
    Kind as Kind,
    join as join,
    merge_layers as merge_layers,
    read_block as read_block,
    unknown_key as unknown_key,
    write_block as write_block,
)
from ._duration import show as show

__all__ = [
    "Kind",
    "Field",
    "Block",
    "Invalid",
    "Issues",
    "read_block",
    "write_block",
    "merge_layers",
    "join",
    "unknown_key",
    "BOOLEAN",
    "STRING",
    "PATH",
    "DURATION",
    "LOG_LEVEL",
    "read_agents",
    "creatable_dir",
    "script_interpreter",
    "show",
]
