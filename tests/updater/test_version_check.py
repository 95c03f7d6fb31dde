"""The pre-swap ``--version`` check: real scripts as artifacts, served over HTTPS.

A legacy signature binds no version, so the new executable must name the requested version
before anything is switched; signed artifacts are checked too when the target asks. Every
refusal leaves the old version in place and running, and no scratch directory behind.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from agent_env import AGENT, Env, agent_archive
from hypothesis import given, strategies as st
from updater_testlib import PROPS, agent_script

from updater import AgentTarget, Reason
from updater._verify import check_reported_version, reports_version
from updater._versioncheck import MAX_OUTPUT, run_version_args


def retarget(env: Env, **changes: object) -> None:
    """Change the agent's :class:`AgentTarget` (e.g. its version arguments)."""
    env.manager.agents[AGENT] = replace(env.manager.agents[AGENT], **changes)  # type: ignore[arg-type]


async def test_legacy_binary_reporting_the_requested_version_is_installed(env: Env) -> None:
    result = await env.manager.update(env.offer_legacy(agent_script("1.11.0"), "1.11.0"))
    assert result.success, result
    assert await env.control.running_version("a1") == "1.11.0"
    env.check_clean()


async def test_legacy_old_binary_relabelled_higher_is_refused(env: Env) -> None:
    """The security note's matrix row: an old (genuinely signed) binary offered as 1.11.0."""
    relabelled = agent_script("1.11.0", reports="0.9.0")
    result = await env.manager.update(env.offer_legacy(relabelled, "1.11.0"))
    await env.check_untouched(result, Reason.BINARY_VERSION_MISMATCH)
    assert result.code == "D4002"
    assert "'1.11.0'" in (result.error or "") and "agent version 0.9.0" in (result.error or "")
    assert env.manager.floor(AGENT).version == "1.0.0", "the floor did not move"


@pytest.mark.parametrize(
    ("behaviour", "detail"),
    [
        ("fail", "status 3"),
        ("hang", "did not finish"),
        ("spew", "did not finish"),
    ],
)
async def test_legacy_binary_whose_version_check_fails(
    env: Env, behaviour: str, detail: str
) -> None:
    """Non-zero exit, a hang and endless output all end in version_check_failed."""
    env.manager.config = replace(env.manager.config, version_check_timeout_s=1.0)
    data = agent_script("1.11.0", version_check=behaviour)
    result = await env.manager.update(env.offer_legacy(data, "1.11.0"))
    await env.check_untouched(result, Reason.VERSION_CHECK_FAILED)
    assert detail in (result.error or "")


async def test_background_child_of_the_version_run_is_killed(env: Env) -> None:
    """A ``--version`` that leaves a child holding its stdout passes, and the child dies."""
    data = agent_script("1.11.0", version_check="orphan")
    result = await env.manager.update(env.offer_legacy(data, "1.11.0"))
    assert result.success, result
    scratch_root = str(env.tmp / "downloads")
    leftovers = []
    for process in psutil.process_iter(["cwd"]):
        cwd = process.info["cwd"] or ""
        if cwd.startswith(scratch_root):
            leftovers.append(process)
    assert leftovers == []
    env.check_clean()


async def test_legacy_artifact_that_cannot_execute(env: Env) -> None:
    """Bytes that are no executable for this host: refused, not installed."""
    result = await env.manager.update(env.offer_legacy(b"\x7fELF not really", "1.11.0"))
    await env.check_untouched(result, Reason.VERSION_CHECK_FAILED)
    assert "cannot execute" in (result.error or "")


async def test_legacy_refused_when_the_check_is_disabled(env: Env) -> None:
    """Without version_args nothing would bind a legacy artifact's version: refused."""
    retarget(env, version_args=None)
    result = await env.manager.update(env.offer_legacy(agent_script("1.11.0"), "1.11.0"))
    await env.check_untouched(result, Reason.VERSION_CHECK_FAILED)
    assert "disabled" in (result.error or "")
    assert env.server.hits == ["/f/legacy"]


async def test_signed_artifacts_are_checked_only_when_asked(env: Env) -> None:
    """A signed artifact is not run by default; with version_check_always it must report
    the *signed* version too."""
    liar = agent_script("1.11.0", reports="1.0.0")
    assert (await env.manager.update(env.offer(liar))).success
    retarget(env, version_check_always=True)
    result = await env.manager.update(env.offer(agent_script("1.12.0", reports="1.0.0")))
    assert result.reason is Reason.BINARY_VERSION_MISMATCH
    assert await env.control.running_version("a1") == "1.11.0"
    good = await env.manager.update(env.offer(agent_script("1.13.0")))
    assert good.success, good
    env.check_clean()


async def test_version_args_come_from_the_target(env: Env) -> None:
    """With no arguments the script starts as an agent instead of printing its version, and
    never exits: the check times out and nothing is switched."""
    env.manager.config = replace(env.manager.config, version_check_timeout_s=0.5)
    retarget(env, version_args=())
    result = await env.manager.update(env.offer_legacy(agent_script("1.11.0"), "1.11.0"))
    await env.check_untouched(result, Reason.VERSION_CHECK_FAILED)


async def test_archive_agent_legacy_artifact_is_checked_in_its_tree(tree_env: Env) -> None:
    """The executable inside the unpacked archive is run; a mismatch removes the tree."""
    env = tree_env
    root = env.tmp / "agentroot"
    bad = await env.manager.update(
        env.offer_legacy(agent_archive("1.11.0", reports="0.9.0"), "1.11.0", name="t1")
    )
    assert bad.reason is Reason.BINARY_VERSION_MISMATCH
    assert [p.name for p in (root / "versions").iterdir()] == ["1.0.0"]
    assert await env.control.running_version("a1") == "1.0.0"
    good = await env.manager.update(env.offer_legacy(agent_archive("1.11.0"), "1.11.0", name="t2"))
    assert good.success, good
    assert await env.control.running_version("a1") == "1.11.0"
    env.check_clean()


async def test_archive_binary_outside_current_cannot_be_checked(tree_env: Env) -> None:
    env = tree_env
    target = env.manager.agents[AGENT]
    env.manager.agents[AGENT] = AgentTarget(
        AGENT, "a1", env.tmp / "elsewhere" / "agent", install_root=target.install_root
    )
    result = await env.manager.update(env.offer_legacy(agent_archive("1.11.0"), "1.11.0"))
    assert result.reason is Reason.VERSION_CHECK_FAILED
    assert "not under" in (result.error or "")
    assert [p.name for p in (env.tmp / "agentroot" / "versions").iterdir()] == ["1.0.0"]


async def test_run_version_args_bounds_the_output(tmp_path: Path) -> None:
    """The output kept is capped, and the run happens in the scratch directory."""
    script = tmp_path / "big"
    script.write_text("#!/bin/sh\npwd\nhead -c 200000 /dev/zero | tr '\\0' x\n")
    script.chmod(0o700)
    run = await run_version_args(script, [], cwd=tmp_path, timeout_s=10)
    assert run.status == 0
    assert run.truncated
    assert len(run.output) == MAX_OUTPUT
    assert run.output.startswith(os.fsencode(tmp_path) + b"\n")


# --- the pure decision -----------------------------------------------------------------

VERSIONS = st.lists(st.integers(0, 999).map(str), min_size=1, max_size=4).map(".".join)
SEPARATORS = st.sampled_from([" ", "\n", ", ", " (", "\t", "=", ": v", " v"])


@PROPS
@given(VERSIONS, SEPARATORS, SEPARATORS)
def test_a_version_between_separators_is_reported(version: str, before: str, after: str) -> None:
    """A version set off by separators (or a leading ``v``) is found in the output."""
    assert reports_version(f"agent{before}{version}{after}built today", version)


@PROPS
@given(VERSIONS, st.sampled_from(["0", ".1", "-rc1", "+dirty", "a", "_x"]))
def test_a_longer_version_is_not_the_version(version: str, extension: str) -> None:
    """A version that only starts with the requested one (or ends with it) does not match."""
    assert not reports_version(f"agent {version}{extension}\n", version)
    assert not reports_version(f"agent 1{version}\n", version)
    assert not reports_version(f"agent 1.{version}\n", version)


def test_check_reported_version_decisions() -> None:
    check_reported_version("1.2.3", 0, b"tool version 1.2.3\n", truncated=False)
    with pytest.raises(Exception, match="status 2") as failed:
        check_reported_version("1.2.3", 2, b"tool version 1.2.3\n", truncated=False)
    assert failed.value.reason is Reason.VERSION_CHECK_FAILED  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="does not report") as wrong:
        check_reported_version("1.2.3", 0, b"tool version 1.2.4\n", truncated=False)
    assert wrong.value.reason is Reason.BINARY_VERSION_MISMATCH  # type: ignore[attr-defined]
    assert not reports_version("anything", "")
