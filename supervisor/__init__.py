"""Trio-based supervision of agent processes.

The centre of the project: a registry of agents, one supervised process per agent with
restart policies, capped exponential backoff, whole-tree stops, log capture and rotation,
an event stream, reload planning, and a daemon mode that leaves agents running across
its own restarts and adopts them again.

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

from ._backoff import backoff_delay as backoff_delay
from ._backoff import nominal_delay as nominal_delay
from ._config import (
    check_paths as check_paths,
)
from ._config import (
    dump_config as dump_config,
)
from ._config import (
    load_config as load_config,
)
from ._config import (
    parse_config as parse_config,
)
from ._duration import (
    format_duration as format_duration,
)
from ._duration import (
    parse_duration as parse_duration,
)
from ._duration import (
    parse_size as parse_size,
)
from ._errors import (
    AgentActiveError as AgentActiveError,
)
from ._errors import (
    ConfigError as ConfigError,
)
from ._errors import (
    ConfigIssue as ConfigIssue,
)
from ._errors import (
    ConfigLoadError as ConfigLoadError,
)
from ._errors import (
    DaemonLockedError as DaemonLockedError,
)
from ._errors import (
    DuplicateAgentError as DuplicateAgentError,
)
from ._errors import (
    InvalidTransitionError as InvalidTransitionError,
)
from ._errors import (
    SpawnError as SpawnError,
)
from ._errors import (
    StateFileError as StateFileError,
)
from ._errors import (
    StopError as StopError,
)
from ._errors import (
    SupervisorClosedError as SupervisorClosedError,
)
from ._errors import (
    SupervisorError as SupervisorError,
)
from ._errors import (
    UnknownAgentError as UnknownAgentError,
)
from ._events import AgentEvent as AgentEvent
from ._events import EventSubscription as EventSubscription
from ._lifecycle import AgentState as AgentState
from ._lifecycle import Event as Event
from ._lifecycle import transition as transition
from ._machine import (
    AgentMachine as AgentMachine,
)
from ._machine import (
    ExitStatus as ExitStatus,
)
from ._machine import (
    Kill as Kill,
)
from ._machine import (
    Spawn as Spawn,
)
from ._machine import (
    StateChange as StateChange,
)
from ._registry import (
    Registry as Registry,
)
from ._registry import (
    ReloadPlan as ReloadPlan,
)
from ._registry import (
    apply_plan as apply_plan,
)
from ._registry import (
    plan_reload as plan_reload,
)
from ._spec import (
    AgentSpec as AgentSpec,
)
from ._spec import (
    AgentType as AgentType,
)
from ._spec import (
    Config as Config,
)
from ._spec import (
    DaemonSpec as DaemonSpec,
)
from ._spec import (
    HealthCheckSpec as HealthCheckSpec,
)
from ._spec import (
    LogSpec as LogSpec,
)
from ._spec import (
    RestartPolicy as RestartPolicy,
)
from ._spec import (
    RestartSpec as RestartSpec,
)
from ._spec import (
    default_args as default_args,
)
from ._status import AgentInfo as AgentInfo
from ._status import Outcome as Outcome
from ._supervisor import Supervisor as Supervisor
from ._supervisor import open_supervisor as open_supervisor

__all__ = [
    # running agents
    "Supervisor",
    "open_supervisor",
    "AgentInfo",
    "Outcome",
    "AgentEvent",
    "EventSubscription",
    "AgentState",
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
]
