"""The Manager's errors: one root, :class:`ManagerError`, under ``transport``'s own."""

from __future__ import annotations

from collections.abc import Sequence

from transport._errors import TransportError

__all__ = [
    "ConflictError",
    "DaemonUnreachableError",
    "ManagerConfigError",
    "ManagerError",
    "NotFoundError",
    "StoreError",
]


class ManagerError(TransportError):
    """The root of the Manager's errors."""


class ManagerConfigError(ManagerError, ValueError):
    """The Manager's configuration is invalid.

    Attributes:
        issues: Each problem as ``(path, message)``, e.g. ``("grpc.port", "must be ...")``.
    """

    def __init__(self, issues: Sequence[tuple[str, str]], *, source: str | None = None) -> None:
        self.issues = tuple(issues)
        self.source = source
        where = f"{source}: " if source else ""
        lines = [f"{path}: {message}" if path else message for path, message in self.issues]
        super().__init__(where + "invalid configuration:\n  " + "\n  ".join(lines))


class StoreError(ManagerError):
    """The database failed or refused an operation (``__cause__`` is the driver's error)."""


class NotFoundError(StoreError, LookupError):
    """What was asked for does not exist (an unknown node, user, agent, ...)."""


class ConflictError(StoreError):
    """The change conflicts with what is stored (a user name that exists, ...)."""


class DaemonUnreachableError(ManagerError):
    """A node's daemon could not be reached (not connected, timed out, refused)."""
