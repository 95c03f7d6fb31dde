"""The tables, as the query layer sees them (SQLAlchemy Core metadata).

The migrations in ``migrations/versions`` create these tables; this module only describes
them for building queries, and ``tests/transport/manager/test_store_migrations.py`` checks
that the two agree. Times are unix seconds (``Float``); a metric's ``timestamp`` is whole
seconds (``BigInteger``), as the wire sends it. ``values``, ``labels`` and ``detail`` are
JSON. Free-form text is ``Text`` (no length to overflow); ids that are keys have a length.

On PostgreSQL ``metrics`` is range-partitioned by ``timestamp`` (one partition a day and a
default partition) with the primary key ``(node_id, type, timestamp)``; its ``id`` comes
from a sequence. On SQLite ``id`` is the rowid and ``(node_id, type, timestamp)`` a unique
index. Queries use neither difference.

``metrics_latest`` holds each node's newest row of each type (a copy, written in the same
transaction as the metrics), so that the latest values and the cluster overview read one
row per node and type instead of searching the history.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "agents",
    "api_tokens",
    "audit_log",
    "metadata",
    "metrics",
    "metrics_latest",
    "nodes",
    "update_jobs",
    "update_targets",
    "users",
]

NODE_ID = sa.String(128)
"""Node ids are at most 128 characters (the gRPC layer validates them)."""

metadata = sa.MetaData()

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("node_id", NODE_ID, nullable=False),
    sa.Column("hostname", sa.Text, nullable=False, server_default=""),
    sa.Column("ip", sa.Text, nullable=False, server_default=""),
    sa.Column("os", sa.Text, nullable=False, server_default=""),
    sa.Column("arch", sa.Text, nullable=False, server_default=""),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("daemon_version", sa.Text, nullable=False, server_default=""),
    sa.Column("agent_version", sa.Text, nullable=False, server_default=""),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("grpc_port", sa.Integer, nullable=True),
    sa.Column("last_seen_at", sa.Float, nullable=True),
    sa.Column("register_at", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("node_id", name="uq_nodes_node_id"),
    sa.Index("ix_nodes_status_last_seen", "status", "last_seen_at"),
)

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "node_id",
        NODE_ID,
        sa.ForeignKey("nodes.node_id", ondelete="CASCADE", name="fk_agents_node"),
        nullable=False,
    ),
    sa.Column("agent_id", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False, server_default=""),
    sa.Column("version", sa.Text, nullable=False, server_default=""),
    sa.Column("status", sa.String(16), nullable=False, server_default=""),
    sa.Column("config", sa.Text, nullable=False, server_default=""),
    sa.Column("pid", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_heartbeat", sa.Float, nullable=True),
    sa.Column("last_sync_time", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("node_id", "agent_id", name="uq_agents_node_agent"),
    sa.Index("ix_agents_status_updated", "status", "updated_at"),
)

metrics = sa.Table(
    "metrics",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("node_id", NODE_ID, nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Column("values", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("uq_metrics_node_type_ts", "node_id", "type", "timestamp", unique=True),
    sa.Index("ix_metrics_timestamp", "timestamp"),
)
"""On PostgreSQL ``ix_metrics_timestamp`` exists only on the default partition (day
partitions are dropped whole, never searched by time alone)."""

metrics_latest = sa.Table(
    "metrics_latest",
    metadata,
    sa.Column(
        "node_id",
        NODE_ID,
        sa.ForeignKey("nodes.node_id", ondelete="CASCADE", name="fk_metrics_latest_node"),
        primary_key=True,
    ),
    sa.Column("type", sa.String(32), primary_key=True),
    sa.Column("metric_id", sa.BigInteger, nullable=False),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Column("values", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.Text, nullable=False),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("email", sa.Text, nullable=False, server_default=""),
    sa.Column("phone", sa.Text, nullable=False, server_default=""),
    sa.Column("real_name", sa.Text, nullable=False, server_default=""),
    sa.Column("last_login_at", sa.Float, nullable=True),
    sa.Column("last_login_ip", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("username", name="uq_users_username"),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "user_id",
        sa.Integer,
        sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_api_tokens_user"),
        nullable=False,
    ),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("token_hash", sa.Text, nullable=False),
    sa.Column("prefix", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("last_used_at", sa.Float, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.UniqueConstraint("token_hash", name="uq_api_tokens_hash"),
    sa.Index("ix_api_tokens_user", "user_id"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False, server_default=""),
    sa.Column("source_ip", sa.Text, nullable=False, server_default=""),
    sa.Column("outcome", sa.Text, nullable=False, server_default="ok"),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Index("ix_audit_log_at", "at"),
)

update_jobs = sa.Table(
    "update_jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("component", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("download_url", sa.Text, nullable=False, server_default=""),
    sa.Column("hash", sa.Text, nullable=False, server_default=""),
)

update_targets = sa.Table(
    "update_targets",
    metadata,
    sa.Column(
        "job_id",
        sa.Integer,
        sa.ForeignKey("update_jobs.id", ondelete="CASCADE", name="fk_update_targets_job"),
        primary_key=True,
    ),
    sa.Column("node_id", NODE_ID, primary_key=True),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("update_id", sa.Text, nullable=False, server_default=""),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    sa.Column("updated_at", sa.Float, nullable=False),
)
