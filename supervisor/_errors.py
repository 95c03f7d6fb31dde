"""The `supervisor` package's error hierarchy: one root, precise leaves.

Every error raised by this package derives from :class:`SupervisorError`. Where an
error carries the meaning of a built-in, it subclasses that too (``ValueError`` for bad
configuration, ``LookupError`` for an unknown agent), so callers can catch either.
Errors from the OS and third-party libraries are translated at the IO boundary and keep
the original as ``__cause__``.

The seed's error codes (D1001 to D3003) are carried as the ``code`` attribute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class SupervisorError(Exception):
    """Root of every error raised by the `supervisor` package."""

    code: str = "D3000"


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem found in a configuration document.

    Attributes:
        path: Where the problem is, e.g. ``agents[1].restart.policy`` (empty for the document).
        message: What is wrong, including the offending value.
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(SupervisorError, ValueError):
    """A configuration could not be loaded (D1001) or is invalid (D1002).

    All problems are collected and reported at once in :attr:`issues`.
    """

    code = "D1002"

    def __init__(self, issues: Sequence[ConfigIssue], *, source: str | None = None) -> None:
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        self.source = source
        head = f"invalid configuration{f' in {source}' if source else ''}"
        lines = "\n".join(f"  {issue}" for issue in self.issues)
        super().__init__(f"{head} ({len(self.issues)} error(s)):\n{lines}")


class ConfigLoadError(ConfigError):
    """The configuration file could not be read or parsed (D1001)."""

    code = "D1001"


class UnknownAgentError(SupervisorError, LookupError):
    """No agent with this id is registered."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        super().__init__(f"unknown agent {agent_id!r}")


class DuplicateAgentError(SupervisorError, ValueError):
    """An agent with this id is already registered."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        super().__init__(f"agent {agent_id!r} is already registered")


class AgentActiveError(SupervisorError):
    """The operation needs the agent to be stopped, and it is not."""

    def __init__(self, agent_id: str, state: str, operation: str) -> None:
        self.agent_id = agent_id
        self.state = state
        super().__init__(f"cannot {operation} agent {agent_id!r} while it is {state}")


class InvalidTransitionError(SupervisorError):
    """An event arrived that the agent lifecycle does not allow in its current state."""

    def __init__(self, state: str, event: str, target: str | None = None) -> None:
        self.state = state
        self.event = event
        self.target = target
        to = f" to {target}" if target is not None else ""
        super().__init__(f"illegal transition: {event}{to} while {state}")


class SpawnError(SupervisorError):
    """An agent's process could not be started (D3001). ``__cause__`` is the OSError."""

    code = "D3001"


class StopError(SupervisorError):
    """An agent's process could not be stopped (D3002)."""

    code = "D3002"


class SupervisorClosedError(SupervisorError):
    """The supervisor is not running (not started yet, or already shut down)."""


class StateFileError(SupervisorError):
    """An :class:`~supervisor.AgentStore` could not read or write the agents' records."""
