"""Building agents from configuration documents: entries in, :class:`AgentSpec` out.

This is the library's spec builder. Programs that keep agents in a file of their own (the
reference daemon's ``daemon.yaml`` is one, see :mod:`transport.daemon`) hand it the
``agents`` list and the ``agent_defaults`` section as parsed from YAML, TOML or JSON:

* :func:`parse_agents` validates and builds every agent, or raises one
  :class:`ConfigError` listing every problem with its path (``agents[1].restart.policy``).
* :func:`read_agents` does the same but records the problems in an
  :class:`~supervisor.schema.Issues` so that a program can report them together with
  its own sections' problems.
* :func:`check_agent_paths` looks at the filesystem: binaries, config files, work
  directories. It returns issues instead of raising.
* :func:`dump_agent` is the inverse: a plain entry (durations as ``"1h30m"``, enums as
  their values, signals as ``"TERM"``) from which the builder makes an equal spec.

How agents are built: ``agent_defaults`` and each agent are read into *layers* (the
keys they set, converted), merged (nested blocks and ``env`` key by key, anything else,
``args`` included, replaced), and only then checked for required fields and turned into
an :class:`AgentSpec`. So an error in ``agent_defaults`` is reported once, under
``agent_defaults``, and an agent's own error under ``agents[i]``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from typing import Any

from ._config_fields import (
    AGENT,
    AGENT_DEFAULTS,
    HEALTH_CHECK,
    LOG,
    RESTART,
    Block,
    Field,
    Issues,
    merge_layers,
    read_block,
    write_block,
)
from ._duration import format_duration, show
from ._errors import ConfigError, ConfigIssue
from ._spec import (
    DEFAULT_WORK_DIR,
    AgentSpec,
    AgentType,
    HealthCheckSpec,
    LogSpec,
    RestartSpec,
    default_args,
)

__all__ = [
    "check_agent_paths",
    "creatable_dir",
    "dump_agent",
    "parse_agents",
    "read_agents",
    "script_interpreter",
]

#: The id of the agent of a single-agent ``agent`` section (``single=True``).
LEGACY_ID = "agent"


def parse_agents(
    agents: object,
    *,
    defaults: object = None,
    base_dir: str | None = None,
    work_dir: str = DEFAULT_WORK_DIR,
    path: str = "agents",
) -> tuple[AgentSpec, ...]:
    """Validate agent entries and build their specs.

    Args:
        agents: A list of agent entries (mappings), as parsed from a document; None is
            an empty list.
        defaults: The ``agent_defaults`` section merged under every entry, or None.
        base_dir: The directory relative paths are resolved against (default: the
            current directory).
        work_dir: The supervisor's work directory: agents without a ``work_dir`` get
            ``{work_dir}/agents/{id}``.
        path: Where the list is in the document, for messages.

    Returns:
        The specs, in document order, with defaults merged in and every path absolute.

    Raises:
        ConfigError: an entry is invalid; :attr:`ConfigError.issues` lists every
            problem, each with its path (``agents[2].restart.policy``).
    """
    issues = Issues()
    base = os.path.abspath(base_dir if base_dir is not None else os.getcwd())
    built = read_agents(agents, defaults, base=base, work_dir=work_dir, issues=issues, path=path)
    if issues.items:
        raise ConfigError(issues.items)
    return tuple(spec for _, spec in built)


def read_agents(
    agents: object,
    defaults: object,
    *,
    base: str,
    work_dir: str,
    issues: Issues,
    path: str = "agents",
    single: bool = False,
) -> list[tuple[str, AgentSpec]]:
    """Build what can be built of agent entries; record every problem in ``issues``.

    Args:
        agents: The list of entries (or, with ``single``, one entry), None for none.
        defaults: The ``agent_defaults`` section, or None.
        base: The absolute directory relative paths are resolved against.
        work_dir: The supervisor's work directory (default agent work directories).
        issues: Where problems are recorded, with their paths.
        path: Where the list (or the single entry) is in the document.
        single: ``agents`` is one entry at ``path`` (a legacy single-agent section,
            whose id defaults to ``"agent"``), not a list.

    Returns:
        ``(path, spec)`` for every entry that could be built, in document order.
    """
    layer_defaults = read_block(
        defaults,
        "agent_defaults",
        AGENT_DEFAULTS,
        base,
        issues,
        refused={"id": "unknown key (ids cannot have a default)"},
    )
    _check_backoff({}, layer_defaults.get("restart", {}), "agent_defaults", issues)
    sources: list[tuple[str, object]] = []
    if single:
        sources = [(path, agents)] if agents is not None else []
    elif isinstance(agents, list):
        sources = [(f"{path}[{index}]", raw) for index, raw in enumerate(agents)]
    elif agents is not None:
        issues.add(path, f"expected a list of agents; got {show(agents)}")
    built: list[tuple[str, AgentSpec]] = []
    first_at: dict[str, str] = {}
    for label, raw in sources:
        layer = read_block(raw, label, AGENT, base, issues)
        if single and isinstance(raw, Mapping) and raw.get("id") is None:
            layer["id"] = LEGACY_ID
        spec = _build_agent(label, layer_defaults, layer, work_dir, issues)
        if spec is None:
            continue
        if spec.id in first_at:
            issues.add(
                f"{label}.id", f"duplicate id {show(spec.id)} (first at {first_at[spec.id]})"
            )
        else:
            first_at[spec.id] = label
        built.append((label, spec))
    return built


def dump_agent(spec: AgentSpec) -> dict[str, Any]:
    """Write an agent back as a plain entry from which :func:`parse_agents` builds it again.

    The entry is complete (defaults merged in, ``args`` and ``work_dir`` explicit);
    durations are strings such as ``"1h30m"``, enums their values, signals names such as
    ``"TERM"``; None values are left out.
    """
    return write_block(spec, AGENT)


def _attrs(layer: Mapping[str, Any], fields: Mapping[str, Field | Block]) -> dict[str, Any]:
    """Rename a flat layer's keys to the spec's attribute names."""
    return {fields[key].attr: value for key, value in layer.items() if value is not None}


def _check_backoff(
    inherited: Mapping[str, Any], own: Mapping[str, Any], path: str, issues: Issues
) -> None:
    """Report ``backoff_max < backoff_base`` once, at the layer that set one of them.

    ``own`` is the ``restart`` block of the layer at ``path``; ``inherited`` the block
    it is merged over (already checked). A layer that sets neither key, or set one to
    an invalid value (already reported), has nothing new to report.
    """
    keys = {"backoff_base", "backoff_max"}
    reported = [f"{where}.restart.{key}" for where in (path, "agent_defaults") for key in keys]
    if not keys & own.keys() or any(issues.has(where) for where in reported):
        return
    restart = {**inherited, **own}
    defaults = RestartSpec()
    base = restart.get("backoff_base", defaults.backoff_base_s)
    cap = restart.get("backoff_max", defaults.backoff_max_s)
    if cap >= base:
        return
    if "backoff_max" in own:
        message = f"must be at least backoff_base ({format_duration(base)})"
        issues.add(f"{path}.restart.backoff_max", f"{message}; got {format_duration(cap)}")
    else:
        message = f"must be at most backoff_max ({format_duration(cap)})"
        issues.add(f"{path}.restart.backoff_base", f"{message}; got {format_duration(base)}")


def _build_agent(
    label: str,
    defaults: Mapping[str, Any],
    layer: Mapping[str, Any],
    supervisor_work_dir: str,
    issues: Issues,
) -> AgentSpec | None:
    """Merge an agent over the defaults and build its spec, or None if it cannot be."""
    _check_backoff(defaults.get("restart", {}), layer.get("restart", {}), label, issues)
    merged = merge_layers(defaults, layer)
    missing = [key for key in ("id", "binary_path") if key not in merged]
    for key in missing:
        # Absent from the merged layer because it was invalid: that was reported already.
        reported = (label, f"{label}.{key}", f"agent_defaults.{key}")
        if not any(issues.has(path) for path in reported):
            issues.add(f"{label}.{key}", "required field is missing")
    if missing:
        return None
    agent_id: str = merged["id"]
    agent_type: AgentType = merged.get("type", AgentType.CUSTOM)
    work_dir = merged.get("work_dir") or os.path.join(supervisor_work_dir, "agents", agent_id)
    args = merged.get("args")
    if args is None:
        args = default_args(agent_type, merged.get("config_file"), work_dir)
    blocks = {name: merged.get(name, {}) for name in ("health_check", "restart", "log")}
    scalars = {key: value for key, value in merged.items() if key not in blocks}
    scalars.update(work_dir=work_dir, args=args)
    return AgentSpec(
        **_attrs(scalars, AGENT),
        health_check=HealthCheckSpec(**_attrs(blocks["health_check"], HEALTH_CHECK)),
        restart=RestartSpec(**_attrs(blocks["restart"], RESTART)),
        log=LogSpec(**_attrs(blocks["log"], LOG)),
    )


def check_agent_paths(agents: Iterable[tuple[str, AgentSpec]]) -> list[ConfigIssue]:
    """Check what the builder cannot: the agents' files and directories on this machine.

    For every enabled agent: the binary exists, is a regular file and is executable (and,
    for a script, so is the interpreter its ``#!`` line names); the config file, if
    given, exists; the work directory exists and is writable or can be created. Nothing
    is created. Disabled agents are not checked (they may well be installed later).

    Args:
        agents: ``(path, spec)`` pairs, as :func:`read_agents` returns them.

    Returns:
        The problems found, with paths such as ``agents[2].binary_path``; empty if none.
    """
    issues: list[ConfigIssue] = []

    def check(path: str, message: str | None) -> None:
        if message is not None:
            issues.append(ConfigIssue(path, message))

    for label, spec in agents:
        if not spec.enabled:
            continue  # may well be installed later; checked when enabled
        check(f"{label}.binary_path", _executable(spec.binary_path))
        if spec.config_file is not None:
            check(f"{label}.config_file", _stat_problem(spec.config_file)[1])
        check(f"{label}.work_dir", creatable_dir(spec.work_dir))
    return issues


def _stat_problem(path: str) -> tuple[os.stat_result | None, str | None]:
    try:
        return os.stat(path), None
    except FileNotFoundError:
        return None, f"not found: {path!r}"
    except OSError as exc:
        return None, f"cannot be accessed: {path!r} ({exc.strerror or exc})"


def _executable(path: str) -> str | None:
    status, problem = _stat_problem(path)
    if status is None:
        return problem
    if not stat.S_ISREG(status.st_mode):
        return f"not a regular file: {path!r}"
    if not os.access(path, os.X_OK):
        return f"not executable: {path!r}"
    interpreter = script_interpreter(path)
    if interpreter is not None and _executable(interpreter) is not None:
        return f"its interpreter {interpreter!r} (its #! line) is missing or not executable"
    return None


def script_interpreter(path: str) -> str | None:
    """The interpreter a script names on its ``#!`` line, or None (not a script, unreadable)."""
    try:
        with open(path, "rb") as file:
            head = file.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    return os.fsdecode(words[0]) if words else None


def creatable_dir(path: str) -> str | None:
    """Why ``path`` is not a writable directory and cannot be created; None if it is fine."""
    try:
        status = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass  # find the nearest ancestor that exists
    except OSError as exc:
        return f"cannot be accessed: {path!r} ({exc.strerror or exc})"
    else:
        if not stat.S_ISDIR(status.st_mode):
            return f"not a directory: {path!r}"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"not writable: {path!r}"
        return None
    ancestor = path
    while True:
        ancestor = os.path.dirname(ancestor)
        try:
            status = os.stat(ancestor)
        except (FileNotFoundError, NotADirectoryError):
            continue  # the root always exists, so this ends
        except OSError as exc:
            return f"cannot be created: {ancestor!r} cannot be accessed ({exc.strerror})"
        if not stat.S_ISDIR(status.st_mode):
            return f"cannot be created: {ancestor!r} is not a directory"
        if not os.access(ancestor, os.W_OK | os.X_OK):
            return f"cannot be created: {ancestor!r} is not writable"
        return None
