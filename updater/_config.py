"""Frozen configuration of the updater: the seed's ``update`` block plus the new limits.

The seed's block (004 section 5.1)::

    update:
      download_dir: /var/lib/daemon/downloads
      backup_dir: /var/lib/daemon/backups
      max_backups: 5
      verify_timeout: 300s
      public_key_file: /etc/daemon/keys/update.pub

maps onto :class:`UpdateConfig` (``verify_timeout`` is the trial window ``trial_s``;
``public_key_file`` becomes a *legacy* key of the keyring, trusted for the components listed
in ``legacy_components``). New: ``state_dir`` (journal, floors, keyring), ``keyring_file``
(the pinned keyring, the recommended trust root), ``platform`` and :class:`DownloadLimits`.
Durations are float seconds ending in ``_s``; sizes are int bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["AgentTarget", "DownloadLimits", "UpdateConfig", "parse_duration"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Parse the seed's durations (``300s``, ``5m``, ``1.5h``, ``250ms``, or a number).

    Raises:
        ValueError: If ``value`` is not such a duration.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value).strip())
    if match is None:
        raise ValueError(f"not a duration: {value!r} (use e.g. 300s, 5m, 1h)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


@dataclass(frozen=True, slots=True)
class DownloadLimits:
    """Limits that keep a hostile or broken server from wasting time, memory or disk.

    Attributes:
        connect_timeout_s: TCP connect plus TLS handshake, per connection.
        deadline_s: Total time for the whole download, redirects included.
        min_rate_bps: Bytes per second that every ``rate_window_s`` window must average;
            a server that drips bytes (or sends nothing) is cut off at the first window below.
        rate_window_s: Length of the rate windows.
        max_bytes: Global cap, whatever the signed length says.
        max_redirects: Redirects followed (each target is checked like the first URL).
        allow_http_hosts: Hosts for which plain http is accepted (default: none).
        disk_reserve_bytes: Free space that must remain after staging the artifact.
    """

    connect_timeout_s: float = 10.0
    deadline_s: float = 600.0
    min_rate_bps: int = 4096
    rate_window_s: float = 15.0
    max_bytes: int = 1 << 30
    max_redirects: int = 5
    allow_http_hosts: frozenset[str] = frozenset()
    disk_reserve_bytes: int = 32 << 20

    def __post_init__(self) -> None:
        for name in ("connect_timeout_s", "deadline_s", "rate_window_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.min_rate_bps < 0 or self.max_bytes <= 0 or self.max_redirects < 0:
            raise ValueError("min_rate_bps, max_bytes and max_redirects must be positive")


@dataclass(frozen=True, slots=True)
class AgentTarget:
    """An agent binary the updater may replace.

    Two layouts exist. Without ``install_root`` the artifact is a single executable that
    replaces ``binary_path`` (one atomic rename; backups are verified copies). With
    ``install_root`` the artifact is a tar archive, unpacked safely into
    ``install_root/versions/<version>-<counter>-<id>/``, and the ``install_root/current``
    symlink is swapped; ``binary_path`` should then lie under ``install_root/current``, and
    the previous version directories are the backups.

    Attributes:
        component: The component name that requests and statements use.
        agent_id: The id the :class:`~updater.AgentControl` knows the agent by.
        binary_path: The executable the supervisor runs.
        install_root: For archive artifacts: the directory holding ``versions/`` and the
            ``current`` link (None for single-executable agents).
    """

    component: str
    agent_id: str
    binary_path: Path
    install_root: Path | None = None


@dataclass(frozen=True, slots=True)
class UpdateConfig:
    """Where the updater keeps its files, and its policy.

    Attributes:
        state_dir: Journal, version floors, the active keyring, the lock.
        download_dir: Staging area for downloads (same filesystem as the targets is best:
            a verified file is then moved, not copied).
        backup_dir: Backups of replaced versions.
        platform: This host's platform string, e.g. ``linux-x86_64``.
        max_backups: Backups kept per component after a commit (the current and previous
            versions are never pruned).
        trial_s: The trial window (the seed's ``verify_timeout``).
        keyring_file: The pinned keyring document (or None).
        public_key_file: The seed's RSA public key, trusted as a *legacy* key (or None).
        legacy_components: Components the legacy key may sign for.
        limits: Download limits.
        log_tail_lines: How many of a failed version's last log lines to report.
    """

    state_dir: Path
    download_dir: Path
    backup_dir: Path
    platform: str
    max_backups: int = 5
    trial_s: float = 300.0
    keyring_file: Path | None = None
    public_key_file: Path | None = None
    legacy_components: frozenset[str] = frozenset()
    limits: DownloadLimits = field(default_factory=DownloadLimits)
    log_tail_lines: int = 20

    def __post_init__(self) -> None:
        if self.max_backups < 1:
            raise ValueError(f"max_backups must be >= 1, got {self.max_backups}")
        if not self.trial_s >= 0:
            raise ValueError(f"trial_s must be >= 0, got {self.trial_s}")

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], *, platform: str) -> UpdateConfig:
        """Build from the seed's ``update`` block (plus the new keys, all optional).

        Keys: ``download_dir``, ``backup_dir``, ``max_backups``, ``verify_timeout`` (the
        trial window), ``public_key_file``, and new: ``state_dir`` (default: the parent of
        ``download_dir`` + ``/updater``), ``keyring_file``, ``legacy_components``,
        ``limits`` (``connect_timeout``, ``deadline``, ``min_rate_bps``, ``rate_window``,
        ``max_bytes``, ``max_redirects``, ``allow_http_hosts``, ``disk_reserve_bytes``).

        Raises:
            ValueError: A missing or malformed value (the message names the key).
            KeyError: ``download_dir`` or ``backup_dir`` is missing.
        """
        download_dir = Path(doc["download_dir"])
        limits_doc: Mapping[str, Any] = doc.get("limits", {})
        default = DownloadLimits()
        limits = DownloadLimits(
            connect_timeout_s=parse_duration(
                limits_doc.get("connect_timeout", default.connect_timeout_s)
            ),
            deadline_s=parse_duration(limits_doc.get("deadline", default.deadline_s)),
            min_rate_bps=int(limits_doc.get("min_rate_bps", default.min_rate_bps)),
            rate_window_s=parse_duration(limits_doc.get("rate_window", default.rate_window_s)),
            max_bytes=int(limits_doc.get("max_bytes", default.max_bytes)),
            max_redirects=int(limits_doc.get("max_redirects", default.max_redirects)),
            allow_http_hosts=frozenset(limits_doc.get("allow_http_hosts", ())),
            disk_reserve_bytes=int(
                limits_doc.get("disk_reserve_bytes", default.disk_reserve_bytes)
            ),
        )
        optional = {
            key: Path(doc[key]) for key in ("keyring_file", "public_key_file") if doc.get(key)
        }
        return cls(
            state_dir=Path(doc.get("state_dir", download_dir.parent / "updater")),
            download_dir=download_dir,
            backup_dir=Path(doc["backup_dir"]),
            platform=platform,
            max_backups=int(doc.get("max_backups", 5)),
            trial_s=parse_duration(doc.get("verify_timeout", 300.0)),
            legacy_components=frozenset(doc.get("legacy_components", ())),
            limits=limits,
            **optional,  # type: ignore[arg-type]
        )
