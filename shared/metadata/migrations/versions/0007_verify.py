"""verify_log and verify_diff: every ``chordload verify`` and the keys it found differing

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "verify_log",
        sa.Column("verify_id", sa.String(32), primary_key=True),
        sa.Column("mapref", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.Column("ranges_total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("ranges_verified", sa.Integer, nullable=False, server_default="0"),
        sa.Column("sample_pct", sa.Float),
        sa.Column("rows_source", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("rows_target", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("missing", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("extra", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("different", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("ranges_compared", sa.Integer, nullable=False, server_default="0"),
        sa.Column("run_id", sa.String(32)),
        sa.Column("plan", sa.JSON, nullable=False),
        sa.Column("message", sa.Text),
    )
    op.create_index("ix_verify_log_mapref_started", "verify_log", ["mapref", "started_at"])
    op.create_table(
        "verify_diff",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column(
            "verify_id",
            sa.String(32),
            sa.ForeignKey("verify_log.verify_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("range_no", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("row_key", sa.JSON, nullable=False),
        sa.Column("columns", sa.JSON),
        sa.Column("explained", sa.Boolean),
    )
    op.create_index("ix_verify_diff_verify_kind", "verify_diff", ["verify_id", "kind", "id"])


def downgrade() -> None:
    op.drop_index("ix_verify_diff_verify_kind", table_name="verify_diff")
    op.drop_table("verify_diff")
    op.drop_index("ix_verify_log_mapref_started", table_name="verify_log")
    op.drop_table("verify_log")
