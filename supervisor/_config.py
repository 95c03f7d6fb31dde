"""Loading and validating ``daemon.yaml`` (004 section 5): document in, :class:`Config` out.

Three layers, from pure to IO:

* :func:`parse_config` validates a document that is already a Python mapping. It is
  pure apart from resolving relative paths against a base directory and looking bare
  command names up on ``PATH``. It never stops at the first problem: every section is
  read as far as it can be (see :mod:`supervisor._config_fields`), and all problems
  are raised together as one :class:`ConfigError` whose issues carry paths such as
  ``agents[1].restart.policy``.
* :func:`check_paths` looks at the filesystem: binaries, agent config files and work
  directories. It returns issues instead of raising, so callers can combine them.
* :func:`load_config` reads a YAML or TOML file and runs both, reporting the issues of
  both at once.

:func:`dump_config` is the inverse of :func:`parse_config`: it writes a plain document
(durations as ``"1h30m"``, enums as their values, signals as ``"TERM"``) from which
``parse_config`` builds an equal :class:`Config`.

How agents are built: ``agent_defaults`` and each agent are read into *layers* (the
keys they set, converted), merged (nested blocks and ``env`` key by key, anything else,
``args`` included, replaced), and only then checked for required fields and turned into
an :class:`AgentSpec`. So an error in ``agent_defaults`` is reported once, under
``agent_defaults``, and an agent's own error under ``agents[i]``.
"""

from __future__ import annotations

import functools
import os
import stat
import tomllib
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._config_fields import (
    AGENT,
    AGENT_DEFAULTS,
    DAEMON,
    HEALTH_CHECK,
    LOG,
    RESTART,
    Block,
    Field,
    Issues,
    merge_layers,
    read_block,
    unknown_key,
    write_block,
)
from ._duration import format_duration, show
from ._errors import ConfigError, ConfigIssue, ConfigLoadError
from ._spec import (
    AgentSpec,
    AgentType,
    Config,
    DaemonSpec,
    HealthCheckSpec,
    LogSpec,
    RestartSpec,
    default_args,
)

if TYPE_CHECKING:
    import yaml

__all__ = ["check_paths", "dump_config", "load_config", "parse_config"]

LEGACY_WARNING = "the single-agent 'agent' section is deprecated; use 'agents'"
LEGACY_IGNORED_WARNING = (
    "both 'agents' and the deprecated single-agent 'agent' section are present; 'agent' is ignored"
)
# The sections owned by sibling packages, kept verbatim.
_VERBATIM = ("manager", "collectors", "update")
_TOP_LEVEL = ("daemon", "manager", "agents", "agent_defaults", "collectors", "update", "agent")
_LEGACY_ID = "agent"


@dataclass(slots=True)
class _Parsed:
    """What the parser found: the best-effort config, its issues, the agents to check."""

    config: Config
    issues: Issues
    checkable: list[tuple[str, AgentSpec]] = field(default_factory=list)


def parse_config(
    document: Mapping[str, Any], *, source: str | None = None, base_dir: str | None = None
) -> Config:
    """Validate a configuration document and build the :class:`Config` it describes.

    Args:
        document: The parsed file: a mapping with the sections ``daemon``, ``agents``,
            ``agent_defaults``, ``manager``, ``collectors``, ``update`` and the
            deprecated single-agent ``agent`` (used, with a warning, only when
            ``agents`` is absent or null). A null value anywhere means "not set".
        source: Where the document came from; stored in :attr:`Config.source` and
            named in the error.
        base_dir: The directory relative paths are resolved against (default: the
            current directory).

    Returns:
        The validated configuration, with defaults applied, ``agent_defaults`` merged
        into every agent and every path absolute.

    Raises:
        ConfigError: The document is invalid; :attr:`ConfigError.issues` lists every
            problem found, each with its path in the document.
    """
    parsed = _parse(document, source=source, base_dir=base_dir)
    if parsed.issues.items:
        raise ConfigError(parsed.issues.items, source=source)
    return parsed.config


def _parse(document: object, *, source: str | None, base_dir: str | None) -> _Parsed:
    issues = Issues()
    if not isinstance(document, Mapping):
        issues.add("", f"expected a mapping; got {show(document)}")
        return _Parsed(Config(source=source), issues)
    base = os.path.abspath(base_dir if base_dir is not None else os.getcwd())
    for key in document:
        if key not in _TOP_LEVEL:
            issues.add(str(key), unknown_key(key, _TOP_LEVEL))

    daemon_layer = read_block(document.get("daemon"), "daemon", DAEMON, base, issues)
    daemon = DaemonSpec(**_attrs(daemon_layer, DAEMON))
    verbatim = {name: _verbatim(document.get(name), name, issues) for name in _VERBATIM}

    defaults = read_block(
        document.get("agent_defaults"),
        "agent_defaults",
        AGENT_DEFAULTS,
        base,
        issues,
        refused={"id": "unknown key (ids cannot have a default)"},
    )
    _check_backoff({}, defaults.get("restart", {}), "agent_defaults", issues)

    warnings: list[str] = []
    sources: list[tuple[str, object]] = []
    agents = document.get("agents")
    if agents is not None:
        if document.get("agent") is not None:
            warnings.append(LEGACY_IGNORED_WARNING)
        if isinstance(agents, list):
            sources = [(f"agents[{index}]", raw) for index, raw in enumerate(agents)]
        else:
            issues.add("agents", f"expected a list of agents; got {show(agents)}")
    elif document.get("agent") is not None:
        warnings.append(LEGACY_WARNING)
        sources = [("agent", document["agent"])]

    specs: list[AgentSpec] = []
    checkable: list[tuple[str, AgentSpec]] = []
    first_at: dict[str, str] = {}
    for label, raw in sources:
        layer = read_block(raw, label, AGENT, base, issues)
        if label == "agent" and isinstance(raw, Mapping) and raw.get("id") is None:
            layer["id"] = _LEGACY_ID
        spec = _build_agent(label, defaults, layer, daemon, issues)
        if spec is None:
            continue
        if spec.id in first_at:
            issues.add(
                f"{label}.id", f"duplicate id {show(spec.id)} (first at {first_at[spec.id]})"
            )
        else:
            first_at[spec.id] = label
        specs.append(spec)
        checkable.append((label, spec))

    config = Config(
        daemon=daemon, agents=tuple(specs), warnings=tuple(warnings), source=source, **verbatim
    )
    return _Parsed(config, issues, checkable)


def _attrs(layer: Mapping[str, Any], fields: Mapping[str, Field | Block]) -> dict[str, Any]:
    """Rename a flat layer's keys to the spec's attribute names."""
    return {fields[key].attr: value for key, value in layer.items() if value is not None}


def _verbatim(value: object, name: str, issues: Issues) -> Mapping[str, Any]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        issues.add(name, f"expected a mapping; got {show(value)}")
        return MappingProxyType({})
    return MappingProxyType(_plain(value, {}))


def _plain(value: Any, memo: dict[int, Any]) -> Any:
    """A copy made of dicts and lists (YAML anchors may make it cyclic; so may the copy)."""
    if isinstance(value, Mapping | list | tuple):
        if id(value) in memo:
            return memo[id(value)]
        if isinstance(value, Mapping):
            mapping: dict[Any, Any] = memo.setdefault(id(value), {})
            mapping.update((key, _plain(item, memo)) for key, item in value.items())
            return mapping
        sequence: list[Any] = memo.setdefault(id(value), [])
        sequence.extend(_plain(item, memo) for item in value)
        return sequence
    return value


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
    daemon: DaemonSpec,
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
    work_dir = merged.get("work_dir") or os.path.join(daemon.work_dir, "agents", agent_id)
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


def check_paths(config: Config) -> list[ConfigIssue]:
    """Check what :func:`parse_config` cannot: the files and directories on this machine.

    For every enabled agent: the binary exists, is a regular file and is executable;
    the config file, if given, exists; the work directory exists and is writable or
    can be created (its nearest existing ancestor is a writable directory). The
    daemon's work directory likewise. Nothing is created.

    Args:
        config: A validated configuration.

    Returns:
        The problems found, with paths such as ``agents[2].binary_path``; empty if none.
    """
    legacy = LEGACY_WARNING in config.warnings and len(config.agents) == 1
    labels = ["agent"] if legacy else [f"agents[{index}]" for index in range(len(config.agents))]
    return _check_paths(config.daemon, zip(labels, config.agents, strict=True))


def _check_paths(daemon: DaemonSpec, agents: Iterable[tuple[str, AgentSpec]]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []

    def check(path: str, message: str | None) -> None:
        if message is not None:
            issues.append(ConfigIssue(path, message))

    check("daemon.work_dir", _creatable_dir(daemon.work_dir))
    for label, spec in agents:
        if not spec.enabled:
            continue  # may well be installed later; checked when enabled
        check(f"{label}.binary_path", _executable(spec.binary_path))
        if spec.config_file is not None:
            check(f"{label}.config_file", _stat_problem(spec.config_file)[1])
        check(f"{label}.work_dir", _creatable_dir(spec.work_dir))
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
    return None


def _creatable_dir(path: str) -> str | None:
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


def load_config(path: str | os.PathLike[str], *, work_dir: str | None = None) -> Config:
    """Read, validate and check a configuration file.

    Args:
        path: A YAML (``.yaml``, ``.yml``) or TOML (``.toml``) file. Relative paths in
            it are resolved against the file's directory.
        work_dir: Replaces ``daemon.work_dir`` before validation (the command line's
            override), resolved against the current directory; agents' default work
            directories follow it.

    Returns:
        The validated configuration; :attr:`Config.source` is ``path``.

    Raises:
        ConfigLoadError: The file cannot be read or is not valid YAML or TOML (the
            message gives the line and column the parser reports).
        ConfigError: The document is invalid or :func:`check_paths` found problems;
            all of them are listed together.
    """
    source = os.fspath(path)
    document = _read_document(source)
    if work_dir is not None and isinstance(document, Mapping):
        daemon = document.get("daemon")
        if daemon is None or isinstance(daemon, Mapping):  # else parse_config reports it
            daemon = {**(daemon or {}), "work_dir": os.path.abspath(work_dir)}
            document = {**document, "daemon": daemon}
    base_dir = os.path.dirname(os.path.abspath(source))
    parsed = _parse(document, source=source, base_dir=base_dir)
    issues = parsed.issues.items
    bad_work_dir = parsed.issues.has("daemon.work_dir")
    for issue in _check_paths(parsed.config.daemon, parsed.checkable):
        # Where a value was invalid, a default stands in for it: checking that is noise.
        # Agents' default work dirs derive from daemon.work_dir.
        if not parsed.issues.has(issue.path) and not (
            bad_work_dir and issue.path.endswith(".work_dir")
        ):
            issues.append(issue)
    if issues:
        raise ConfigError(issues, source=source)
    return parsed.config


def _read_document(source: str) -> object:
    suffix = os.path.splitext(source)[1].lower()
    if suffix not in (".yaml", ".yml", ".toml"):
        message = f"unsupported file type {suffix!r}; expected .yaml, .yml or .toml"
        raise ConfigLoadError([ConfigIssue("", message)], source=source)
    try:
        with open(source, "rb") as file:
            data = file.read()
    except OSError as exc:
        message = f"cannot read the file: {exc.strerror or exc}"
        raise ConfigLoadError([ConfigIssue("", message)], source=source) from exc
    if suffix == ".toml":
        try:
            return tomllib.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            # TOMLDecodeError's message ends with "(at line L, column C)".
            raise ConfigLoadError([ConfigIssue("", f"invalid TOML: {exc}")], source=source) from exc
    return _load_yaml(data, source)


def _load_yaml(data: bytes, source: str) -> object:
    import yaml  # imported here: it costs memory the daemon's hot path does not need

    try:
        document = yaml.load(data, Loader=_unique_key_loader())  # a SafeLoader: no objects
    except yaml.MarkedYAMLError as exc:
        where = ""
        if exc.problem_mark is not None:
            where = f" at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}"
        message = f"invalid YAML{where}: {exc.problem or exc}"
        raise ConfigLoadError([ConfigIssue("", message)], source=source) from exc
    except yaml.YAMLError as exc:  # e.g. bytes that are not UTF-8; the message has the position
        raise ConfigLoadError([ConfigIssue("", f"invalid YAML: {exc}")], source=source) from exc
    # An empty file is an empty document: a daemon with nothing to supervise.
    return {} if document is None else document


@functools.cache
def _unique_key_loader() -> type[yaml.SafeLoader]:
    """yaml.SafeLoader, except that a key repeated in one mapping is an error.

    PyYAML keeps the last of two equal keys; a second ``restart:`` block in an agent
    would silently replace the first.
    """
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(
            self, node: yaml.MappingNode, deep: bool = False
        ) -> dict[Hashable, Any]:
            seen: set[object] = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue  # "<<" merges may override keys: that is their purpose
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def dump_config(config: Config) -> dict[str, Any]:
    """Write a configuration back as a plain document.

    Every agent is written in full (defaults and ``agent_defaults`` already merged in,
    ``args`` and ``work_dir`` explicit); durations are strings such as ``"1h30m"``,
    enums their values and signals names such as ``"TERM"``; None values are left out.
    The result can be written with ``tomli_w`` or ``yaml.safe_dump``.

    Args:
        config: The configuration.

    Returns:
        A document from which :func:`parse_config` builds a configuration equal to
        ``config`` (apart from ``warnings`` and ``source``).
    """
    document: dict[str, Any] = {
        "daemon": write_block(config.daemon, DAEMON),
        "agents": [write_block(spec, AGENT) for spec in config.agents],
    }
    for name in _VERBATIM:
        section: Mapping[str, Any] = getattr(config, name)
        if section:
            document[name] = _plain(section, {})
    return document
