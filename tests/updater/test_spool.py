"""The request spool: a private directory, atomic files, each request answered once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from updater import Reason, Spool, SpoolError, UpdateRequest, UpdateResult, VerificationError
from updater._retention import forgotten

REQUEST = UpdateRequest(
    component="agent",
    version="1.2.0",
    download_url="https://example.org/agent",
    hash="ab" * 32,
    envelope='{"payloadType": "x"}',
)


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "work" / "updates")
    spool.create()
    return spool


def test_create_makes_a_private_directory(spool: Spool) -> None:
    for directory in (spool.directory, spool.done):
        assert directory.is_dir()
        assert directory.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("mode", [0o770, 0o702, 0o777])
def test_writable_by_others_is_refused(spool: Spool, mode: int) -> None:
    """A spool others could write to would let them make the daemon install things."""
    spool.directory.chmod(mode)
    with pytest.raises(SpoolError, match="writable by group or others"):
        spool.check()
    with pytest.raises(SpoolError):
        spool.submit(REQUEST)
    with pytest.raises(SpoolError):
        spool.pending()


def test_group_readable_is_accepted(spool: Spool) -> None:
    spool.directory.chmod(0o750)
    spool.check()


def test_symlinked_or_missing_spool_is_refused(tmp_path: Path) -> None:
    real = Spool(tmp_path / "real")
    real.create()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(SpoolError, match="not a directory"):
        Spool(tmp_path / "link").check()
    with pytest.raises(SpoolError, match="no spool"):
        Spool(tmp_path / "absent").check()


def test_owned_by_another_user_is_refused(spool: Spool) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a directory's owner needs root")
    os.chown(spool.directory, 12345, -1)
    with pytest.raises(SpoolError, match="owned by uid 12345"):
        spool.check()


def test_submit_read_finish_collect(spool: Spool) -> None:
    name = spool.submit(REQUEST)
    assert spool.pending() == [name]
    assert spool.read(name) == REQUEST
    assert spool.result(name) is None
    spool.finish(name, UpdateResult(True, "1.1.0", "1.2.0"))
    assert spool.pending() == []
    assert not spool.is_pending(name)
    assert spool.collect(name) == {
        "success": True,
        "old_version": "1.1.0",
        "new_version": "1.2.0",
        "rolled_back": False,
    }
    assert sorted(p.name for p in spool.done.iterdir()) == [f"{name}.json", f"{name}.result.json"]
    assert sorted(p.name for p in spool.directory.iterdir()) == ["done"]


def test_pending_oldest_first_and_ignores_other_files(spool: Spool) -> None:
    first = spool.submit(REQUEST)
    second = spool.submit(REQUEST)
    os.utime(spool.request_path(first), ns=(2_000_000_000, 2_000_000_000))
    os.utime(spool.request_path(second), ns=(1_000_000_000, 1_000_000_000))
    (spool.directory / ".hostvisor-tmp-x").write_text("{}")
    (spool.directory / "notes.txt").write_text("hello")
    (spool.directory / "bad name.json").write_text("{}")
    (spool.directory / "link.json").symlink_to(spool.request_path(first))
    assert spool.pending() == [second, first]


def test_answered_but_not_moved_is_never_run_again(spool: Spool) -> None:
    """A crash between writing the result and moving the request: the next scan only
    finishes the move."""
    name = spool.submit(REQUEST)
    spool.result_path(name).write_text(json.dumps({"success": True}))
    assert spool.pending() == []
    assert (spool.done / f"{name}.json").exists()
    assert spool.collect(name) == {"success": True}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "expected a JSON object"),
        (b'{"component": "agent", "version": "1"}', "download_url"),
        (b'{"component": "agent", "version": "1", "download_url": "u", "extra": 1}', "extra"),
        (b'{"component": "agent", "version": "1", "download_url": "u", "hash": "zz"}', "hash"),
        (b'{"component": "agent", "version": 1, "download_url": "u"}', "version"),
        (b'{"component": "a", "version": "1", "download_url": "u", "envelope": {}}', "envelope"),
        (b'{"component": "a", "version": "1", "download_url": "u", "mirrors": "u2"}', "mirrors"),
    ],
)
def test_malformed_requests_are_bad_request(spool: Spool, content: bytes, message: str) -> None:
    spool.request_path("req-x").write_bytes(content)
    with pytest.raises(VerificationError, match=message) as info:
        spool.read("req-x")
    assert info.value.reason is Reason.BAD_REQUEST


def test_unsafe_request_files_are_refused(spool: Spool) -> None:
    path = spool.request_path("req-y")
    path.write_bytes(json.dumps(REQUEST.to_dict()).encode())
    path.chmod(0o666)
    with pytest.raises(VerificationError, match="writable by group or others"):
        spool.read("req-y")
    path.chmod(0o600)
    with path.open("ab") as file:
        file.write(b" " * (1 << 20))
    with pytest.raises(VerificationError, match="at most 1 MiB"):
        spool.read("req-y")


def test_request_round_trip() -> None:
    """to_dict and parse are inverses, and parse is what from_dict is for good input."""
    for request in (REQUEST, UpdateRequest("daemon", "2", "https://x/d", mirrors=("https://y/d",))):
        doc = request.to_dict()
        assert UpdateRequest.parse(doc) == request
        assert UpdateRequest.from_dict(doc) == request


def test_names_are_checked(spool: Spool) -> None:
    with pytest.raises(ValueError, match="not a spool request name"):
        spool.request_path("../escape")


# --- retention: answered requests do not pile up ------------------------------------------


@pytest.fixture
def now_s(tmp_path: Path) -> float:
    """The spool's wall clock in these tests: the time files get when written now."""
    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    return probe.stat().st_mtime


def _answer(spool: Spool, age_s: float, *, collect: bool) -> str:
    """Submit and answer a request whose files are ``age_s`` old."""
    name = spool.submit(REQUEST)
    spool.finish(name, UpdateResult(False, "1.1.0", "1.2.0", error="x"))
    if collect:
        spool.collect(name)
    for path in (*spool.done.iterdir(), *spool.directory.iterdir()):
        if path.name.startswith(name):
            now = spool.wall_clock()
            os.utime(path, (now - age_s, now - age_s))
    return name


def _names(spool: Spool) -> set[str]:
    files = (*spool.done.iterdir(), *spool.directory.iterdir())
    return {p.name.split(".")[0] for p in files if p.name.startswith("req-")}


def test_answers_are_kept_up_to_a_count(tmp_path: Path, now_s: float) -> None:
    """Of 8 answered requests (collected or not) only the newest 3 stay; a pending one
    stays whatever its age."""
    spool = Spool(tmp_path / "updates", keep_answered=3, wall_clock=lambda: now_s)
    spool.create()
    answered = [_answer(spool, age_s=100.0 - i, collect=i % 2 == 0) for i in range(8)]
    pending = spool.submit(REQUEST)
    os.utime(spool.request_path(pending), (0, 0))
    spool.prune()
    assert _names(spool) == {*answered[-3:], pending}
    assert spool.pending() == [pending]


def test_answers_older_than_the_age_limit_go(tmp_path: Path, now_s: float) -> None:
    spool = Spool(tmp_path / "updates", max_age_s=3600.0, wall_clock=lambda: now_s)
    spool.create()
    old = _answer(spool, age_s=3601.0, collect=False)
    young = _answer(spool, age_s=3599.0, collect=True)
    spool.prune()
    assert _names(spool) == {young}
    assert spool.result(old) is None


def test_every_answer_prunes(tmp_path: Path, now_s: float) -> None:
    """The daemon need not call prune: finish() does (and create(), at the daemon's start)."""
    spool = Spool(tmp_path / "updates", keep_answered=2, wall_clock=lambda: now_s)
    spool.create()
    names = [_answer(spool, age_s=10.0 - i, collect=False) for i in range(5)]
    assert _names(spool) == set(names[-2:])  # each finish() pruned
    spool.finish(spool.submit(REQUEST), UpdateResult(True, "1", "2"))
    assert names[0] not in _names(spool)
    assert len(_names(spool)) == 2


def test_half_answered_request_is_never_pruned_into_a_rerun(tmp_path: Path, now_s: float) -> None:
    """A crash between writing the result and moving the request, long ago: pruning must not
    delete the result, or the next scan would run the request again."""
    spool = Spool(tmp_path / "updates", max_age_s=60.0, wall_clock=lambda: now_s)
    spool.create()
    name = spool.submit(REQUEST)
    spool.result_path(name).write_text(json.dumps({"success": True}))
    for path in (spool.request_path(name), spool.result_path(name)):
        os.utime(path, (0, 0))
    spool.create()  # the daemon's next start prunes
    assert spool.pending() == []
    assert spool.collect(name) == {"success": True}


def test_abandoned_temp_files_go(tmp_path: Path, now_s: float) -> None:
    spool = Spool(tmp_path / "updates", wall_clock=lambda: now_s)
    spool.create()
    abandoned = spool.directory / ".hostvisor-tmp-req-a.json-1"
    writing = spool.done / ".hostvisor-tmp-req-b.result.json-2"
    for path, age in ((abandoned, 3600.0), (writing, 60.0)):
        path.write_text("{")
        os.utime(path, (now_s - age, now_s - age))
    spool.prune()
    assert not abandoned.exists()
    assert writing.exists()


@given(
    st.dictionaries(st.from_regex(r"\Areq-[0-9a-f]{4}\Z"), st.floats(0, 1000), max_size=30),
    st.integers(0, 40),
    st.floats(1, 2000),
)
def test_forgotten_keeps_the_newest_young_ones(
    answered: dict[str, float], keep: int, max_age_s: float
) -> None:
    """What stays is exactly the newest ``keep`` answers younger than ``max_age_s``."""
    now = 1000.0
    gone = forgotten(answered, now=now, keep=keep, max_age_s=max_age_s)
    kept = set(answered) - gone
    assert len(kept) <= keep
    assert all(now - answered[name] < max_age_s for name in kept)
    for name in gone:  # a removed one is old, or every kept one is at least as new
        assert now - answered[name] >= max_age_s or (
            len(kept) == keep and all(answered[k] >= answered[name] for k in kept)
        )
