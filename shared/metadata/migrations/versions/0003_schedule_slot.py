"""schedule_slot: one row per claimed slot of a mapping's cron schedule

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The primary key (mapref, scheduled_for) is the unique constraint that lets a slot be
    # claimed once only: two beat processes, a redelivered dispatch or a worker with a skewed
    # clock all compute the same slot time and the second INSERT fails.
    op.create_table(
        "schedule_slot",
        sa.Column("mapref", sa.String(200), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(32)),
        sa.Column("reason", sa.Text),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("mapref", "scheduled_for", name="pk_schedule_slot"),
    )


def downgrade() -> None:
    op.drop_table("schedule_slot")
