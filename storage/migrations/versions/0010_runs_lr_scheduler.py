"""runs: the learning-rate schedule a run trains with is a setting (lr_scheduler); runs stored before it trained,
and resume, with a constant rate, so their settings say so

Revision ID: 0010_runs_lr_scheduler
Revises: 0009_label_rejected_boxes
Create Date: 2026-12-07 12:45:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0010_runs_lr_scheduler'
down_revision = '0009_label_rejected_boxes'
branch_labels = None
depends_on = None

runs = sa.table('runs', sa.column('id', sa.Integer), sa.column('settings', sa.JSON))


def _rewrite(change) -> None:
    conn = op.get_bind()
    for run_id, settings in conn.execute(sa.select(runs.c.id, runs.c.settings)).all():
        if isinstance(settings, dict):
            changed = change(dict(settings))
            if changed != settings:
                conn.execute(runs.update().where(runs.c.id == run_id).values(settings=changed))


def upgrade() -> None:
    _rewrite(lambda settings: {**settings, 'lr_scheduler': settings.get('lr_scheduler', 'constant')})


def downgrade() -> None:  # the code before this revision knows no lr_scheduler setting (it trained with 'constant')
    _rewrite(lambda settings: {k: v for k, v in settings.items() if k != 'lr_scheduler'})
