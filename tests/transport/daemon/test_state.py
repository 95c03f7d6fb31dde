"""The daemon's state file and spawn journal (the supervisor's AgentStore)."""

from __future__ import annotations

import json
from pathlib import Path

from supervisor import AgentRecord, ProcessIdentity
from transport.daemon import StateFile


def _record(spawns: int, restarts: int, run_id: str, pid: int = 0) -> AgentRecord:
    process = ProcessIdentity(pid, 1000.0 + pid, "/bin/sleep") if pid else None
    return AgentRecord(
        desired="running", process=process, run_id=run_id, restart_count=restarts, spawns=spawns
    )


def test_spawns_noted_after_the_last_save_are_counted_at_the_next_load(tmp_path: Path) -> None:
    """A daemon killed between a spawn and its state write still knows the spawn: which
    process is the agent's, and the restart count."""
    store = StateFile(str(tmp_path / "state.json"))
    store.save({"a": _record(2, 1, "r2", pid=100)})
    store.note_spawn("a", _record(3, 2, "r3", pid=200))
    store.note_spawn("b", _record(1, 0, "b1", pid=300))  # never saved at all
    records = StateFile(str(tmp_path / "state.json")).load()
    assert records["a"] == _record(3, 2, "r3", pid=200)
    assert records["b"] == _record(1, 0, "b1", pid=300)
    # Merged into the state file, and the journal emptied.
    saved = json.loads((tmp_path / "state.json").read_text())["agents"]
    assert saved["a"]["spawns"] == 3 and saved["a"]["process"]["pid"] == 200
    assert not (tmp_path / "spawns.log").exists()


def test_a_saved_state_newer_than_the_journal_wins(tmp_path: Path) -> None:
    """The record with more spawns wins, wherever it comes from."""
    store = StateFile(str(tmp_path / "state.json"))
    store.note_spawn("a", _record(1, 0, "r1", pid=100))
    store.save({"a": _record(2, 1, "r2", pid=200)})
    assert StateFile(str(tmp_path / "state.json")).load()["a"].run_id == "r2"


def test_a_torn_journal_line_is_skipped(tmp_path: Path) -> None:
    """A line cut by a crash does not make the state unreadable."""
    store = StateFile(str(tmp_path / "state.json"))
    store.note_spawn("a", _record(1, 0, "r1", pid=100))
    with open(tmp_path / "spawns.log", "a") as journal:
        journal.write('{"agent": "b", "spawns": 3, "desi')
    records = StateFile(str(tmp_path / "state.json")).load()
    assert records["a"].spawns == 1 and "b" not in records


def test_the_journal_stays_short(tmp_path: Path) -> None:
    """Past its limit the journal keeps one line per agent."""
    store = StateFile(str(tmp_path / "state.json"))
    store.JOURNAL_LIMIT = 2000
    for n in range(1, 200):
        store.note_spawn("agent", _record(n, n - 1, f"r{n}", pid=n))
    assert (tmp_path / "spawns.log").stat().st_size <= 2000
    assert StateFile(str(tmp_path / "state.json")).load()["agent"].spawns == 199
