"""checkpoint_change: every change of a stored checkpoint; checkpoint.run_id nullable

A checkpoint is moved by runs and, with ``chordload checkpoint --set`` / ``--reset``, by hand
(after a source clock went back, say). Each change is a row: who, when, old and new value
(typed JSON), the run that moved it or the operator's reason. A checkpoint set by hand has no
run, so ``checkpoint.run_id`` becomes nullable.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "checkpoint_change",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("mapref", sa.String(200), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.String(200), nullable=False),
        sa.Column("old_value", sa.JSON),
        sa.Column("new_value", sa.JSON),
        sa.Column("run_id", sa.String(32)),
        sa.Column("reason", sa.Text),
    )
    op.create_index("ix_checkpoint_change_mapref", "checkpoint_change", ["mapref", "id"])
    with op.batch_alter_table("checkpoint") as batch:
        batch.alter_column("run_id", existing_type=sa.String(32), nullable=True)


def downgrade() -> None:
    # A checkpoint set by hand keeps its value; the old schema wants a run id there.
    op.execute("UPDATE checkpoint SET run_id = 'manual' WHERE run_id IS NULL")
    with op.batch_alter_table("checkpoint") as batch:
        batch.alter_column("run_id", existing_type=sa.String(32), nullable=False)
    op.drop_index("ix_checkpoint_change_mapref", table_name="checkpoint_change")
    op.drop_table("checkpoint_change")
