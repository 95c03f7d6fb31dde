"""Errors of the reference daemon program (part of ``transport``'s error family)."""

from __future__ import annotations

from transport._errors import TransportError

__all__ = ["DaemonError", "DaemonLockedError"]


class DaemonError(TransportError):
    """Something the reference daemon program cannot do."""


class DaemonLockedError(DaemonError):
    """Another daemon holds the lock of this work directory."""

    def __init__(self, lock_path: str, holder: str) -> None:
        self.lock_path = lock_path
        super().__init__(f"another daemon holds {lock_path} ({holder})")
        self.holder = holder
