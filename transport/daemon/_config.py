"""Loading and validating ``daemon.yaml`` (004 section 5): document in, :class:`DaemonConfig` out.

Three layers, from pure to IO:

* :func:`parse_config` validates a document that is already a Python mapping. It is
  pure apart from resolving relative paths against a base directory and looking bare
  command names up on ``PATH``. It never stops at the first problem: every section is
  read as far as it can be, and all problems are raised together as one
  :class:`~supervisor.ConfigError` whose issues carry paths such as
  ``agents[1].restart.policy``. The ``daemon`` section is described here with the
  schema tables of :mod:`supervisor.schema`; agent entries are built by the supervisor's
  own builder (:func:`supervisor.schema.read_agents`); the ``manager``, ``collectors``
  and ``update`` sections are kept verbatim here and validated by the modules that use
  them (:mod:`transport.daemon._updates`, ...), whose problems carry their paths too.
* :func:`check_paths` looks at the filesystem: binaries, agent config files, the work
  directory, and the daemon's own files (``log_file``, ``pid_file``). It returns issues
  instead of raising, so callers can combine them.
* :func:`load_config` reads a YAML or TOML file and runs both, reporting the issues of
  both at once. An empty file is refused: a daemon with nothing to supervise is almost
  always a mistake (write ``agents: []`` to mean it).

:func:`dump_config` is the inverse of :func:`parse_config`.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import stat
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from supervisor import (
    DEFAULT_WORK_DIR,
    AgentSpec,
    ConfigError,
    ConfigIssue,
    ConfigLoadError,
    check_agent_paths,
    dump_agent,
)
from supervisor.schema import (
    BOOLEAN,
    LOG_LEVEL,
    PATH,
    STRING,
    Block,
    Field,
    Invalid,
    Issues,
    Kind,
    creatable_dir,
    read_agents,
    read_block,
    show,
    unknown_key,
    write_block,
)

from ._manager_config import LABELS, check_manager_section, manager_file_issues

if TYPE_CHECKING:
    import yaml

__all__ = [
    "DEFAULT_GRPC_PORT",
    "DaemonConfig",
    "DaemonSpec",
    "TlsSpec",
    "check_paths",
    "dump_config",
    "load_config",
    "parse_config",
]

LEGACY_WARNING = "the single-agent 'agent' section is deprecated; use 'agents'"
LEGACY_IGNORED_WARNING = (
    "both 'agents' and the deprecated single-agent 'agent' section are present; 'agent' is ignored"
)
# The sections owned by sibling packages, kept verbatim.
_VERBATIM = ("manager", "collectors", "update")
_TOP_LEVEL = ("daemon", "manager", "agents", "agent_defaults", "collectors", "update", "agent")

DEFAULT_GRPC_PORT = 9091
"""The original daemon's gRPC port (``daemon.grpc_port``)."""
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?")


def _port(value: object, base: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise Invalid(f"expected a port number from 0 (disabled) to 65535; got {show(value)}")
    return value


def _host(value: object, base: str) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a host name or IP address; got {show(value)}")
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(text):
        raise Invalid(f"expected a host name or IP address (no port); got {show(value)}")
    return text.lower()


PORT = Kind(_port)
HOST = Kind(_host)

TLS: Mapping[str, Field | Block] = {
    "cert_file": Field("cert_file", PATH),
    "key_file": Field("key_file", PATH),
    "ca_file": Field("ca_file", PATH),
}

DAEMON: Mapping[str, Field | Block] = {
    "id": Field("id", STRING),
    "log_level": Field("log_level", LOG_LEVEL),
    "log_file": Field("log_file", PATH),
    "pid_file": Field("pid_file", PATH),
    "work_dir": Field("work_dir", PATH),
    "stop_agents_on_exit": Field("stop_agents_on_exit", BOOLEAN),
    "grpc_host": Field("grpc_host", HOST),
    "grpc_port": Field("grpc_port", PORT),
    "grpc_allow_insecure": Field("grpc_allow_insecure", BOOLEAN),
    "control_socket": Field("control_socket", BOOLEAN),
    "tls": Block("tls", TLS),
    "labels": Field("labels", LABELS),
}


@dataclass(frozen=True, slots=True)
class TlsSpec:
    """The ``daemon.tls`` block: the gRPC listener's certificate, and its clients' CA.

    Either all three are set or none: with TLS, every client (the Manager) must present a
    certificate signed by ``ca_file``.

    Attributes:
        cert_file: The daemon's certificate chain (PEM).
        key_file: Its private key (PEM).
        ca_file: The CA that signs the clients' certificates (PEM).
    """

    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None

    @property
    def enabled(self) -> bool:
        """Whether TLS is configured (all three files are set)."""
        return None not in (self.cert_file, self.key_file, self.ca_file)


@dataclass(frozen=True, slots=True)
class DaemonSpec:
    """The seed's ``daemon`` section, plus ``stop_agents_on_exit``.

    Attributes:
        id: Node id; empty means generated.
        log_level: debug, info, warning or error.
        log_file: The daemon's own log file; None logs to stderr only.
        pid_file: Where the daemon writes its PID; None disables.
        work_dir: Runtime state: agent work dirs, logs, the state file (seed: /var/lib/daemon).
        stop_agents_on_exit: Whether the daemon stops its agents when it exits (seed 3.1.2:
            it does not).
        grpc_host: Where the gRPC server (``proto.DaemonService``) listens; without TLS
            it must be a loopback address unless ``grpc_allow_insecure``.
        grpc_port: Its port (the original's 9091); 0 disables the TCP listener.
        grpc_allow_insecure: Allow a non-loopback ``grpc_host`` without TLS (a warning:
            anyone who reaches it can stop agents, the original's defect).
        control_socket: Serve the same services on a Unix socket in the work directory
            (mode 0600, no TLS) for the ``hostvisor`` command line.
        tls: The listener's certificate and its clients' CA.
        labels: Free-form labels the node registers with at the Manager.
    """

    id: str = ""
    log_level: str = "info"
    log_file: str | None = None
    pid_file: str | None = None
    work_dir: str = DEFAULT_WORK_DIR
    stop_agents_on_exit: bool = False
    grpc_host: str = "127.0.0.1"
    grpc_port: int = DEFAULT_GRPC_PORT
    grpc_allow_insecure: bool = False
    control_socket: bool = True
    tls: TlsSpec = field(default_factory=TlsSpec)
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def grpc_enabled(self) -> bool:
        """Whether the daemon serves gRPC at all (TCP or the control socket)."""
        return self.grpc_port != 0 or self.control_socket


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """A whole validated ``daemon.yaml``.

    Attributes:
        daemon: The ``daemon`` section.
        agents: Every agent, in file order, with ``agent_defaults`` merged in.
        manager: The ``manager`` section, kept verbatim for the transport package.
        collectors: The ``collectors`` section, kept verbatim for the collectors package.
        update: The ``update`` section, kept verbatim for the updater package.
        warnings: Non-fatal remarks (deprecated single-agent format, etc.).
        source: The file it was loaded from, if any.
    """

    daemon: DaemonSpec = field(default_factory=DaemonSpec)
    agents: tuple[AgentSpec, ...] = ()
    manager: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    collectors: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    update: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    warnings: tuple[str, ...] = ()
    source: str | None = None

    def agent(self, agent_id: str) -> AgentSpec:
        """Return the agent with this id.

        Raises:
            KeyError: no such agent.
        """
        for spec in self.agents:
            if spec.id == agent_id:
                return spec
        raise KeyError(agent_id)


@dataclass(slots=True)
class _Parsed:
    """What the parser found: the best-effort config, its issues, the agents to check."""

    config: DaemonConfig
    issues: Issues
    checkable: list[tuple[str, AgentSpec]] = field(default_factory=list)


def parse_config(
    document: Mapping[str, Any], *, source: str | None = None, base_dir: str | None = None
) -> DaemonConfig:
    """Validate a configuration document and build the :class:`DaemonConfig` it describes.

    Args:
        document: The parsed file: a mapping with the sections ``daemon``, ``agents``,
            ``agent_defaults``, ``manager``, ``collectors``, ``update`` and the
            deprecated single-agent ``agent`` (used, with a warning, only when
            ``agents`` is absent or null). A null value anywhere means "not set".
        source: Where the document came from; stored in :attr:`DaemonConfig.source` and
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
        return _Parsed(DaemonConfig(source=source), issues)
    base = os.path.abspath(base_dir if base_dir is not None else os.getcwd())
    for key in document:
        if key not in _TOP_LEVEL:
            issues.add(str(key), unknown_key(key, _TOP_LEVEL))

    daemon_layer = read_block(document.get("daemon"), "daemon", DAEMON, base, issues)
    daemon_attrs = _attrs(daemon_layer, DAEMON)
    daemon_attrs["tls"] = TlsSpec(**_attrs(daemon_attrs.get("tls", {}), TLS))
    daemon = DaemonSpec(**daemon_attrs)
    verbatim = {name: _verbatim(document.get(name), name, issues) for name in _VERBATIM}
    check_manager_section(verbatim["manager"], base, issues)

    warnings: list[str] = []
    _check_grpc(daemon, issues, warnings)
    agents = document.get("agents")
    legacy = agents is None and document.get("agent") is not None
    if agents is not None and document.get("agent") is not None:
        warnings.append(LEGACY_IGNORED_WARNING)
    if legacy:
        warnings.append(LEGACY_WARNING)
    built = read_agents(
        document["agent"] if legacy else agents,
        document.get("agent_defaults"),
        base=base,
        work_dir=daemon.work_dir,
        issues=issues,
        path="agent" if legacy else "agents",
        single=legacy,
    )
    config = DaemonConfig(
        daemon=daemon,
        agents=tuple(spec for _, spec in built),
        warnings=tuple(warnings),
        source=source,
        **verbatim,
    )
    return _Parsed(config, issues, built)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a validated ``daemon.grpc_host``) names this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve to anything


def _check_grpc(daemon: DaemonSpec, issues: Issues, warnings: list[str]) -> None:
    """The rules between the gRPC keys: TLS all or nothing; no open plaintext listener."""
    tls = daemon.tls
    given = {key: getattr(tls, key) for key in TLS if getattr(tls, key) is not None}
    if given and len(given) < len(TLS):
        for key in TLS:
            if key not in given:
                issues.add(
                    f"daemon.tls.{key}",
                    f"required with daemon.tls.{next(iter(given))}: TLS needs cert_file,"
                    " key_file and ca_file (clients must present a certificate signed by"
                    " ca_file)",
                )
        return
    if tls.enabled or daemon.grpc_port == 0 or is_loopback(daemon.grpc_host):
        return
    if issues.has("daemon.grpc_host"):
        return
    if daemon.grpc_allow_insecure:
        warnings.append(
            f"daemon.grpc_host {daemon.grpc_host!r} is not a loopback address and daemon.tls"
            " is not set: anyone who can reach port"
            f" {daemon.grpc_port} can list, stop and start agents (grpc_allow_insecure)"
        )
        return
    issues.add(
        "daemon.grpc_host",
        f"{daemon.grpc_host!r} is not a loopback address: without TLS anyone who can reach"
        " it could stop agents; set daemon.tls (cert_file, key_file, ca_file), or"
        " daemon.grpc_allow_insecure: true to accept that",
    )


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


def check_paths(config: DaemonConfig) -> list[ConfigIssue]:
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
    problem = creatable_dir(daemon.work_dir)
    if problem is not None:
        issues.append(ConfigIssue("daemon.work_dir", problem))
    for key in ("log_file", "pid_file"):
        path = getattr(daemon, key)
        if path is not None:
            problem = _writable_file(path)
            if problem is not None:
                issues.append(ConfigIssue(f"daemon.{key}", problem))
    for key in TLS:
        path = getattr(daemon.tls, key)
        if path is not None:
            problem = _pem_file(path, "PRIVATE KEY" if key == "key_file" else "CERTIFICATE")
            if problem is not None:
                issues.append(ConfigIssue(f"daemon.tls.{key}", problem))
    issues.extend(check_agent_paths(agents))
    return issues


def _pem_file(path: str, label: str) -> str | None:
    """Why ``path`` is not a readable PEM file holding a ``label``; None if it is."""
    try:
        with open(path, "rb") as file:
            data = file.read(1 << 20)
    except FileNotFoundError:
        return f"not found: {path!r}"
    except IsADirectoryError:
        return f"is a directory, not a file: {path!r}"
    except OSError as exc:
        return f"cannot be read: {path!r} ({exc.strerror or exc})"
    if b"-----BEGIN" not in data or label.encode() + b"-----" not in data:
        return f"not a PEM file with a {label.lower()}: {path!r}"
    return None


def _writable_file(path: str) -> str | None:
    """Why the daemon could not create or write a file at ``path``; None if it can."""
    try:
        status = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return creatable_dir(os.path.dirname(path) or ".")
    except OSError as exc:
        return f"cannot be accessed: {path!r} ({exc.strerror or exc})"
    if stat.S_ISDIR(status.st_mode):
        return f"is a directory, not a file: {path!r}"
    if not os.access(path, os.W_OK):
        return f"not writable: {path!r}"
    return None


def load_config(path: str | os.PathLike[str], *, work_dir: str | None = None) -> DaemonConfig:
    """Read, validate and check a configuration file.

    Args:
        path: A YAML (``.yaml``, ``.yml``) or TOML (``.toml``) file. Relative paths in
            it are resolved against the file's directory.
        work_dir: Replaces ``daemon.work_dir`` before validation (the command line's
            override), resolved against the current directory; agents' default work
            directories follow it.

    Returns:
        The validated configuration; :attr:`DaemonConfig.source` is ``path``.

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
    issues.extend(manager_file_issues(parsed.config.manager, base_dir))
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
    if _only_comments(data):
        message = "the file is empty; write 'agents: []' for a daemon with no agents"
        raise ConfigLoadError([ConfigIssue("", message)], source=source)
    if suffix == ".toml":
        import tomllib  # here: only TOML files pay for it

        try:
            return tomllib.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            # TOMLDecodeError's message ends with "(at line L, column C)".
            raise ConfigLoadError([ConfigIssue("", f"invalid TOML: {exc}")], source=source) from exc
    return _load_yaml(data, source)


def _load_yaml(data: bytes, source: str) -> object:
    import yaml  # imported here: it costs memory the daemon's hot path does not need

    fast, exact = _unique_key_loaders()
    # libyaml's parser takes a sixth of the time for hundreds of agents. The pure-Python
    # one decides whenever libyaml refuses (its messages and positions are the ones users
    # see) and for documents with tabs, the one place where libyaml accepts more.
    loader = exact if b"\t" in data else fast
    try:
        try:
            document = yaml.load(data, Loader=loader)  # a SafeLoader: no objects
        except yaml.YAMLError:
            document = yaml.load(data, Loader=exact)
    except yaml.MarkedYAMLError as exc:
        where = ""
        if exc.problem_mark is not None:
            where = f" at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}"
        message = f"invalid YAML{where}: {exc.problem or exc}"
        raise ConfigLoadError([ConfigIssue("", message)], source=source) from exc
    except yaml.YAMLError as exc:  # e.g. bytes that are not UTF-8; the message has the position
        raise ConfigLoadError([ConfigIssue("", f"invalid YAML: {exc}")], source=source) from exc
    if document is None:  # comments only, or "---"
        message = "the document is empty; write 'agents: []' for a daemon with no agents"
        raise ConfigLoadError([ConfigIssue("", message)], source=source)
    return document


def _only_comments(data: bytes) -> bool:
    return all(not line.strip() or line.lstrip().startswith(b"#") for line in data.splitlines())


@functools.cache
def _unique_key_loaders() -> tuple[type[yaml.SafeLoader], type[yaml.SafeLoader]]:
    """SafeLoaders, except that a key repeated in one mapping is an error.

    PyYAML keeps the last of two equal keys; a second ``restart:`` block in an agent
    would silently replace the first. Two of them: on libyaml's parser (``CSafeLoader``,
    the pure-Python one when PyYAML was built without it) and on the pure-Python one,
    whose error messages and positions are the ones users see.
    """
    import yaml

    class UniqueKeys(yaml.constructor.SafeConstructor):
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

    class UniqueKeyLoader(UniqueKeys, yaml.SafeLoader):
        pass

    fast_base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class FastUniqueKeyLoader(UniqueKeys, fast_base):  # type: ignore[misc,valid-type]
        pass

    return FastUniqueKeyLoader, UniqueKeyLoader


def dump_config(config: DaemonConfig) -> dict[str, Any]:
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
    daemon = write_block(config.daemon, DAEMON)
    if not daemon.get("labels"):
        daemon.pop("labels", None)  # no labels: nothing to say
    if not daemon["tls"]:
        del daemon["tls"]  # no TLS: an empty block says nothing
    document: dict[str, Any] = {
        "daemon": daemon,
        "agents": [dump_agent(spec) for spec in config.agents],
    }
    for name in _VERBATIM:
        section: Mapping[str, Any] = getattr(config, name)
        if section:
            document[name] = _plain(section, {})
    return document
