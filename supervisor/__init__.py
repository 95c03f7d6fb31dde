"""Trio-based supervision of agent processes.

The centre of the project: a registry of agents, one supervised process per agent with
restart policies, capped exponential backoff, whole-tree stops, log capture and rotation,
health checks (heartbeats, sd_notify, process-tree CPU and memory, HTTP and TCP probes)
with recovery through the restart policy, an event stream, reload planning, and a daemon
mode that leaves agents running across its own restarts and adopts them again. Agents
written in Python can use :mod:`supervisor.agent` to send heartbeats and notifications.

Quick start::

    import trio
    from supervisor import AgentSpec, AgentState, open_supervisor

    async def main() -> None:
        spec = AgentSpec(id="ticker", binary_path="/bin/sh",
                         args=("-c", "while :; do date; sleep 1; done"))
        async with open_supervisor([spec], work_dir="/tmp/hostvisor-demo") as sup:
            await sup.wait_state("ticker", AgentState.RUNNING)
            print(sup.status("ticker").pid)

    trio.run(main)
"""

from ._backoff import backoff_delay as backoff_delay, nominal_delay as nominal_delay
from ._config import (
    check_paths as check_paths,
    dump_config as dump_config,
    load_config as load_config,
    parse_config as parse_config,
)
from ._duration import (
    format_duration as format_duration,
    parse_duration as parse_duration,
    parse_size as parse_size,
)
from ._errors import (
    AgentActiveError as AgentActiveError,
    ConfigError as ConfigError,
    ConfigIssue as ConfigIssue,
    ConfigLoadError as ConfigLoadError,
    DaemonLockedError as DaemonLockedError,
    DuplicateAgentError as DuplicateAgentError,
    InvalidTransitionError as InvalidTransitionError,
    SpawnError as SpawnError,
    StateFileError as StateFileError,
    StopError as StopError,
    SupervisorClosedError as SupervisorClosedError,
    SupervisorError as SupervisorError,
    UnknownAgentError as UnknownAgentError,
)
from ._events import AgentEvent as AgentEvent, EventSubscription as EventSubscription
from ._health import (
    AgentHealth as AgentHealth,
    Check as Check,
    CheckState as CheckState,
    FailureCounter as FailureCounter,
    HealthSnapshot as HealthSnapshot,
    HeartbeatTracker as HeartbeatTracker,
    ResourceAlert as ResourceAlert,
    ThresholdTracker as ThresholdTracker,
    Verdict as Verdict,
)
from ._heartbeat import SocketSetupError as SocketSetupError
from ._history import ResourceHistory as ResourceHistory, ResourceSample as ResourceSample
from ._lifecycle import AgentState as AgentState, Event as Event, transition as transition
from ._machine import (
    AgentMachine as AgentMachine,
    ExitStatus as ExitStatus,
    Kill as Kill,
    Spawn as Spawn,
    StateChange as StateChange,
)
from ._registry import (
    Registry as Registry,
    ReloadPlan as ReloadPlan,
    apply_plan as apply_plan,
    plan_reload as plan_reload,
)
from ._spec import (
    AgentSpec as AgentSpec,
    AgentType as AgentType,
    Config as Config,
    DaemonSpec as DaemonSpec,
    HealthCheckSpec as HealthCheckSpec,
    LogSpec as LogSpec,
    RestartPolicy as RestartPolicy,
    RestartSpec as RestartSpec,
    default_args as default_args,
)
from ._status import (
    AgentInfo as AgentInfo,
    HealthStatistics as HealthStatistics,
    Outcome as Outcome,
    SupervisorStatistics as SupervisorStatistics,
)
from ._supervisor import Supervisor as Supervisor, open_supervisor as open_supervisor
from ._update_control import UpdateControl as UpdateControl

__all__ = [
    # running agents
    "Supervisor",
    "open_supervisor",
    "AgentInfo",
    "Outcome",
    "AgentEvent",
    "EventSubscription",
    "AgentState",
    "UpdateControl",
    "SupervisorStatistics",
    # health
    "HealthSnapshot",
    "Check",
    "CheckState",
    "Verdict",
    "ResourceAlert",
    "ResourceSample",
    "HealthStatistics",
    # describing agents
    "Config",
    "DaemonSpec",
    "AgentSpec",
    "AgentType",
    "RestartSpec",
    "RestartPolicy",
    "HealthCheckSpec",
    "LogSpec",
    "default_args",
    # configuration files
    "load_config",
    "parse_config",
    "check_paths",
    "dump_config",
    "parse_duration",
    "parse_size",
    "format_duration",
    # pure decisions
    "AgentMachine",
    "ExitStatus",
    "Spawn",
    "Kill",
    "StateChange",
    "Event",
    "transition",
    "backoff_delay",
    "nominal_delay",
    "Registry",
    "ReloadPlan",
    "plan_reload",
    "apply_plan",
    "AgentHealth",
    "ThresholdTracker",
    "HeartbeatTracker",
    "FailureCounter",
    "ResourceHistory",
    # errors
    "SupervisorError",
    "ConfigError",
    "ConfigIssue",
    "ConfigLoadError",
    "UnknownAgentError",
    "DuplicateAgentError",
    "AgentActiveError",
    "InvalidTransitionError",
    "SpawnError",
    "StopError",
    "SupervisorClosedError",
    "DaemonLockedError",
    "StateFileError",
    "SocketSetupError",
]
