"""A daemon's whole ``update:`` block: the updater's configuration, its agents, self-update.

:class:`UpdateConfig` covers the seed's keys and the updater's limits. A daemon that embeds
the updater also says which of its agents may be updated, where its own versioned install
lives, and how it restarts after switching to a new version of itself::

    update:
      download_dir: ...              # and the other UpdateConfig keys
      install_root: /opt/hostvisor   # the daemon's versioned install: enables self-update
      daemon_trial: 5m               # a new daemon version must be healthy within this
      daemon_max_starts: 3           # ... and within this many starts
      restart: exit                  # exit with RESTART_EXIT_CODE, or reexec
      reexec_command: [...]          # what reexec runs (default: the current command line)
      agents:                        # default: every agent, component = its id
        <component>:
          agent: <agent id>          # default: the component name
          binary_path: /abs/path     # default: the agent's binary
          install_root: /opt/agent   # archive artifacts (versions/ and current)
          version_args: [--version]  # the pre-swap version check; null disables it
          version_check: legacy      # or always

:meth:`UpdateSettings.from_mapping` reads it all and reports every problem at once.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ._config import (
    AgentTarget,
    UpdateConfig,
    _absolute_path,
    _choice,
    _command,
    _count,
    _name,
    _path,
    _Reader,
    _seconds,
)
from ._errors import UpdateConfigError

__all__ = ["DAEMON_KEYS", "UpdateSettings"]

DAEMON_KEYS = frozenset(
    {"install_root", "daemon_trial", "daemon_max_starts", "restart", "reexec_command", "agents"}
)
"""The block's keys beyond :class:`UpdateConfig`'s."""
_AGENT_KEYS = frozenset({"agent", "binary_path", "install_root", "version_args", "version_check"})
_DAEMON_COMPONENT = "daemon"


@dataclass(frozen=True, slots=True)
class UpdateSettings:
    """Everything a daemon's ``update:`` block says.

    Attributes:
        config: The updater's configuration.
        targets: The agents that may be updated.
        install_root: The daemon's own versioned install (self-update), or None.
        daemon_trial_s: How long a new daemon version has to confirm it is healthy.
        daemon_max_starts: Starts of a new daemon version allowed within its trial.
        restart: After switching itself: ``exit`` (with :data:`RESTART_EXIT_CODE`, for the
            service manager) or ``reexec`` (:func:`~updater.reexec`).
        reexec_command: The command line ``reexec`` runs (None: the current one).
    """

    config: UpdateConfig
    targets: tuple[AgentTarget, ...]
    install_root: Path | None = None
    daemon_trial_s: float = 300.0
    daemon_max_starts: int = 3
    restart: str = "exit"
    reexec_command: tuple[str, ...] | None = None

    def reexec_argv(self) -> list[str]:
        """The command line to re-execute: ``reexec_command``, else the current one."""
        if self.reexec_command is not None:
            return list(self.reexec_command)
        return [sys.executable, *sys.orig_argv[1:]]

    @classmethod
    def from_mapping(
        cls,
        doc: Mapping[str, Any],
        *,
        agents: Mapping[str, Path],
        platform: str,
        base_dir: Path | None = None,
    ) -> UpdateSettings:
        """Read a daemon's ``update:`` block.

        Args:
            doc: The block (see the module docstring; and :meth:`UpdateConfig.from_mapping`).
            agents: The daemon's agents: id to binary path. Without ``agents`` in the block,
                each may be updated as the component named by its id.
            platform: This host's platform string (unless the block sets one).
            base_dir: Relative paths are resolved against it; None requires them absolute
                (for the daemon's keys) or keeps them as written (for the updater's).

        Raises:
            UpdateConfigError: Every problem, each under its key (``restart``,
                ``agents.node_exporter.agent``, ``limits.deadline``).
        """
        issues: list[tuple[str, str]] = []
        config: UpdateConfig | None = None
        try:
            config = UpdateConfig.from_mapping(
                doc, platform=platform, base_dir=base_dir, extra_keys=DAEMON_KEYS
            )
        except UpdateConfigError as exc:
            issues += exc.issues
            if not isinstance(doc, Mapping):
                raise
        top = _Reader(doc, "", issues)
        as_path = partial(_path, base_dir=base_dir)
        install_root = top.get("install_root", as_path, None)
        daemon_trial_s = top.get("daemon_trial", _seconds, 300.0)
        daemon_max_starts = top.get("daemon_max_starts", _count(1), 3)
        restart = top.get("restart", _choice(("exit", "reexec")), "exit")
        reexec_command = top.get("reexec_command", _command, None)
        targets = _targets(doc.get("agents"), agents, base_dir, top)
        if issues or config is None:
            raise UpdateConfigError(issues)
        return cls(
            config=config,
            targets=targets,
            install_root=install_root,
            daemon_trial_s=daemon_trial_s,
            daemon_max_starts=daemon_max_starts,
            restart=restart,
            reexec_command=reexec_command,
        )


def _targets(
    doc: object, agents: Mapping[str, Path], base_dir: Path | None, top: _Reader
) -> tuple[AgentTarget, ...]:
    """The updatable agents: ``agents``, or by default every agent under its id."""
    if doc is None:
        if _DAEMON_COMPONENT in agents:
            top.add(
                "agents",
                "agent 'daemon' clashes with the daemon's own component;"
                " list the updatable agents here",
            )
        return tuple(
            AgentTarget(agent_id, agent_id, binary)
            for agent_id, binary in agents.items()
            if agent_id != _DAEMON_COMPONENT
        )
    if not isinstance(doc, Mapping):
        top.add("agents", f"expected a mapping of component to agent; got {doc!r}")
        return ()
    targets: list[AgentTarget] = []
    components: dict[str, str] = {}
    for component, entry in doc.items():
        if not isinstance(component, str) or not component or component == _DAEMON_COMPONENT:
            top.add(f"agents.{component}", "not a usable component name")
            continue
        if entry is not None and not isinstance(entry, Mapping):
            top.add(f"agents.{component}", f"expected a mapping; got {entry!r}")
            continue
        entry = entry or {}
        sub = _Reader(entry, f"agents.{component}.", top.issues)
        sub.unknown(_AGENT_KEYS)
        agent_id = sub.get("agent", _name, component)
        if agent_id not in agents:
            sub.add("agent", f"no agent {agent_id!r} in agents")
            continue
        if agent_id in components:
            sub.add("agent", f"agent {agent_id!r} is already component {components[agent_id]!r}")
        components[agent_id] = component
        args: tuple[str, ...] | None = ("--version",)
        if "version_args" in entry:  # null: no pre-swap version check
            raw = entry["version_args"]
            args = None if raw is None else sub.get("version_args", _command, args)
        check = sub.get("version_check", _choice(("legacy", "always")), "legacy")
        targets.append(
            AgentTarget(
                component,
                agent_id,
                sub.get("binary_path", _absolute_path, agents[agent_id]),
                install_root=sub.get("install_root", partial(_path, base_dir=base_dir), None),
                version_args=args,
                version_check_always=check == "always",
            )
        )
    return tuple(targets)
