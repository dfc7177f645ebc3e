"""jobs record which worker process runs them (to recover jobs whose worker died)

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(length=128), nullable=True))
    # Until this revision a training job naming a gesture its parent has refined that gesture;
    # since, only jobs marked `refine` (POST .../frames) do. Unfinished jobs keep the old meaning.
    jobs = sa.table("jobs", sa.column("task_id", sa.String), sa.column("options", sa.JSON))
    bind = op.get_bind()
    unfinished = sa.select(jobs.c.task_id, jobs.c.options).where(
        sa.text("status IN ('PENDING', 'PROGRESS') AND kind = 'train'")
    )
    for task_id, options in bind.execute(unfinished).all():
        bind.execute(
            jobs.update().where(jobs.c.task_id == task_id).values(options={**(options or {}), "refine": True})
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("claimed_by")
