"""Trio-based supervision of agent processes.

The centre of the project: a registry of agents, one supervised process per agent with
restart policies, capped exponential backoff, whole-tree stops, log capture and rotation,
health checks (heartbeats, sd_notify, process-tree CPU and memory, HTTP and TCP probes)
with recovery through the restart policy, an event stream, reload planning, and
adoption: with an :class:`AgentStore`, agents can be left running across the program's
own restarts and adopted again. Agents written in Python can use :mod:`supervisor.agent`
to send heartbeats and notifications; programs that read agents from a configuration
file build them with :func:`parse_agents` and describe their own sections with
:mod:`supervisor.schema`. The reference daemon program built on it is
:mod:`transport.daemon` (the ``hostvisor`` command).

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
    check_agent_paths as check_agent_paths,
    dump_agent as dump_agent,
    parse_agents as parse_agents,
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
from ._files import atomic_write as atomic_write
from ._health import (
    AgentHealth as AgentHealth,
    Check as Check,
    CheckState as CheckState,
    FailureCounter as FailureCounter,
    HealthSnapshot as HealthSnapshot,
    HeartbeatTracker as HeartbeatTracker,
    ResourceAlert as ResourceAlert,
    ResourceHistory as ResourceHistory,
    ResourceSample as ResourceSample,
    SocketSetupError as SocketSetupError,
    ThresholdTracker as ThresholdTracker,
    Verdict as Verdict,
)
from ._lifecycle import AgentState as AgentState, Event as Event, transition as transition
from ._machine import (
    AgentMachine as AgentMachine,
    ExitStatus as ExitStatus,
    Kill as Kill,
    Spawn as Spawn,
    StateChange as StateChange,
)
from ._persist import (
    AgentRecord as AgentRecord,
    AgentStore as AgentStore,
    SpawnJournal as SpawnJournal,
    spec_digest as spec_digest,
)
from ._proc import children_of as children_of
from ._process import (
    ProcessIdentity as ProcessIdentity,
    set_child_subreaper as set_child_subreaper,
)
from ._registry import (
    Registry as Registry,
    ReloadPlan as ReloadPlan,
    apply_plan as apply_plan,
    plan_reload as plan_reload,
)
from ._spec import (
    DEFAULT_WORK_DIR as DEFAULT_WORK_DIR,
    AgentSpec as AgentSpec,
    AgentType as AgentType,
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

__all__ = [
    # running agents
    "Supervisor",
    "open_supervisor",
    "AgentInfo",
    "Outcome",
    "AgentEvent",
    "EventSubscription",
    "AgentState",
    "AgentStore",
    "SpawnJournal",
    "AgentRecord",
    "ProcessIdentity",
    "spec_digest",
    "SupervisorStatistics",
    # process control
    "set_child_subreaper",
    "children_of",
    # health
    "HealthSnapshot",
    "Check",
    "CheckState",
    "Verdict",
    "ResourceAlert",
    "ResourceSample",
    "HealthStatistics",
    # describing agents
    "AgentSpec",
    "AgentType",
    "RestartSpec",
    "RestartPolicy",
    "HealthCheckSpec",
    "LogSpec",
    "default_args",
    "DEFAULT_WORK_DIR",
    # configuration documents
    "parse_agents",
    "check_agent_paths",
    "dump_agent",
    "parse_duration",
    "parse_size",
    "format_duration",
    "atomic_write",
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
    "StateFileError",
    "SocketSetupError",
]
