"""The agent registry and the reload planner: pure bookkeeping of *what* is supervised.

:class:`Registry` is the seed's AgentRegistry (004 section 3.5.1): register, get, list,
list by type, unregister. It holds specs only; whether an agent runs is the supervisor's
business, which it tells the registry through the ``is_active`` predicate so that
unregistering a running agent is refused.

:func:`plan_reload` compares the agents of the old and the new configuration and says
what to do with each: add, remove, restart (the process-defining fields changed), update
in place (only settings such as the restart policy changed) or leave alone. It is a pure
function; :func:`apply_plan` applies a plan to a set of specs, and
``apply_plan(plan_reload(a, b), a) == b`` for any ``a`` and ``b``.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ._errors import AgentActiveError, DuplicateAgentError, UnknownAgentError
from ._spec import AgentSpec, AgentType

__all__ = ["ReloadPlan", "Registry", "apply_plan", "plan_reload"]


class Registry:
    """Registered agents by id, in registration order.

    Args:
        is_active: Tells whether an agent currently has (or is about to have) a process;
            such an agent cannot be unregistered. Defaults to "never active".
    """

    def __init__(self, is_active: Callable[[str], bool] | None = None) -> None:
        self._specs: dict[str, AgentSpec] = {}
        self._is_active = is_active or (lambda _agent_id: False)

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._specs

    def register(self, spec: AgentSpec) -> AgentSpec:
        """Add an agent.

        Raises:
            DuplicateAgentError: an agent with this id is already registered.
        """
        if spec.id in self._specs:
            raise DuplicateAgentError(spec.id)
        self._specs[spec.id] = spec
        return spec

    def replace(self, spec: AgentSpec) -> None:
        """Swap the spec of a registered agent (used when a reload updates it).

        Raises:
            UnknownAgentError: no such agent.
        """
        self.get(spec.id)
        self._specs[spec.id] = spec

    def get(self, agent_id: str) -> AgentSpec:
        """Return the spec of an agent.

        Raises:
            UnknownAgentError: no such agent.
        """
        try:
            return self._specs[agent_id]
        except KeyError:
            raise UnknownAgentError(agent_id) from None

    def list(self) -> builtins.list[AgentSpec]:
        """Every registered agent, in registration order."""
        return list(self._specs.values())

    def list_by_type(self, agent_type: AgentType) -> builtins.list[AgentSpec]:
        """The registered agents of one type, in registration order."""
        return [spec for spec in self._specs.values() if spec.type is agent_type]

    def unregister(self, agent_id: str) -> AgentSpec:
        """Remove an agent that is not running.

        Raises:
            UnknownAgentError: no such agent.
            AgentActiveError: the agent is running (stop it first).
        """
        spec = self.get(agent_id)
        if self._is_active(agent_id):
            raise AgentActiveError(agent_id, "running", "unregister")
        del self._specs[agent_id]
        return spec


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload does, agent by agent.

    Attributes:
        add: New agents, in the new file's order.
        remove: Ids of agents that are gone from the new configuration.
        restart: Agents whose process-defining fields changed: they are restarted with
            the new spec (started, if enabled and not running).
        update: Agents whose other settings changed: applied without a restart.
        unchanged: Ids of agents that are identical: never touched.
    """

    add: tuple[AgentSpec, ...] = ()
    remove: tuple[str, ...] = ()
    restart: tuple[AgentSpec, ...] = ()
    update: tuple[AgentSpec, ...] = ()
    unchanged: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        """True when the reload changes nothing."""
        return not (self.add or self.remove or self.restart or self.update)


def plan_reload(old: Iterable[AgentSpec], new: Iterable[AgentSpec]) -> ReloadPlan:
    """Compare two sets of agents and plan the minimal change.

    Args:
        old: The agents supervised now.
        new: The agents of the re-read configuration.

    Returns:
        The plan. An agent whose ``enabled`` flag changed is restarted (which starts or
        stops it); one whose process-defining fields (binary, args, env, work_dir, ...)
        changed is restarted; one with only other changes is updated in place.
    """
    before = {spec.id: spec for spec in old}
    after = {spec.id: spec for spec in new}
    add, restart, update, unchanged = [], [], [], []
    for agent_id, spec in after.items():
        previous = before.get(agent_id)
        if previous is None:
            add.append(spec)
        elif previous == spec:
            unchanged.append(agent_id)
        elif previous.process_key() != spec.process_key() or previous.enabled != spec.enabled:
            restart.append(spec)
        else:
            update.append(spec)
    remove = [agent_id for agent_id in before if agent_id not in after]
    return ReloadPlan(tuple(add), tuple(remove), tuple(restart), tuple(update), tuple(unchanged))


def apply_plan(plan: ReloadPlan, old: Mapping[str, AgentSpec]) -> dict[str, AgentSpec]:
    """Apply a plan to a mapping of agents by id (the pure model of a reload).

    Returns:
        A new mapping; the input is not modified.
    """
    result = {agent_id: spec for agent_id, spec in old.items() if agent_id not in plan.remove}
    for spec in (*plan.restart, *plan.update, *plan.add):
        result[spec.id] = spec
    return result
