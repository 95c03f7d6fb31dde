"""SQLite's writers' lock file: every write transaction of every process takes it first."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from transport.manager import ConflictError, StoreError
from transport.manager._store import Store
from transport.manager._store._engine import prepare
from transport.manager._store._schema import nodes

SAFETY_S = 60  # a safety net against a hung test, never a timing assertion


def blocked_on(path: Path) -> bool:
    """Whether a ``flock`` waits for the lock of ``path`` now (``/proc/locks``)."""
    inode = os.stat(path).st_ino
    with open("/proc/locks") as locks:
        for line in locks:
            fields = line.split()
            if "->" in fields and "FLOCK" in fields:
                where = fields[fields.index("FLOCK") + 4]
                if int(where.rsplit(":", 1)[1]) == inode:
                    return True
    return False


def test_a_write_waits_for_the_lock_another_process_holds(tmp_path: Path) -> None:
    """A write starts only once the lock file's holder (here a file opened apart, as
    another process's writer) lets go; then it is written."""
    database = tmp_path / "manager.db"
    with Store.open(f"sqlite:///{database}") as store:
        lock = Path(f"{database}.lock")
        holder = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        done = threading.Event()
        try:
            fcntl.flock(holder, fcntl.LOCK_EX)

            def write() -> None:
                store.heartbeats([("node-1", 100.0)])
                done.set()

            writer = threading.Thread(target=write)
            writer.start()
            deadline = time.monotonic() + SAFETY_S
            while not blocked_on(lock):
                assert time.monotonic() < deadline, "the write never waited for the lock"
                time.sleep(0.01)
            assert not done.is_set()
        finally:
            os.close(holder)
        writer.join(SAFETY_S)
        assert done.is_set()
        assert store.get_node("node-1").last_seen_at == 100.0
    assert lock.stat().st_mode & 0o777 == 0o600


def test_a_lock_file_that_cannot_be_opened_is_a_store_error(tmp_path: Path) -> None:
    database = tmp_path / "manager.db"
    with Store.open(f"sqlite:///{database}") as store:
        Path(f"{database}.lock").mkdir()
        with pytest.raises(StoreError, match=r"cannot open the writers' lock file '.*\.lock'"):
            store.heartbeats([("node-1", 100.0)])


def test_statements_run_on_the_driver_stay_in_the_transaction(tmp_path: Path) -> None:
    """The ingest's prepared statements run on the ``sqlite3`` connection under the
    transaction's: a failure later in the block rolls them back with the rest, and the
    driver's errors become the store's (a constraint: ConflictError)."""
    database = tmp_path / "manager.db"
    with Store.open(f"sqlite:///{database}") as store:
        store.heartbeats([("n1", 10.0)])
        node = prepare(sa.select(nodes.c.node_id).where(nodes.c.node_id == sa.bindparam("id")))
        bump = prepare(
            sa.update(nodes)
            .where(nodes.c.node_id == sa.bindparam("b_node"))
            .values(hostname=sa.bindparam("b_name"))
        )

        def bump_then_fail() -> None:
            with store._write() as conn:
                bump.executemany(conn, [{"b_node": "n1", "b_name": "changed"}])
                assert node.rows(conn, {"id": "n1"}) == [("n1",)]
                raise RuntimeError("fails after the statement")

        with pytest.raises(RuntimeError):
            bump_then_fail()
        assert store.get_node("n1").hostname == "unknown"
        duplicate = prepare(sa.update(nodes).values(node_id="n2"))
        store.heartbeats([("n2", 10.0)])
        with pytest.raises(ConflictError), store._write() as conn:
            duplicate.executemany(conn, [{}])
        assert {n.node_id for n in store.list_nodes(page=1, page_size=10).items} == {"n1", "n2"}
