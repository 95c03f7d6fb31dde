"""Following a log file by polling: history, growth, both rotations, partial and long
lines, a file that is not there yet, and paths that cannot be followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from transport.daemon._logfollow import (
    MAX_LINE_BYTES,
    PARTIAL_FLUSH_POLLS,
    READ_BYTES,
    LogFollower,
    NotFollowableError,
)


def append(path: Path, text: str) -> None:
    with path.open("a") as file:
        file.write(text)


def drain(follower: LogFollower) -> list[str]:
    """Poll until nothing more is waiting."""
    lines: list[str] = []
    while True:
        new, more = follower.poll()
        lines += new
        if not more:
            return lines


def test_history_then_new_lines(tmp_path: Path) -> None:
    """start() gives the last lines (continuing into <log>.1), then poll() only new ones."""
    log = tmp_path / "a.log"
    Path(f"{log}.1").write_text("b1\nb2\n")
    log.write_text("c1\n")
    follower = LogFollower(str(log))
    assert follower.start(3) == ["b1", "b2", "c1"]
    assert drain(follower) == []
    append(log, "c2\nc3\n")
    assert drain(follower) == ["c2", "c3"]
    assert LogFollower(str(log)).start(0) == []
    follower.close()
    follower.close()  # idempotent


def test_a_line_being_written_comes_out_whole(tmp_path: Path) -> None:
    """A last line without its newline is not history; it comes out once completed, or
    alone after the file has been quiet for a while."""
    log = tmp_path / "a.log"
    log.write_text("one\ntw")
    follower = LogFollower(str(log))
    assert follower.start(5) == ["one"]
    append(log, "o\nthr")
    assert drain(follower) == ["two"]
    quiet = [follower.poll()[0] for _ in range(PARTIAL_FLUSH_POLLS)]
    assert quiet[:-1] == [[]] * (PARTIAL_FLUSH_POLLS - 1) and quiet[-1] == ["thr"]


def test_copy_truncate_loses_nothing(tmp_path: Path) -> None:
    """Lines written after the last poll and copied into <log>.1 just before the truncation
    are read from there."""
    log = tmp_path / "a.log"
    log.write_text("x\n")
    follower = LogFollower(str(log))
    follower.start(0)
    append(log, "unread 1\nunread 2\n")
    Path(f"{log}.1").write_bytes(log.read_bytes())
    os.truncate(log, 0)
    append(log, "fresh\n")
    assert drain(follower) == ["unread 1", "unread 2", "fresh"]


def test_rename_rotation_reads_the_old_file_to_its_end(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("")
    follower = LogFollower(str(log))
    follower.start(0)
    append(log, "old\n")
    os.replace(log, f"{log}.1")
    append(Path(f"{log}.1"), "old last\n")
    assert drain(follower) == ["old", "old last"]  # the new file does not exist yet
    log.write_text("new\n")
    assert drain(follower) == ["new"]
    append(log, "newer\n")
    assert drain(follower) == ["newer"]


def test_a_missing_file_is_waited_for(tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    follower = LogFollower(str(log))
    assert follower.start(10) == []
    assert drain(follower) == []
    log.write_text("hello\n")
    assert drain(follower) == ["hello"]


def test_long_lines_and_big_bursts(tmp_path: Path) -> None:
    """A line longer than the limit comes in pieces; a burst larger than one read comes over
    several polls, all of it, in order."""
    log = tmp_path / "a.log"
    log.write_text("")
    follower = LogFollower(str(log))
    follower.start(0)
    append(log, "x" * (MAX_LINE_BYTES * 2 + 5) + "\n")
    assert [len(line) for line in drain(follower)] == [MAX_LINE_BYTES, MAX_LINE_BYTES, 5]
    burst = [f"line {i:07d}" for i in range(READ_BYTES // 10)]
    append(log, "".join(f"{line}\n" for line in burst))
    first, more = follower.poll()
    assert more and first == burst[: len(first)]
    assert first + drain(follower) == burst


def test_invalid_utf8_is_replaced(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    follower = LogFollower(str(log))
    follower.start(0)
    with log.open("ab") as file:
        file.write(b"caf\xe9\n")
    assert drain(follower) == ["caf\ufffd"]


def test_a_fifo_cannot_be_followed(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(NotFollowableError, match="not a regular file"):
        LogFollower(str(fifo)).start(1)
