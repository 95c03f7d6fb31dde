"""Frozen, validated descriptions of what to supervise.

These are the seed's ``AgentConfig``, ``RestartConfig`` and ``HealthCheckConfig`` (004
sections 4.1.2 and 5.1), as immutable values. They are built by
:func:`supervisor.parse_agents` (which validates every field and reports every error at
once) or directly by a program that embeds the supervisor. Durations are float seconds
and end in ``_s``; sizes are int bytes.

Equality is structural: the reload planner compares specs with ``==``.
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: The seed's work directory (004 section 5.1), used when none is given.
DEFAULT_WORK_DIR = "/var/lib/daemon"

__all__ = [
    "AgentSpec",
    "AgentType",
    "DEFAULT_WORK_DIR",
    "HealthCheckSpec",
    "LogSpec",
    "RestartPolicy",
    "RestartSpec",
    "default_args",
]


class AgentType(enum.Enum):
    """The seed's agent types. ``custom`` runs any binary with the given args."""

    FILEBEAT = "filebeat"
    TELEGRAF = "telegraf"
    NODE_EXPORTER = "node_exporter"
    CUSTOM = "custom"


class RestartPolicy(enum.Enum):
    """When an exited agent is started again.

    ``always``: after any exit. ``on-failure``: after a non-zero exit status or death by
    a signal. ``never``: not automatically. An exit that the supervisor caused (a stop)
    never triggers a restart.
    """

    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


@dataclass(frozen=True, slots=True)
class RestartSpec:
    """The seed's ``restart`` block, plus ``reset_after``.

    Attributes:
        policy: When to restart (seed default ``always``).
        max_retries: Consecutive automatic restarts allowed before the agent is marked
            ``failed`` (seed default 10); ``-1`` means never give up.
        backoff_base_s: Delay before the second restart in a row; each further one
            doubles it (seed default 10 s). The first restart is immediate.
        backoff_max_s: Cap on the delay (seed default 60 s).
        reset_after_s: An agent that ran this long without exiting has its consecutive
            restart count reset (seed: 5 minutes).
    """

    policy: RestartPolicy = RestartPolicy.ALWAYS
    max_retries: int = 10
    backoff_base_s: float = 10.0
    backoff_max_s: float = 60.0
    reset_after_s: float = 300.0

    def __post_init__(self) -> None:
        # Accept the wire strings ("on-failure") from library callers too.
        object.__setattr__(self, "policy", RestartPolicy(self.policy))


@dataclass(frozen=True, slots=True)
class HealthCheckSpec:
    """The seed's ``health_check`` block (004 section 5.1), with its defaults, plus probes.

    Attributes:
        interval_s: How often resources are sampled and endpoints probed (seed: 30 s).
        heartbeat_timeout_s: A missing heartbeat for this long is unhealthy; 0 disables.
            The check is armed by the agent's first heartbeat (or sd_notify
            ``WATCHDOG=1``), so agents that do not speak either protocol are not
            restarted for silence; see ``heartbeat_required``.
        heartbeat_required: Arm the heartbeat check when the process starts: an agent
            that never sends a first heartbeat within the timeout is unhealthy too.
        cpu_threshold: CPU percent of the agent's process tree (100 per core); 0 disables.
        memory_threshold: Resident bytes of the agent's process tree; 0 disables.
        threshold_duration_s: How long a threshold must be exceeded to count (seed: 60 s).
        http_endpoint: URL whose 2xx answer means healthy, or None.
        tcp_endpoint: ``host:port`` that must accept a TCP connection, or None.
        timeout_s: Deadline of one HTTP or TCP probe.
        failures: Probe failures in a row that make the agent unhealthy.
    """

    interval_s: float = 30.0
    heartbeat_timeout_s: float = 90.0
    cpu_threshold: float = 50.0
    memory_threshold: int = 524_288_000
    threshold_duration_s: float = 60.0
    http_endpoint: str | None = None
    tcp_endpoint: str | None = None
    heartbeat_required: bool = False
    timeout_s: float = 5.0
    failures: int = 3


@dataclass(frozen=True, slots=True)
class LogSpec:
    """Where an agent's stdout and stderr go and how the file is rotated.

    Attributes:
        file: The log file; None means ``{daemon.work_dir}/logs/{id}.log``.
        max_bytes: Rotate when the file grows past this; 0 disables rotation.
        backups: Rotated files kept (``.1`` newest to ``.N`` oldest).
    """

    file: str | None = None
    max_bytes: int = 50 * 1024 * 1024
    backups: int = 10


# Most agents add no variables: they share one empty, read-only mapping.
_NO_ENV: Mapping[str, str] = MappingProxyType({})


def _frozen_env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(env)) if env else _NO_ENV


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One supervised agent: the seed's AgentConfig plus process-control fields.

    Attributes:
        id: Unique identifier; letters, digits, ``.``, ``_`` and ``-`` (it names files).
        type: One of the seed's agent types.
        binary_path: Absolute path of the executable; run without a shell.
        args: Arguments after the binary (generated from the type when omitted).
        name: Display name (defaults to the id).
        config_file: The agent's own configuration file, if any.
        work_dir: Working directory, created when missing.
        socket_path: The seed's per-agent Unix socket path, if any.
        enabled: Disabled agents are registered but never started.
        env: Variables added to the inherited environment.
        stop_signal: Sent to the process group to stop the agent (default SIGTERM).
        stop_timeout_s: Wait this long after the stop signal before SIGKILL (default 30 s).
        start_seconds_s: Uptime after which a start counts as successful (default 1 s).
        restart: Restart policy and backoff.
        health_check: Health-check settings.
        log: Log file and rotation.
    """

    id: str
    binary_path: str
    type: AgentType = AgentType.CUSTOM
    args: tuple[str, ...] = ()
    name: str = ""
    config_file: str | None = None
    work_dir: str = ""
    socket_path: str | None = None
    enabled: bool = True
    env: Mapping[str, str] = field(default_factory=lambda: _frozen_env(None))
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout_s: float = 30.0
    start_seconds_s: float = 1.0
    restart: RestartSpec = field(default_factory=RestartSpec)
    health_check: HealthCheckSpec = field(default_factory=HealthCheckSpec)
    log: LogSpec = field(default_factory=LogSpec)

    def __post_init__(self) -> None:
        # Keep the spec hashable and immune to later mutation of the caller's dict.
        if not isinstance(self.env, MappingProxyType):
            object.__setattr__(self, "env", _frozen_env(self.env))
        # Callers may pass any sequence despite the annotation; keep the spec hashable.
        object.__setattr__(self, "args", tuple(self.args))
        # Accept the wire strings ("filebeat") from library callers, as RestartSpec does.
        object.__setattr__(self, "type", AgentType(self.type))
        if not self.name:
            object.__setattr__(self, "name", self.id)

    def __hash__(self) -> int:
        # The generated hash would fail on the env mapping; equality stays field-wise.
        return hash((self.id, self.binary_path, self.args, tuple(sorted(self.env.items()))))

    @property
    def argv(self) -> tuple[str, ...]:
        """The full command line: binary then arguments."""
        return (self.binary_path, *self.args)

    def process_key(self) -> tuple[Any, ...]:
        """The fields that define the running process; a change here needs a restart.

        Everything else (restart policy, health checks, stop settings, rotation limits,
        name) can be applied to a running agent in place.
        """
        return (
            self.binary_path,
            self.args,
            self.config_file,
            self.work_dir,
            self.socket_path,
            dict(self.env),
            self.log.file,
            self.type,
        )


def default_args(agent_type: AgentType, config_file: str | None, work_dir: str) -> tuple[str, ...]:
    """Arguments used when an agent's ``args`` are omitted, as in the seed's examples.

    Args:
        agent_type: The agent's type.
        config_file: The agent's configuration file, if any.
        work_dir: The agent's working directory.

    Returns:
        filebeat: ``-c CONFIG -path.home WORK_DIR``; telegraf: ``-config CONFIG``;
        node_exporter: the seed's listen address, procfs and sysfs flags (plus
        ``--web.config.file`` when a config file is given); custom: nothing.
    """
    match agent_type:
        case AgentType.FILEBEAT:
            head = ("-c", config_file) if config_file else ()
            return (*head, "-path.home", work_dir)
        case AgentType.TELEGRAF:
            return ("-config", config_file) if config_file else ()
        case AgentType.NODE_EXPORTER:
            base = ("--web.listen-address=:9100", "--path.procfs=/proc", "--path.sysfs=/sys")
            return (*base, f"--web.config.file={config_file}") if config_file else base
        case AgentType.CUSTOM:
            return ()
