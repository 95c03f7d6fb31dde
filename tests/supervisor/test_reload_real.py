"""Reloads applied through the real ``Supervisor.reload``, with real processes.

The pure planner has its own properties (tests/supervisor/test_registry.py); these check
that what the supervisor *does* with a plan matches it, over random sequences of
configurations: after every reload the registry is exactly the new configuration; every
enabled agent runs (once: its process is alive and is the only one started since the last
change), every disabled or removed one has no process; an agent whose process-defining
fields did not change keeps its very process; one whose did runs a new one.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from supervisor import AgentSpec, AgentState, RestartSpec, open_supervisor
from tests.supervisor.helpers import alive, shell_agent

IDS = ("a", "b", "c", "d")


def agents(tmp: Path) -> st.SearchStrategy[tuple[AgentSpec, ...]]:
    """A configuration: a subset of IDS, each agent with one of two scripts, enabled or
    not, and one of two stop timeouts (a change applied in place)."""
    one = st.tuples(st.sampled_from(IDS), st.booleans(), st.booleans(), st.booleans())

    def build(choices: list[tuple[str, bool, bool, bool]]) -> tuple[AgentSpec, ...]:
        specs = {}
        for agent_id, v2, enabled, slow in choices:
            script = f"echo {agent_id} {'v2' if v2 else 'v1'}; exec sleep 1000"
            specs[agent_id] = shell_agent(
                agent_id,
                script,
                tmp,
                enabled=enabled,
                stop_timeout_s=3.0 if slow else 2.0,
                restart=RestartSpec(backoff_base_s=0.1, backoff_max_s=0.2),
            )
        return tuple(specs.values())

    return st.lists(one, max_size=len(IDS)).map(build)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_reloads_do_what_the_plan_says(tmp_path: Path, data: st.DataObject) -> None:
    """Whatever the sequence of configurations, the supervisor ends each reload exactly
    on the new one, and touches only what changed."""
    first = data.draw(agents(tmp_path), label="initial")
    async with open_supervisor(first, work_dir=str(tmp_path), health_checks=False) as sup:
        current = {spec.id: spec for spec in first}
        for spec in first:
            if spec.enabled:
                await sup.wait_state(spec.id, AgentState.RUNNING)
        for step in range(3):
            new = data.draw(agents(tmp_path), label=f"reload {step}")
            pids = {info.id: info.pid for info in sup.statuses()}
            plan = await sup.reload(new)
            wanted = {spec.id: spec for spec in new}
            assert {spec.id: spec for spec in sup.registry.list()} == wanted
            restarted = {spec.id for spec in plan.restart}
            for agent_id, spec in wanted.items():
                info = (
                    await sup.wait_state(agent_id, AgentState.RUNNING)
                    if spec.enabled
                    else sup.status(agent_id)
                )
                if not spec.enabled:
                    assert info.pid == 0 and info.status is AgentState.STOPPED
                    continue
                assert alive(info.pid)
                before = current.get(agent_id)
                if before is not None and before.enabled and agent_id not in restarted:
                    assert info.pid == pids[agent_id], (agent_id, "restarted needlessly")
                if agent_id in restarted and pids.get(agent_id):
                    assert info.pid != pids[agent_id], (agent_id, "not restarted")
            for agent_id in set(current) - set(wanted):
                assert pids[agent_id] == 0 or not alive(pids[agent_id])
            current = wanted
    assert not any(alive(pid) for pid in pids.values() if pid)


async def test_a_changed_stop_timeout_applies_in_place(tmp_path: Path) -> None:
    """A setting outside the process key is updated without touching the process."""
    spec = shell_agent("a", "exec sleep 1000", tmp_path)
    async with open_supervisor([spec], work_dir=str(tmp_path), health_checks=False) as sup:
        pid = (await sup.wait_state("a", AgentState.RUNNING)).pid
        plan = await sup.reload([replace(spec, stop_timeout_s=7.0)])
        assert [s.id for s in plan.update] == ["a"]
        assert sup.status("a").pid == pid
        assert sup.registry.get("a").stop_timeout_s == 7.0
