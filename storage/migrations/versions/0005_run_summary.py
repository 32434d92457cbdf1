"""each run's recent step time and newest reward kept on its row (the Runs table reads one query)

Revision ID: 0005_run_summary
Revises: 0004_methods_evaluations
Create Date: 2026-12-01 10:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005_run_summary'
down_revision = '0004_methods_evaluations'
branch_labels = None
depends_on = None

# The values backend.jobs.runs.upsert_metrics keeps from now on, computed once for the runs already stored.
BACKFILL = """
UPDATE runs SET
  step_seconds = (SELECT avg(recent.value) FROM (
      SELECT m.value FROM metric_points m WHERE m.run_id = runs.id AND m.name = 'step_time'
      ORDER BY m.step DESC LIMIT 10) AS recent),
  last_reward = (SELECT m.value FROM metric_points m WHERE m.run_id = runs.id AND m.name = 'reward'
                 ORDER BY m.step DESC LIMIT 1)
"""


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('step_seconds', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('last_reward', sa.Float(), nullable=True))
    op.execute(BACKFILL)


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('last_reward')
        batch_op.drop_column('step_seconds')
