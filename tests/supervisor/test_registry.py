"""The registry and the reload planner."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from supervisor import (
    AgentActiveError,
    AgentSpec,
    AgentType,
    DuplicateAgentError,
    Registry,
    RestartPolicy,
    RestartSpec,
    UnknownAgentError,
    apply_plan,
    plan_reload,
)


def spec(agent_id: str, **kw: object) -> AgentSpec:
    return AgentSpec(id=agent_id, binary_path="/bin/true", **kw)  # type: ignore[arg-type]


def test_register_get_list_by_type() -> None:
    """Agents are kept in registration order and found by id and type."""
    registry = Registry()
    registry.register(spec("b", type=AgentType.TELEGRAF))
    registry.register(spec("a"))
    assert [s.id for s in registry.list()] == ["b", "a"]
    assert registry.get("a").id == "a"
    assert [s.id for s in registry.list_by_type(AgentType.TELEGRAF)] == ["b"]
    assert "a" in registry and len(registry) == 2


def test_duplicates_and_unknowns_are_named_errors() -> None:
    """A duplicate id and an unknown id raise errors that name the id."""
    registry = Registry()
    registry.register(spec("a"))
    with pytest.raises(DuplicateAgentError, match="'a'"):
        registry.register(spec("a"))
    with pytest.raises(UnknownAgentError, match="'zz'"):
        registry.get("zz")
    with pytest.raises(LookupError):
        registry.unregister("zz")


def test_unregister_refused_while_active() -> None:
    """A running agent cannot be unregistered; a stopped one can."""
    active = {"a"}
    registry = Registry(is_active=lambda agent_id: agent_id in active)
    registry.register(spec("a"))
    with pytest.raises(AgentActiveError, match="cannot unregister agent 'a' while it is running"):
        registry.unregister("a")
    active.clear()
    registry.unregister("a")
    assert len(registry) == 0


ids = st.sampled_from([f"agent{i}" for i in range(6)])
specs = st.builds(
    spec,
    ids,
    args=st.lists(st.sampled_from(["-a", "-b"]), max_size=2).map(tuple),
    enabled=st.booleans(),
    stop_timeout_s=st.sampled_from([1.0, 30.0]),
    restart=st.builds(RestartSpec, policy=st.sampled_from(RestartPolicy)),
    env=st.dictionaries(st.sampled_from(["A", "B"]), st.sampled_from(["1", "2"]), max_size=2),
)
spec_sets = st.lists(specs, max_size=6, unique_by=lambda s: s.id)


@given(spec_sets, spec_sets)
def test_plan_applied_to_old_gives_new(old: list[AgentSpec], new: list[AgentSpec]) -> None:
    """Applying the plan to the old agents yields exactly the new agents."""
    plan = plan_reload(old, new)
    assert apply_plan(plan, {s.id: s for s in old}) == {s.id: s for s in new}


@given(spec_sets, spec_sets)
def test_unchanged_agents_are_never_touched(old: list[AgentSpec], new: list[AgentSpec]) -> None:
    """An agent identical in both sets appears only under unchanged."""
    plan = plan_reload(old, new)
    same = {s.id for s in old} & {s.id for s in new}
    identical = {
        i for i in same if next(s for s in old if s.id == i) == next(s for s in new if s.id == i)
    }
    touched = {s.id for s in (*plan.add, *plan.restart, *plan.update)} | set(plan.remove)
    assert identical == set(plan.unchanged)
    assert not identical & touched


@given(spec_sets)
def test_reload_of_the_same_config_is_empty(agents: list[AgentSpec]) -> None:
    """Re-reading an unchanged configuration plans nothing."""
    assert plan_reload(agents, agents).is_empty


def test_process_changes_restart_and_settings_update_in_place() -> None:
    """A new binary or args restarts; a new restart policy or timeout is applied in place."""
    old = [spec("a"), spec("b"), spec("c"), spec("d")]
    new = [
        spec("a", args=("-v",)),
        spec("b", stop_timeout_s=5.0),
        spec("c", enabled=False),
        spec("e"),
    ]
    plan = plan_reload(old, new)
    assert [s.id for s in plan.restart] == ["a", "c"]
    assert [s.id for s in plan.update] == ["b"]
    assert [s.id for s in plan.add] == ["e"]
    assert plan.remove == ("d",)


def test_a_spec_accepts_the_wire_string_of_its_type() -> None:
    """AgentSpec(type="filebeat") is AgentType.FILEBEAT; an unknown type is a ValueError."""
    from supervisor import AgentSpec, AgentType

    assert AgentSpec(id="f", binary_path="/bin/true", type="filebeat").type is AgentType.FILEBEAT  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nonsense"):
        AgentSpec(id="f", binary_path="/bin/true", type="nonsense")  # type: ignore[arg-type]
