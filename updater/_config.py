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
(the pinned keyring, the recommended trust root), ``platform``, ``version_check_timeout``
and :class:`DownloadLimits`. :meth:`UpdateConfig.from_mapping` reports every problem at
once, each under its key (:class:`~updater.UpdateConfigError`). Durations are float seconds
ending in ``_s``; sizes are int bytes.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from ._duration import parse_duration, parse_size
from ._errors import UpdateConfigError

_T = TypeVar("_T")

__all__ = ["AgentTarget", "DownloadLimits", "UpdateConfig", "parse_duration", "parse_size"]


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

    Before anything is switched, the new executable is run once with ``version_args`` and
    must print the version being installed (see :mod:`updater._versioncheck`). That check
    is what makes a *legacy* artifact acceptable (its signature binds no version), so it
    always runs for those; ``version_check_always`` runs it for signed artifacts too.

    Attributes:
        component: The component name that requests and statements use.
        agent_id: The id the :class:`~updater.AgentControl` knows the agent by.
        binary_path: The executable the supervisor runs.
        install_root: For archive artifacts: the directory holding ``versions/`` and the
            ``current`` link (None for single-executable agents).
        version_args: Arguments that make the executable print its version and exit 0;
            None disables the check (and then legacy requests for this component are
            refused with ``version_check_failed``).
        version_check_always: Check every artifact, not only legacy ones.
    """

    component: str
    agent_id: str
    binary_path: Path
    install_root: Path | None = None
    version_args: tuple[str, ...] | None = ("--version",)
    version_check_always: bool = False

    def __post_init__(self) -> None:
        if self.version_args is not None:
            object.__setattr__(self, "version_args", tuple(self.version_args))


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
        version_check_timeout_s: How long the pre-swap version run of a new executable may
            take (see :class:`AgentTarget`).
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
    version_check_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_backups < 1:
            raise ValueError(f"max_backups must be >= 1, got {self.max_backups}")
        if not self.trial_s >= 0:
            raise ValueError(f"trial_s must be >= 0, got {self.trial_s}")
        if not self.version_check_timeout_s > 0:
            raise ValueError(
                f"version_check_timeout_s must be > 0, got {self.version_check_timeout_s}"
            )

    @classmethod
    def from_mapping(
        cls,
        doc: Mapping[str, Any],
        *,
        platform: str,
        base_dir: Path | None = None,
        extra_keys: Collection[str] = (),
    ) -> UpdateConfig:
        """Build from the seed's ``update`` block (plus the new keys, all optional).

        Keys: ``download_dir`` and ``backup_dir`` (required), ``max_backups``,
        ``verify_timeout`` (the trial window), ``public_key_file``, and new: ``state_dir``
        (default: the parent of ``download_dir`` + ``/updater``), ``keyring_file``,
        ``legacy_components``, ``platform`` (default: the ``platform`` argument),
        ``version_check_timeout``, ``log_tail_lines``, ``limits`` (``connect_timeout``,
        ``deadline``, ``min_rate_bps``, ``rate_window``, ``max_bytes``, ``max_redirects``,
        ``allow_http_hosts``, ``disk_reserve_bytes``). Durations are numbers of seconds or
        strings such as ``300s``, ``5m``, ``250ms``; sizes (``max_bytes``,
        ``disk_reserve_bytes``, and ``min_rate_bps`` per second) are bytes or strings such as
        ``10MiB``, ``10 MB`` (see :mod:`updater._duration`, the supervisor's grammar).

        Args:
            doc: The block, as parsed from YAML or TOML.
            platform: This host's platform string, unless the block sets ``platform``.
            base_dir: Relative paths are resolved against it (the config file's
                directory); None keeps them as written.
            extra_keys: Keys of the block that belong to the caller (the daemon's own
                settings); any other unknown key is an error.

        Raises:
            UpdateConfigError: Every missing, unknown or malformed value, each named by
                its key inside the block (``max_backups``, ``limits.deadline``).
        """
        issues: list[tuple[str, str]] = []
        if not isinstance(doc, Mapping):
            raise UpdateConfigError([("", f"expected a mapping; got {doc!r}")])
        top = _Reader(doc, "", issues)
        top.unknown(_KEYS | set(extra_keys))
        as_path = partial(_path, base_dir=base_dir)
        download_dir = top.required("download_dir", as_path)
        backup_dir = top.required("backup_dir", as_path)
        limits = DownloadLimits()
        limits_doc = doc.get("limits")
        if limits_doc is not None and not isinstance(limits_doc, Mapping):
            issues.append(("limits", f"expected a mapping; got {limits_doc!r}"))
        elif limits_doc is not None:
            sub = _Reader(limits_doc, "limits.", issues)
            sub.unknown(_LIMIT_KEYS)
            limits = DownloadLimits(
                connect_timeout_s=sub.get("connect_timeout", _seconds, limits.connect_timeout_s),
                deadline_s=sub.get("deadline", _seconds, limits.deadline_s),
                min_rate_bps=sub.get("min_rate_bps", _size(0), limits.min_rate_bps),
                rate_window_s=sub.get("rate_window", _seconds, limits.rate_window_s),
                max_bytes=sub.get("max_bytes", _size(1), limits.max_bytes),
                max_redirects=sub.get("max_redirects", _count(0), limits.max_redirects),
                allow_http_hosts=sub.get("allow_http_hosts", _names, _NO_NAMES),
                disk_reserve_bytes=sub.get(
                    "disk_reserve_bytes", _size(0), limits.disk_reserve_bytes
                ),
            )
        state_dir = top.get("state_dir", as_path, None)
        platform = top.get("platform", _name, platform)
        max_backups = top.get("max_backups", _count(1), 5)
        trial_s = top.get("verify_timeout", _seconds_or_zero, 300.0)
        keyring_file = top.get("keyring_file", as_path, None)
        public_key_file = top.get("public_key_file", as_path, None)
        legacy_components = top.get("legacy_components", _names, _NO_NAMES)
        version_check_timeout_s = top.get("version_check_timeout", _seconds, 10.0)
        log_tail_lines = top.get("log_tail_lines", _count(1), 20)
        if issues or download_dir is None or backup_dir is None:
            raise UpdateConfigError(issues)
        return cls(
            state_dir=state_dir or download_dir.parent / "updater",
            download_dir=download_dir,
            backup_dir=backup_dir,
            platform=platform,
            max_backups=max_backups,
            trial_s=trial_s,
            keyring_file=keyring_file,
            public_key_file=public_key_file,
            legacy_components=legacy_components,
            limits=limits,
            log_tail_lines=log_tail_lines,
            version_check_timeout_s=version_check_timeout_s,
        )


_NO_NAMES: frozenset[str] = frozenset()
_KEYS = frozenset(
    {
        "download_dir",
        "backup_dir",
        "state_dir",
        "platform",
        "max_backups",
        "verify_timeout",
        "keyring_file",
        "public_key_file",
        "legacy_components",
        "version_check_timeout",
        "log_tail_lines",
        "limits",
    }
)
_LIMIT_KEYS = frozenset(
    {
        "connect_timeout",
        "deadline",
        "min_rate_bps",
        "rate_window",
        "max_bytes",
        "max_redirects",
        "allow_http_hosts",
        "disk_reserve_bytes",
    }
)


class _Reader:
    """Reads one mapping: converts values and collects every problem under its key path."""

    def __init__(self, doc: Mapping[str, Any], prefix: str, issues: list[tuple[str, str]]):
        self.doc = doc
        self.prefix = prefix
        self.issues = issues

    def get(self, key: str, convert: Callable[[object], _T], default: _T) -> _T:
        """The converted value of ``key``, or ``default`` if unset (null) or invalid."""
        value = self.doc.get(key)
        if value is None:
            return default
        try:
            return convert(value)
        except (TypeError, ValueError) as exc:
            self.issues.append((self.prefix + key, str(exc)))
            return default

    def required(self, key: str, convert: Callable[[object], _T]) -> _T | None:
        """Like :meth:`get`, but a missing key is a problem too."""
        if self.doc.get(key) is None:
            self.issues.append((self.prefix + key, "required"))
            return None
        return self.get(key, convert, None)

    def add(self, key: str, message: str) -> None:
        """Record a problem with ``key`` (relative to this mapping)."""
        self.issues.append((self.prefix + key, message))

    def unknown(self, known: Collection[str]) -> None:
        """Report every key that is not in ``known`` (with the closest known one)."""
        for key in self.doc:
            if key not in known:
                close = difflib.get_close_matches(str(key), sorted(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.issues.append((f"{self.prefix}{key}", f"unknown key{hint}"))


def _path(value: object, *, base_dir: Path | None) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a path; got {value!r}")
    path = Path(value)
    return base_dir / path if base_dir is not None and not path.is_absolute() else path


def _absolute_path(value: object) -> Path:
    path = _path(value, base_dir=None)
    if not path.is_absolute():
        raise ValueError(f"expected an absolute path; got {value!r}")
    return path


def _seconds_or_zero(value: object) -> float:
    seconds = parse_duration(value)
    if not seconds >= 0:
        raise ValueError(f"expected a duration >= 0; got {value!r}")
    return seconds


def _seconds(value: object) -> float:
    seconds = parse_duration(value)
    if not seconds > 0:
        raise ValueError(f"expected a duration > 0; got {value!r}")
    return seconds


def _count(minimum: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"expected an integer >= {minimum}; got {value!r}")
        return value

    return convert


def _size(minimum: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        size = parse_size(value)
        if size < minimum:
            raise ValueError(f"expected a size >= {minimum}; got {value!r}")
        return size

    return convert


def _name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string; got {value!r}")
    return value


def _names(value: object) -> frozenset[str]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of names; got {value!r}")
    return frozenset(_name(item) for item in value)


def _choice(choices: Collection[str]) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}; got {value!r}")
        return value

    return convert


def _command(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"expected a non-empty list of strings; got {value!r}")
    return tuple(_name(part) for part in value)
