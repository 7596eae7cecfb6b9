"""process_log, chunk_log, checkpoint

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ACTIVE = "status IN ('QUEUED', 'RUNNING')"


def upgrade() -> None:
    op.create_table(
        "process_log",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("mapref", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.Column("load_kind", sa.String(16), nullable=False),
        sa.Column("estimated_rows", sa.BigInteger),
        sa.Column("chunks_total", sa.Integer, nullable=False),
        sa.Column("chunks_done", sa.Integer, nullable=False),
        sa.Column("chunks_failed", sa.Integer, nullable=False),
        sa.Column("rows_read", sa.BigInteger, nullable=False),
        sa.Column("rows_inserted", sa.BigInteger, nullable=False),
        sa.Column("rows_changed", sa.BigInteger, nullable=False),
        sa.Column("rows_unchanged", sa.BigInteger, nullable=False),
        sa.Column("rows_errored", sa.BigInteger, nullable=False),
        sa.Column("checkpoint_from", sa.JSON),
        sa.Column("checkpoint_to", sa.JSON),
        sa.Column("hwm", sa.JSON),
        sa.Column("plan_note", sa.Text),
        sa.Column("message", sa.Text),
        sa.Column("mapping", sa.JSON, nullable=False),
    )
    op.create_index("ix_process_log_mapref_created", "process_log", ["mapref", "created_at"])
    op.create_index(
        "ux_process_log_one_active_run",
        "process_log",
        ["mapref"],
        unique=True,
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )
    op.create_table(
        "chunk_log",
        sa.Column(
            "run_id",
            sa.String(32),
            sa.ForeignKey("process_log.run_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("chunk_no", sa.Integer, primary_key=True),
        sa.Column("lower_bound", sa.JSON),
        sa.Column("upper_bound", sa.JSON),
        sa.Column("includes_nulls", sa.Boolean, nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("rows_read", sa.BigInteger, nullable=False),
        sa.Column("rows_inserted", sa.BigInteger, nullable=False),
        sa.Column("rows_changed", sa.BigInteger, nullable=False),
        sa.Column("rows_unchanged", sa.BigInteger, nullable=False),
        sa.Column("rows_errored", sa.BigInteger, nullable=False),
        sa.Column("batches_done", sa.Integer, nullable=False),
        sa.Column("max_checkpoint", sa.JSON),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(200)),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.Column("message", sa.Text),
    )
    op.create_table(
        "checkpoint",
        sa.Column("mapref", sa.String(200), primary_key=True),
        sa.Column("value", sa.JSON),
        sa.Column("value_type", sa.String(16)),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("checkpoint")
    op.drop_table("chunk_log")
    op.drop_index("ux_process_log_one_active_run", table_name="process_log")
    op.drop_index("ix_process_log_mapref_created", table_name="process_log")
    op.drop_table("process_log")
