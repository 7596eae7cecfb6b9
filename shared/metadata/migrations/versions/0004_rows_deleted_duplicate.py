"""process_log.rows_deleted, rows_duplicate, deletes_started_at; chunk_log.rows_duplicate

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # rows_deleted: keys retired by the hard-delete pass of a full load (scd.deletes);
    # rows_duplicate: rows of the extract whose business key another row of it won;
    # deletes_started_at: the claim of the finalizer running the hard-delete pass.
    with op.batch_alter_table("process_log") as batch:
        batch.add_column(
            sa.Column("rows_deleted", sa.BigInteger, nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("rows_duplicate", sa.BigInteger, nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("deletes_started_at", sa.DateTime(timezone=True)))
    with op.batch_alter_table("chunk_log") as batch:
        batch.add_column(
            sa.Column("rows_duplicate", sa.BigInteger, nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("chunk_log") as batch:
        batch.drop_column("rows_duplicate")
    with op.batch_alter_table("process_log") as batch:
        batch.drop_column("deletes_started_at")
        batch.drop_column("rows_duplicate")
        batch.drop_column("rows_deleted")
