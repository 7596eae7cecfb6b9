"""error_row index on (run_id, chunk_no)

A retried chunk deletes its earlier attempt's error rows and `chordload errors` lists a run's;
without the index both read the whole table, which only grows.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_error_row_run_chunk", "error_row", ["run_id", "chunk_no"])


def downgrade() -> None:
    op.drop_index("ix_error_row_run_chunk", table_name="error_row")
