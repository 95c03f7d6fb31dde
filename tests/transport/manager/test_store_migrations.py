"""Migrations and once-only work on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tests.transport.manager.test_store_nodes import registration, together
from transport.manager._store import Store
from transport.manager._store._engine import migrate
from transport.manager._store._schema import metadata


def snapshot(store: Store) -> dict[str, Any]:
    """Tables, their columns and indexes, and the Alembic revision."""
    with store.engine.connect() as conn:
        inspector = sa.inspect(conn)
        tables = {
            name: (
                [column["name"] for column in inspector.get_columns(name)],
                sorted(str(index["name"]) for index in inspector.get_indexes(name)),
            )
            for name in inspector.get_table_names()
            if not name.startswith("metrics_p")  # day partitions: created by date
        }
        revision = conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
    return {"tables": tables, "revision": revision}


def test_migrations_twice_are_a_no_op(store_url: str) -> None:
    with Store.open(store_url) as store:
        store.register_node(registration("n1"), now=1.0, grpc_port=None)
        first = snapshot(store)
    assert first["revision"] == "0001"
    assert {"nodes", "agents", "metrics", "metrics_latest", "users", "audit_log"} <= set(
        first["tables"]
    )
    with Store.open(store_url) as store:
        migrate(store.engine)
        assert snapshot(store) == first
        assert store.get_node("n1").node_id == "n1"


def test_managers_starting_together_migrate_once(store_url: str) -> None:
    stores = together(4, lambda _: Store.open(store_url))
    try:
        assert len({snapshot(store)["revision"] for store in stores}) == 1
        stores[0].register_node(registration("n1"), now=1.0, grpc_port=None)
        assert stores[3].get_node("n1").node_id == "n1"
    finally:
        for store in stores:
            store.close()


def test_managers_opening_a_new_sqlite_file_together_all_start(tmp_path: Path) -> None:
    """Switching a new file to WAL needs it to itself, and SQLite refuses at once ("database
    is locked", no busy wait) a connection that tries meanwhile: they take turns. Repeated,
    since one round loses the race only now and then (1 in 8 before the fix)."""
    for round_ in range(20):
        url = f"sqlite:///{tmp_path}/manager-{round_}.db"
        for store in together(6, lambda _, url=url: Store.open(url)):
            store.close()


def test_schema_matches_the_query_layer(store: Store) -> None:
    def compared(item: Any, name: str | None, type_: str, *_: Any) -> bool:
        if store.dialect != "postgresql":
            return True
        # PostgreSQL's metrics is partitioned (written in SQL in the migration): its
        # partitions and its primary key differ from the query layer's description.
        table = item if type_ == "table" else getattr(item, "table", None)
        table_name = name if type_ == "table" else getattr(table, "name", "")
        return not (str(table_name).startswith("metrics") and table_name != "metrics_latest")

    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": compared})
        differences = compare_metadata(context, metadata)
    assert differences == []


def test_maintenance_lock(store_url: str, store: Store) -> None:
    with Store.open(store_url) as other:
        with store.maintenance_lock() as got:
            assert got
            with other.maintenance_lock() as also:
                assert also == (store.dialect == "sqlite")
            with other.maintenance_lock("retention") as different:
                assert different
        with other.maintenance_lock() as got_after:
            assert got_after
