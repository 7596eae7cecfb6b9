"""stop_request, error_row, process_log.launches

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # How many chords this run has had (1 + resumes): resumed chunks get fresh task ids, since
    # workers remember revoked ids and would drop a resumed task that reused one.
    op.add_column(
        "process_log", sa.Column("launches", sa.Integer, nullable=False, server_default="1")
    )
    op.create_table(
        "stop_request",
        sa.Column(
            "run_id",
            sa.String(32),
            sa.ForeignKey("process_log.run_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text),
    )
    op.create_table(
        "error_row",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column(
            "run_id",
            sa.String(32),
            sa.ForeignKey("process_log.run_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("chunk_no", sa.Integer, nullable=False),
        sa.Column("row_key", sa.JSON),
        sa.Column("row_data", sa.JSON, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_error_row_run", "error_row", ["run_id", "chunk_no"])


def downgrade() -> None:
    op.drop_index("ix_error_row_run", table_name="error_row")
    op.drop_table("error_row")
    op.drop_table("stop_request")
    with op.batch_alter_table("process_log") as batch:
        batch.drop_column("launches")
