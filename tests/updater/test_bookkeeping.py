"""The bookkeeping around an update: stale temp files, the failed version's own log lines,
request field limits, every mirror's failure, readable expiry times."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import trio
from agent_env import AGENT, Env, make_manager
from fault_server import TLSFiles
from updater_testlib import NOW, Signer, UnmarkedProcessControl, agent_script

from updater import Reason, UpdateRequest, VerificationError
from updater._fs import TEMP_PREFIX
from updater._request import FIELD_LIMITS, MAX_MIRRORS

ISO = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\b")

# --- a kill in the middle of writing the journal -----------------------------------------


async def test_stale_temp_journal_is_removed_at_the_next_start(env: Env) -> None:
    """A kill while the journal (or the component records) was being replaced leaves a
    temp file next to it; the next start removes it, and it is never taken for a journal."""
    state = env.tmp / "state"
    stale = [state / f"{TEMP_PREFIX}journal.json-0123456789ab", state / f"{TEMP_PREFIX}c-1"]
    for path in stale:
        path.write_bytes(b'{"spec": 1, "txn": "half')
    assert await env.manager.recover() is None
    assert not any(path.exists() for path in stale)
    assert sorted(p.name for p in state.iterdir()) == ["components.json", "update.lock"]
    assert (await env.manager.update(env.offer(agent_script("1.11.0")))).success


# --- log_tail holds the failed version's lines only ---------------------------------------


async def test_log_tail_holds_only_the_failed_versions_lines(env: Env) -> None:
    env.control.logs["a1"][:0] = [f"agent 1.0.0 line {i}" for i in range(50)]
    result = await env.manager.update(env.offer(agent_script("1.11.0", exit_code=3)))
    assert result.rolled_back
    assert result.log_tail == (
        "agent 1.11.0 starting",
        "agent 1.11.0: fatal: bad config key",
    )


async def test_log_tail_without_marks_falls_back_to_the_plain_tail(
    env: Env, tls_files: TLSFiles, nursery: trio.Nursery
) -> None:
    """A control without AgentLogMarks still works (the tail may then include earlier runs)."""
    await env.control.stop_all()
    control = UnmarkedProcessControl(nursery, env.control.binaries)
    await control.start_agent("a1")
    manager = make_manager(env.tmp, tls_files, control)
    result = await manager.update(env.offer(agent_script("1.11.0", exit_code=3)))
    assert result.rolled_back
    assert "agent 1.0.0 starting" in result.log_tail
    assert result.log_tail[-1] == "agent 1.11.0: fatal: bad config key"
    await control.stop_all()


# --- request fields have length limits ----------------------------------------------------

GOOD = {"component": "agent", "version": "1.2.0", "download_url": "https://example.org/a"}


@pytest.mark.parametrize("field", ["component", "version", "download_url", "signature"])
def test_oversized_fields_are_refused_by_name(field: str) -> None:
    doc = dict(GOOD)
    doc[field] = ("https://x/" if field == "download_url" else "") + "a" * 500_000
    with pytest.raises(VerificationError) as info:
        UpdateRequest.parse(doc)
    assert info.value.reason is Reason.BAD_REQUEST
    message = str(info.value)
    assert message.startswith(f"bad_request: {field}: at most {FIELD_LIMITS[field]} characters")
    assert len(message) < 200, "the message does not repeat the value"


def test_envelope_and_mirrors_limits() -> None:
    with pytest.raises(VerificationError, match=r"envelope: at most 65536 characters"):
        UpdateRequest.parse({**GOOD, "envelope": "x" * 70_000})
    with pytest.raises(VerificationError, match=r"mirrors\[1\]: at most 4096 characters"):
        UpdateRequest.parse({**GOOD, "mirrors": ["https://m/a", "https://m/" + "b" * 5000]})
    with pytest.raises(VerificationError, match=rf"mirrors: at most {MAX_MIRRORS} URLs; got 17"):
        UpdateRequest.parse({**GOOD, "mirrors": [f"https://m{i}/a" for i in range(17)]})
    assert UpdateRequest.parse({**GOOD, "mirrors": ["https://m/a"] * MAX_MIRRORS})


async def test_the_manager_refuses_oversized_requests_too(env: Env) -> None:
    """Requests built in code (not parsed) are checked as well, before anything else."""
    request = env.offer(agent_script("1.11.0"))
    result = await env.manager.update(replace(request, download_url="https://x/" + "a" * 5000))
    await env.check_untouched(result, Reason.BAD_REQUEST)
    assert "download_url: at most 4096 characters" in (result.error or "")
    assert env.server.hits == []
    huge = await env.manager.update(replace(request, version="9" * 100_000))
    assert huge.reason is Reason.BAD_REQUEST
    assert len(str(huge.to_dict())) < 1000, "the answer does not echo the oversized field"


# --- with mirrors, every URL's failure is reported -----------------------------------------


async def test_every_mirrors_failure_is_reported(env: Env) -> None:
    request = env.offer(agent_script("1.11.0"), route="corrupt", name="m")
    mirrors = (env.server.url("/status/503"), env.server.url("/truncate/m"))
    result = await env.manager.update(replace(request, mirrors=mirrors))
    await env.check_untouched(result, Reason.LENGTH_MISMATCH)  # the last one's reason
    error = result.error or ""
    assert error.startswith("length_mismatch: all 3 URLs failed: ")
    for url, reason in [
        (request.download_url, "hash_mismatch"),
        (mirrors[0], "http_status: HTTP 503"),
        (mirrors[1], "length_mismatch"),
    ]:
        assert f"{url}: {reason}" in error


async def test_a_single_url_failure_reads_as_before(env: Env) -> None:
    result = await env.manager.update(env.offer(agent_script("1.11.0"), route="corrupt"))
    assert (result.error or "").startswith("hash_mismatch: sha256 ")


# --- expiry is printed as a time ----------------------------------------------------------


async def test_expiry_is_printed_as_an_iso_time(env: Env) -> None:
    result = await env.manager.update(env.offer(agent_script("1.11.0"), expires=NOW - 1))
    await env.check_untouched(result, Reason.EXPIRED)
    assert ISO.search(result.error or ""), result.error
    assert str(NOW - 1) not in (result.error or ""), "never as epoch seconds"


def test_keyring_expiry_is_printed_as_an_iso_time(signer: Signer) -> None:
    from updater import Floor
    from updater._verify import verify_statement

    envelope = signer.envelope(signer.statement(agent_script("1.11.0")))
    keyring = replace(signer.keyring, expires=NOW - 5)
    with pytest.raises(VerificationError, match=r"keyring v1 expired at \d{4}-") as info:
        verify_statement(
            envelope, keyring, component=AGENT, platform="linux-x86_64", version="1.1.0",
            floor=Floor(), now=NOW, max_length=1 << 20,
        )  # fmt: skip
    assert str(NOW - 5) not in str(info.value)
