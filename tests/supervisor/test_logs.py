"""Agent log files: rotation by size, without seeking special files, and tail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from supervisor._logs import MAX_TAIL_LINES, AgentLog


def write(fd: int, text: str) -> None:
    os.write(fd, text.encode())


def test_child_fd_appends_and_survives_copy_truncate(tmp_path: Path) -> None:
    """A writer keeps its descriptor through a running rotation and writes at the new end."""
    log = AgentLog(str(tmp_path / "a.log"), max_bytes=10, backups=2)
    fd = log.open_for_child()
    try:
        write(fd, "0123456789abcdef\n")
        assert log.rotate_if_needed(running=True)
        write(fd, "after\n")
    finally:
        os.close(fd)
    assert (tmp_path / "a.log.1").read_text() == "0123456789abcdef\n"
    assert (tmp_path / "a.log").read_text() == "after\n"  # no hole: O_APPEND


def test_rotation_keeps_n_backups(tmp_path: Path) -> None:
    """Rotations shift .1 to .2 and drop the oldest past the backup count."""
    path = tmp_path / "a.log"
    log = AgentLog(str(path), max_bytes=3, backups=2)
    for generation in range(4):
        path.write_text(f"gen{generation}\n")
        assert log.rotate_if_needed(running=False)
    assert (tmp_path / "a.log.1").read_text() == "gen3\n"
    assert (tmp_path / "a.log.2").read_text() == "gen2\n"
    assert not (tmp_path / "a.log.3").exists()


def test_no_rotation_under_limit_or_when_disabled(tmp_path: Path) -> None:
    """Small files, and max_bytes 0, are left alone."""
    path = tmp_path / "a.log"
    path.write_text("x" * 100)
    assert not AgentLog(str(path), max_bytes=1000, backups=1).rotate_if_needed(running=True)
    assert not AgentLog(str(path), max_bytes=0, backups=1).rotate_if_needed(running=True)
    assert path.stat().st_size == 100


def test_zero_backups_truncates(tmp_path: Path) -> None:
    """With no backups, an oversized file is emptied."""
    path = tmp_path / "a.log"
    path.write_text("x" * 100)
    assert AgentLog(str(path), max_bytes=10, backups=0).rotate_if_needed(running=True)
    assert path.stat().st_size == 0


def test_special_files_are_never_rotated_or_seeked(tmp_path: Path) -> None:
    """A FIFO log path is opened without blocking and never rotated (supervisord #1224)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    log = AgentLog(str(fifo), max_bytes=1, backups=3)
    fd = log.open_for_child()
    try:
        write(fd, "hello\n")
        assert not log.rotate_if_needed(running=True)
        assert log.tail(10) == []
    finally:
        os.close(fd)
    assert not (tmp_path / "pipe.1").exists()


def test_tail_continues_into_backups(tmp_path: Path) -> None:
    """tail reads the newest lines, taking older ones from .1 when the file is short."""
    (tmp_path / "a.log.1").write_text("one\ntwo\nthree\n")
    (tmp_path / "a.log").write_text("four\nfive\n")
    log = AgentLog(str(tmp_path / "a.log"), max_bytes=100, backups=1)
    assert log.tail(3) == ["three", "four", "five"]
    assert log.tail(100) == ["one", "two", "three", "four", "five"]


def test_tail_limits(tmp_path: Path) -> None:
    """lines must be between 1 and 1000, as the seed's GetAgentLogs."""
    log = AgentLog(str(tmp_path / "a.log"), max_bytes=100, backups=1)
    assert log.tail(5) == []
    for bad in (0, MAX_TAIL_LINES + 1, -3):
        with pytest.raises(ValueError, match="between 1 and 1000"):
            log.tail(bad)


@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_characters="\n\r\x00", codec="utf-8"), max_size=30
        ),
        max_size=300,
    ),
    st.integers(min_value=1, max_value=MAX_TAIL_LINES),
    st.sampled_from([7, 64, 65536]),
)
def test_tail_equals_the_last_lines(lines: list[str], wanted: int, block: int) -> None:
    """tail(n) is exactly the last n lines written, whatever the read block size."""
    import tempfile

    import supervisor._logs

    supervisor._logs._BLOCK = block

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "a.log"
        path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        log = AgentLog(str(path), max_bytes=0, backups=0)
        try:
            assert log.tail(wanted) == lines[-wanted:]
        finally:
            supervisor._logs._BLOCK = 65536


def test_tail_since_gives_only_what_was_written_after_the_mark(tmp_path: Path) -> None:
    """A mark taken before a run, and the lines of that run only, across a rotation."""
    log = AgentLog(str(tmp_path / "a.log"), max_bytes=64, backups=2)
    with open(log.path, "a") as f:
        f.write("".join(f"old {i}\n" for i in range(5)))
    mark = log.position()
    with open(log.path, "a") as f:
        f.write("".join(f"new {i}\n" for i in range(12)))
    assert log.rotate_if_needed(running=True)
    with open(log.path, "a") as f:
        f.write("new 12\n")
    assert log.position() > mark
    assert log.tail_since(mark, 100) == [f"new {i}" for i in range(13)]
    assert log.tail_since(mark, 2) == ["new 11", "new 12"]
    assert log.tail_since(log.position(), 10) == []
