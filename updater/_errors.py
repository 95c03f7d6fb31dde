"""The `updater` package's error hierarchy: one root, precise leaves, machine-readable reasons.

Every error raised by this package derives from :class:`UpdaterError`. Each carries

* ``code``: the seed's error code (004 section 7.1): ``D4001`` download failed, ``D4002``
  verification failed, ``D4003`` the update could not be applied, ``D4004`` the rollback failed;
* ``reason``: a :class:`Reason`, the stable machine-readable cause that also ends up in
  :attr:`updater.UpdateResult.reason` (``hash_mismatch``, ``untrusted_key``, ``too_slow``, ...).

Errors from the OS, h11 and ``cryptography`` are translated at the IO boundary with
``raise X(...) from exc``, so the original stays available as ``__cause__``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

__all__ = [
    "ApplyError",
    "BackupError",
    "DownloadError",
    "HashMismatchError",
    "Reason",
    "RollbackError",
    "SignatureError",
    "SpoolError",
    "UpdateConfigError",
    "UpdateInProgressError",
    "UpdaterError",
    "VerificationError",
]


class Reason(enum.StrEnum):
    """Why an update did not happen (or was rolled back). Values are stable wire strings."""

    # Verification (D4002).
    HASH_MISMATCH = "hash_mismatch"
    LENGTH_MISMATCH = "length_mismatch"
    BAD_SIGNATURE = "bad_signature"
    BAD_ENVELOPE = "bad_envelope"
    UNTRUSTED_KEY = "untrusted_key"
    ROLLBACK = "rollback"
    EXPIRED = "expired"
    COMPONENT_MISMATCH = "component_mismatch"
    PLATFORM_MISMATCH = "platform_mismatch"
    VERSION_MISMATCH = "version_mismatch"
    BAD_KEYRING = "bad_keyring"
    BAD_ARCHIVE = "bad_archive"
    BAD_REQUEST = "bad_request"
    # A validly signed request whose install was already tried (and did not succeed).
    REPLAYED = "replayed"
    # The pre-swap ``--version`` run of a staged executable (legacy artifacts, or all).
    BINARY_VERSION_MISMATCH = "binary_version_mismatch"
    VERSION_CHECK_FAILED = "version_check_failed"
    # Download (D4001).
    BAD_URL = "bad_url"
    TOO_LARGE = "too_large"
    TOO_SLOW = "too_slow"
    UNREACHABLE = "unreachable"
    TLS_ERROR = "tls_error"
    HTTP_STATUS = "http_status"
    PROTOCOL_ERROR = "protocol_error"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    DISK_FULL = "disk_full"
    # Apply (D4003).
    BUSY = "busy"
    UNKNOWN_COMPONENT = "unknown_component"
    BACKUP_FAILED = "backup_failed"
    IO_ERROR = "io_error"
    STOP_FAILED = "stop_failed"
    START_FAILED = "start_failed"
    NOT_READY = "not_ready"
    UNHEALTHY = "unhealthy"
    INTERRUPTED = "interrupted"
    TRIAL_EXPIRED = "trial_expired"
    # Rollback (D4004).
    BACKUP_CORRUPT = "backup_corrupt"
    ROLLBACK_FAILED = "rollback_failed"
    # Configuration (never in a result: raised when the updater is set up).
    BAD_CONFIG = "bad_config"


class UpdaterError(Exception):
    """Root of every error raised by the `updater` package.

    Attributes:
        reason: The machine-readable cause.
        code: The seed's error code (class attribute, ``D4001`` to ``D4004``).
    """

    code: str = "D4003"

    def __init__(self, reason: Reason, message: str) -> None:
        self.reason = reason
        super().__init__(f"{reason.value}: {message}")


class DownloadError(UpdaterError):
    """The artifact could not be fetched within the limits (D4001)."""

    code = "D4001"


class VerificationError(UpdaterError):
    """The envelope, the artifact or a keyring failed verification (D4002)."""

    code = "D4002"


class HashMismatchError(VerificationError):
    """The bytes received do not have the signed SHA-256 or length (D4002)."""

    def __init__(self, message: str, *, reason: Reason = Reason.HASH_MISMATCH) -> None:
        super().__init__(reason, message)


class SignatureError(VerificationError):
    """No trusted key produced a valid signature over the envelope or the digest (D4002)."""

    def __init__(self, message: str, *, reason: Reason = Reason.BAD_SIGNATURE) -> None:
        super().__init__(reason, message)


class ApplyError(UpdaterError):
    """The verified update could not be installed or did not survive its trial (D4003)."""

    code = "D4003"


class BackupError(ApplyError):
    """The current version could not be backed up, so nothing was changed (D4003)."""

    def __init__(self, message: str, *, reason: Reason = Reason.BACKUP_FAILED) -> None:
        super().__init__(reason, message)


class UpdateInProgressError(ApplyError):
    """Another update holds the lock; only one runs at a time (D4003, reason ``busy``)."""

    def __init__(self, message: str) -> None:
        super().__init__(Reason.BUSY, message)


class RollbackError(UpdaterError):
    """The previous version could not be restored: a human is needed (D4004).

    Attributes:
        journal: The journal document (as a dict) describing the half-done transaction.
    """

    code = "D4004"

    def __init__(
        self, message: str, *, reason: Reason = Reason.ROLLBACK_FAILED, journal: object = None
    ) -> None:
        self.journal = journal
        super().__init__(reason, message)


class SpoolError(UpdaterError):
    """The request spool directory is missing, not private, or unusable (D4003)."""

    code = "D4003"

    def __init__(self, message: str) -> None:
        super().__init__(Reason.IO_ERROR, message)


class UpdateConfigError(UpdaterError, ValueError):
    """The ``update`` configuration block is invalid (D1002, like any configuration error).

    Every problem is collected, each with the key it concerns.

    Attributes:
        issues: ``(key, message)`` pairs; keys are paths inside the block, such as
            ``max_backups`` or ``limits.deadline``.
    """

    code = "D1002"

    def __init__(self, issues: Sequence[tuple[str, str]]) -> None:
        self.issues: tuple[tuple[str, str], ...] = tuple(issues)
        super().__init__(Reason.BAD_CONFIG, "; ".join(f"{key}: {msg}" for key, msg in issues))
