"""The request spool: a private directory, atomic files, each request answered once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from updater import Reason, Spool, SpoolError, UpdateRequest, UpdateResult, VerificationError

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
