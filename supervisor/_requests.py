"""What may be asked of an agent's runner: a closed union of frozen requests.

Every outside change to an agent (a user's start, stop or restart, a health verdict, a
readiness report, an adoption at start, a reload's replacement or update, an updater's
hold) is one of these values, posted to the agent's inbox and handled in one place
(:meth:`supervisor._runner.AgentRunner._handle`, a ``match`` over :data:`Request`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._process import Child
    from ._spec import AgentSpec

__all__ = [
    "Adopt",
    "Hold",
    "Ready",
    "Replace",
    "Request",
    "Restart",
    "Start",
    "Stop",
    "Unhealthy",
    "Update",
]


@dataclass(frozen=True, slots=True)
class Start:
    """Run the agent (also a disabled one); clears ``failed`` and the retry count."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the agent's whole tree; ``graceful=False`` kills at once."""

    graceful: bool = True


@dataclass(frozen=True, slots=True)
class Restart:
    """Stop the process (if any) gracefully and start it again at once."""


@dataclass(frozen=True, slots=True)
class Unhealthy:
    """A health verdict: recover through the restart policy."""

    reason: str


@dataclass(frozen=True, slots=True)
class Ready:
    """The agent reported itself ready (sd_notify ``READY=1``)."""


@dataclass(frozen=True, slots=True)
class Adopt:
    """Supervise a process left running by an earlier run."""

    child: Child


@dataclass(frozen=True, slots=True)
class Replace:
    """A reload changed what defines the process: stop it, take the new spec, start it
    again if it should run (enabled, and running or wanted before), all in one step."""

    spec: AgentSpec


@dataclass(frozen=True, slots=True)
class Update:
    """A reload changed only settings that apply to a running process."""

    spec: AgentSpec


@dataclass(frozen=True, slots=True)
class Hold:
    """Hold automatic restarts (``on``) or release them: while held, every exit is final."""

    on: bool


#: Everything that may be asked of a runner.
Request = Start | Stop | Restart | Unhealthy | Ready | Adopt | Replace | Update | Hold
