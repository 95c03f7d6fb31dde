"""Health checks of supervised agents: pure trackers, and the IO shell that feeds them.

Layout
------
Pure (no trio, os, socket; time is an argument):

* :mod:`._trackers`: one signal each: :class:`ThresholdTracker` (CPU, memory),
  :class:`HeartbeatTracker`, :class:`FailureCounter` (HTTP, TCP probes).
* :mod:`._agent_health`: :class:`AgentHealth`, every check of one agent and the rule of
  when to ask for recovery (once per unhealthy episode).
* :mod:`._history`: :class:`ResourceHistory`, the bounded sample history.
* :mod:`._judge`: what an HTTP probe sends and how its answer is judged; endpoints.

IO:

* :mod:`._sockets`: private Unix socket files (0600 in a 0700 directory).
* :mod:`._heartbeat` and :mod:`._notify`: the heartbeat (JSON lines) and sd_notify
  receivers.
* :mod:`._probes`: HTTP(S) and TCP probes, a whole round at a time.
* :mod:`._resources`: CPU and RSS of a process tree, from ``/proc`` (through
  :mod:`supervisor._proc`).
* :mod:`._monitor`: :class:`HealthMonitor`, which runs all of the above on shared ticks
  for a supervisor's agents and posts verdicts to their runners.

The rest of :mod:`supervisor` imports health names from here only.
"""

from ._agent_health import (
    AgentHealth as AgentHealth,
    Check as Check,
    HealthSnapshot as HealthSnapshot,
    ResourceAlert as ResourceAlert,
)
from ._heartbeat import HeartbeatStatistics as HeartbeatStatistics
from ._history import ResourceHistory as ResourceHistory, ResourceSample as ResourceSample
from ._judge import parse_endpoint as parse_endpoint
from ._notify import NotifyStatistics as NotifyStatistics
from ._resources import CpuMeter as CpuMeter
from ._sockets import SocketSetupError as SocketSetupError
from ._trackers import (
    CheckState as CheckState,
    FailureCounter as FailureCounter,
    HeartbeatTracker as HeartbeatTracker,
    ThresholdTracker as ThresholdTracker,
    Verdict as Verdict,
)

# isort: split
# The monitor comes last, on purpose: it imports the runner, which (with the event and
# status modules it imports) takes the names above from this package while it is still
# being initialised. Every name they use must be bound before this line.
from ._monitor import HealthMonitor as HealthMonitor, socket_dir_for as socket_dir_for

__all__ = [
    # pure decisions
    "AgentHealth",
    "Check",
    "CheckState",
    "FailureCounter",
    "HealthSnapshot",
    "HeartbeatTracker",
    "ResourceAlert",
    "ResourceHistory",
    "ResourceSample",
    "ThresholdTracker",
    "Verdict",
    "parse_endpoint",
    # IO
    "CpuMeter",
    "HealthMonitor",
    "HeartbeatStatistics",
    "NotifyStatistics",
    "SocketSetupError",
    "socket_dir_for",
]
