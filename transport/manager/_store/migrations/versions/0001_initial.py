"""The first schema: nodes, agents, metrics, users, tokens, the audit log, updates.

On PostgreSQL ``metrics`` is partitioned by range of ``timestamp`` (unix seconds): the
store creates one partition a day ahead of time (``Store.ensure_partitions``) and drops
whole days when they expire; ``metrics_default`` takes any row outside the day partitions,
so an insert never fails for want of a partition. The primary key of a partitioned table
must contain the partition key: it is ``(node_id, type, timestamp)``, and ``id`` comes from
a sequence. On SQLite ``metrics`` is a plain table.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_NODE_ID = sa.String(128)


def _times() -> list[sa.Column[float]]:
    return [
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    ]


def _text(name: str, default: str = "") -> sa.Column[str]:
    return sa.Column(name, sa.Text, nullable=False, server_default=default)


def upgrade() -> None:
    """Create every table."""
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "nodes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("node_id", _NODE_ID, nullable=False),
        *(_text(name) for name in ("hostname", "ip", "os", "arch")),
        sa.Column("labels", sa.JSON, nullable=False),
        _text("daemon_version"),
        _text("agent_version"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("grpc_port", sa.Integer, nullable=True),
        sa.Column("last_seen_at", sa.Float, nullable=True),
        sa.Column("register_at", sa.Float, nullable=True),
        *_times(),
        sa.UniqueConstraint("node_id", name="uq_nodes_node_id"),
    )
    op.create_index("ix_nodes_status_last_seen", "nodes", ["status", "last_seen_at"])
    op.create_table(
        "agents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("node_id", _NODE_ID, nullable=False),
        _text("agent_id"),
        _text("type"),
        _text("version"),
        sa.Column("status", sa.String(16), nullable=False, server_default=""),
        _text("config"),
        sa.Column("pid", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_heartbeat", sa.Float, nullable=True),
        sa.Column("last_sync_time", sa.Float, nullable=True),
        *_times(),
        sa.UniqueConstraint("node_id", "agent_id", name="uq_agents_node_agent"),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.node_id"], ondelete="CASCADE", name="fk_agents_node"
        ),
    )
    op.create_index("ix_agents_status_updated", "agents", ["status", "updated_at"])
    _create_metrics(postgres)
    op.create_table(
        "metrics_latest",
        sa.Column("node_id", _NODE_ID, primary_key=True),
        sa.Column("type", sa.String(32), primary_key=True),
        sa.Column("metric_id", sa.BigInteger, nullable=False),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
        sa.Column("values", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.node_id"], ondelete="CASCADE", name="fk_metrics_latest_node"
        ),
    )
    _create_users()
    _create_updates()


def _create_metrics(postgres: bool) -> None:
    if not postgres:
        op.create_table(
            "metrics",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("node_id", _NODE_ID, nullable=False),
            sa.Column("type", sa.String(32), nullable=False),
            sa.Column("timestamp", sa.BigInteger, nullable=False),
            sa.Column("values", sa.JSON, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
        )
        op.create_index(
            "uq_metrics_node_type_ts", "metrics", ["node_id", "type", "timestamp"], unique=True
        )
        op.create_index("ix_metrics_timestamp", "metrics", ["timestamp"])
        return
    op.execute("CREATE SEQUENCE metrics_id_seq AS BIGINT")
    op.execute(
        """
        CREATE TABLE metrics (
            id BIGINT NOT NULL DEFAULT nextval('metrics_id_seq'),
            node_id VARCHAR(128) NOT NULL,
            type VARCHAR(32) NOT NULL,
            "timestamp" BIGINT NOT NULL,
            "values" JSON NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            CONSTRAINT uq_metrics_node_type_ts PRIMARY KEY (node_id, type, "timestamp")
        ) PARTITION BY RANGE ("timestamp")
        """
    )
    op.execute("ALTER SEQUENCE metrics_id_seq OWNED BY metrics.id")
    op.execute("CREATE TABLE metrics_default PARTITION OF metrics DEFAULT")
    op.execute('CREATE INDEX ix_metrics_default_timestamp ON metrics_default ("timestamp")')


def _create_users() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _text("username"),
        _text("password_hash"),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        *(_text(name) for name in ("email", "phone", "real_name")),
        sa.Column("last_login_at", sa.Float, nullable=True),
        _text("last_login_ip"),
        *_times(),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        _text("name"),
        _text("token_hash"),
        _text("prefix"),
        sa.Column("created_at", sa.Float, nullable=False),
        *(sa.Column(name, sa.Float, nullable=True) for name in ("expires_at", "last_used_at")),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_hash"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], ondelete="CASCADE", name="fk_api_tokens_user"
        ),
    )
    op.create_index("ix_api_tokens_user", "api_tokens", ["user_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        _text("actor"),
        _text("action"),
        _text("target"),
        _text("source_ip"),
        _text("outcome", "ok"),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])


def _create_updates() -> None:
    op.create_table(
        "update_jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.Float, nullable=False),
        _text("actor"),
        _text("component"),
        _text("version"),
        _text("download_url"),
        _text("hash"),
    )
    op.create_table(
        "update_targets",
        sa.Column("job_id", sa.Integer, primary_key=True),
        sa.Column("node_id", _NODE_ID, primary_key=True),
        sa.Column("state", sa.String(32), nullable=False),
        _text("update_id"),
        _text("message"),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["update_jobs.id"], ondelete="CASCADE", name="fk_update_targets_job"
        ),
    )


def downgrade() -> None:
    """Drop every table (and the metric partitions with their parent)."""
    for table in (
        "update_targets",
        "update_jobs",
        "audit_log",
        "api_tokens",
        "users",
        "metrics_latest",
        "metrics",
        "agents",
        "nodes",
    ):
        op.drop_table(table)
