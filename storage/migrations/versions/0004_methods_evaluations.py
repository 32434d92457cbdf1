"""held-out curve points per (run, step); each stored rollout's total reward, group mean/std and advantage

Revision ID: 0004_methods_evaluations
Revises: 0003_lease_fencing
Create Date: 2026-11-30 14:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004_methods_evaluations'
down_revision = '0003_lease_fencing'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('heldout_points',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('seconds', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_id', 'step')
    )
    with op.batch_alter_table('heldout_points', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_heldout_points_run_id'), ['run_id'], unique=False)
    # Rows stored before keep NULLs: the inspector shows what it has.
    with op.batch_alter_table('rollouts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('total', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('group_mean', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('group_std', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('advantage', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('rollouts', schema=None) as batch_op:
        batch_op.drop_column('advantage')
        batch_op.drop_column('group_std')
        batch_op.drop_column('group_mean')
        batch_op.drop_column('total')
    with op.batch_alter_table('heldout_points', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_heldout_points_run_id'))
    op.drop_table('heldout_points')
