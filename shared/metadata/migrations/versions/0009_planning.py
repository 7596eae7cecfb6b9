"""process_log: PLANNING runs, the planning step, the bounded row count

A run now exists from the moment planning starts (status PLANNING, with the step it is on in
``planning_step``), so the one-active-run-per-mapping index covers PLANNING too. Planning
confirms a low estimate with a bounded count, kept in ``counted_rows`` so the summary can set
the estimate against what was counted and read.

Revision ID: 0009
Revises: 0007
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None

OLD_ACTIVE = "status IN ('QUEUED', 'RUNNING')"
NEW_ACTIVE = "status IN ('PLANNING', 'QUEUED', 'RUNNING')"


def _active_index(where: str) -> None:
    op.create_index(
        "ux_process_log_one_active_run",
        "process_log",
        ["mapref"],
        unique=True,
        postgresql_where=sa.text(where),
        sqlite_where=sa.text(where),
    )


def upgrade() -> None:
    with op.batch_alter_table("process_log") as batch:
        batch.add_column(sa.Column("counted_rows", sa.BigInteger))
        batch.add_column(sa.Column("planning_step", sa.Text))
    op.drop_index("ux_process_log_one_active_run", table_name="process_log")
    _active_index(NEW_ACTIVE)


def downgrade() -> None:
    # The old schema has no PLANNING: a run caught planning ends FAILED.
    op.execute(
        "UPDATE process_log SET status = 'FAILED', message = 'planning interrupted by a "
        "metadata downgrade' WHERE status = 'PLANNING'"
    )
    op.drop_index("ux_process_log_one_active_run", table_name="process_log")
    _active_index(OLD_ACTIVE)
    with op.batch_alter_table("process_log") as batch:
        batch.drop_column("planning_step")
        batch.drop_column("counted_rows")
