"""Replay protection: a validly signed request whose install was tried is refused again.

Pure properties of the record (bounded, never forgetting a request that could still be
replayed), then the whole manager on real files and processes.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from agent_env import AGENT, Env, make_manager
from fault_server import TLSFiles
from hypothesis import given, strategies as st
from updater_testlib import PROPS, agent_script

from updater import Floor, Reason
from updater._replay import MAX_TRIED, Tried, find, legacy_identity, prune, remember

# --- the record (pure) ----------------------------------------------------------------------

identities = st.sampled_from([f"{i:064x}" for i in range(8)])
versions = st.sampled_from(["1.0", "1.2", "2.0", "10.0", "beta"])
signed = st.builds(
    Tried,
    identity=identities,
    version=versions,
    counter=st.integers(0, 20),
    expires=st.integers(0, 200),
    tried_at=st.integers(0, 100),
)
legacy = st.builds(
    Tried, identity=identities, version=versions, counter=st.just(-1), expires=st.none(),
    tried_at=st.integers(0, 100),
)  # fmt: skip
entries = signed | legacy
floors = st.builds(Floor, counter=st.integers(-1, 20), version=st.none() | versions)
nows = st.integers(0, 200)


def replay_refused_anyway(entry: Tried, now: float, floor: Floor) -> bool:
    """What the verifier says without the record: ``expired`` or ``rollback``."""
    from updater._verify import compare_versions

    if entry.expires is not None:
        return now >= entry.expires or entry.counter <= floor.counter
    order = None if floor.version is None else compare_versions(entry.version, floor.version)
    return floor.version is not None and (order is None or order <= 0)


@PROPS
@given(st.lists(entries, max_size=80), entries, nows, floors)
def test_a_remembered_request_is_found_until_refused_anyway(
    tried: list[Tried], entry: Tried, now: int, floor: Floor
) -> None:
    """After remembering a request, a replay of it is caught, unless the verifier refuses
    it anyway (then the record may forget it)."""
    record = remember(tried, entry, now=now, floor=floor)
    found = find(record, entry.identity, now=now, floor=floor)
    if replay_refused_anyway(entry, now, floor):
        assert found is None
    else:
        assert found == entry


@PROPS
@given(st.lists(entries, max_size=150), nows, floors)
def test_the_record_is_bounded_and_keeps_what_matters(
    tried: list[Tried], now: int, floor: Floor
) -> None:
    """Pruning keeps, in order, exactly the newest MAX_TRIED entries still needed."""
    kept = prune(tried, now=now, floor=floor)
    needed = [e for e in tried if not replay_refused_anyway(e, now, floor)]
    assert list(kept) == needed[-MAX_TRIED:]
    assert prune(kept, now=now, floor=floor) == kept


def test_legacy_identity_binds_component_and_artifact() -> None:
    digest = "ab" * 32
    assert legacy_identity("agent", digest) == legacy_identity("agent", digest.upper())
    assert legacy_identity("agent", digest) != legacy_identity("other", digest)
    assert legacy_identity("agent", digest) != legacy_identity("agent", "cd" * 32)


# --- the manager ----------------------------------------------------------------------------


class Crash(BaseException):
    """The daemon died just before an install action."""


ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


async def test_failed_request_replayed_is_refused(env: Env) -> None:
    """A validly signed version that failed its trial: its replay is refused before anything
    is downloaded, stopped or backed up."""
    request = env.offer(agent_script("1.11.0", exit_code=3))
    first = await env.manager.update(request)
    assert first.rolled_back
    hits, calls = list(env.server.hits), list(env.control.calls)
    replay = await env.manager.update(request)
    assert (replay.reason, replay.code) == (Reason.REPLAYED, "D4002")
    assert "already tried at" in (replay.error or "")
    assert ISO.search(replay.error or "")
    assert env.server.hits == hits, "refused before downloading"
    assert env.control.calls == calls, "the agent was not touched"
    await env.check_untouched(replay, Reason.REPLAYED)


async def test_replay_in_another_envelope_is_refused(env: Env) -> None:
    """The identity is the signed statement, not its envelope: the same statement signed
    again by another trusted key is the same request."""
    request = env.offer(agent_script("1.11.0", exit_code=3))
    assert (await env.manager.update(request)).rolled_back
    statement = env.signer.statement(
        agent_script("1.11.0", exit_code=3), counter=11, version="1.11.0"
    )
    other = env.signer.envelope(statement, "ecdsa").decode()
    assert json.loads(other)["signatures"] != json.loads(request.envelope or "")["signatures"]
    replay = await env.manager.update(replace(request, envelope=other))
    await env.check_untouched(replay, Reason.REPLAYED)


async def test_the_record_survives_a_restart(env: Env, tls_files: TLSFiles) -> None:
    request = env.offer(agent_script("1.11.0", ready=False))
    assert (await env.manager.update(request)).rolled_back
    fresh = make_manager(env.tmp, tls_files, env.control)
    assert (await fresh.update(request)).reason is Reason.REPLAYED


async def test_a_download_failure_may_be_retried(env: Env) -> None:
    """Nothing was installed, so the same signed request may come again (another URL)."""
    request = env.offer(agent_script("1.11.0"))
    good = request.download_url
    failed = await env.manager.update(replace(request, download_url=env.server.url("/missing")))
    assert failed.reason is Reason.HTTP_STATUS
    assert (await env.manager.update(replace(request, download_url=good))).success


async def test_a_failure_before_the_switch_may_be_retried(env: Env) -> None:
    """The agent could not be held (e.g. not supervised at that moment): no version was
    switched in, so the same request may come again."""

    def refuse(agent_id: str) -> object:
        raise LookupError(f"unknown agent {agent_id!r}")

    request = env.offer(agent_script("1.11.0"))
    env.control.hold = refuse  # type: ignore[method-assign,assignment]
    assert (await env.manager.update(request)).reason is Reason.STOP_FAILED
    del env.control.hold
    assert (await env.manager.update(request)).success


async def test_an_interrupted_request_counts_as_tried(env: Env, tls_files: TLSFiles) -> None:
    from updater._plan import Phase, WriteJournal

    def die_in_trial(action: object) -> None:
        if isinstance(action, WriteJournal) and action.journal.phase is Phase.SWITCHED:
            raise Crash  # the daemon dies as the new version is switched in

    env.manager = make_manager(env.tmp, tls_files, env.control, hook=die_in_trial)
    request = env.offer(agent_script("1.11.0"))
    with pytest.raises(Crash):
        await env.manager.update(request)
    fresh = make_manager(env.tmp, tls_files, env.control)
    assert (await fresh.recover()) is not None
    assert (await fresh.update(request)).reason is Reason.REPLAYED


async def test_rollback_is_reported_over_replayed(env: Env) -> None:
    """Once a later release is committed, replaying the failed older one says ``rollback``;
    the record forgets what the floor already refuses."""
    failed = env.offer(agent_script("1.11.0", exit_code=1))
    assert (await env.manager.update(failed)).rolled_back
    assert (await env.manager.update(env.offer(agent_script("1.12.0")))).success
    assert (await env.manager.update(failed)).reason is Reason.ROLLBACK
    assert (await env.manager.update(env.offer(agent_script("1.13.0")))).success
    assert [t.version for t in env.manager.store.tried(AGENT)] == ["1.13.0"]


async def test_legacy_replay_is_refused(env: Env) -> None:
    request = env.offer_legacy(agent_script("1.11.0", exit_code=2), "1.11.0")
    assert (await env.manager.update(request)).rolled_back
    replay = await env.manager.update(request)
    await env.check_untouched(replay, Reason.REPLAYED)
