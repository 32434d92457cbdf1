"""rollouts unique per (run, step, prompt index, sample index); rollout truth kept past its dataset

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 10:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows already stored keep NULL indices: NULLs never conflict, so nothing old is lost or merged.
    with op.batch_alter_table('rollouts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('prompt_index', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('sample_index', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('truth', sa.JSON(), nullable=True))
        batch_op.create_unique_constraint('uq_rollouts_run_step_prompt_sample',
                                          ['run_id', 'step', 'prompt_index', 'sample_index'])


def downgrade() -> None:
    with op.batch_alter_table('rollouts', schema=None) as batch_op:
        batch_op.drop_constraint('uq_rollouts_run_step_prompt_sample', type_='unique')
        batch_op.drop_column('truth')
        batch_op.drop_column('sample_index')
        batch_op.drop_column('prompt_index')
