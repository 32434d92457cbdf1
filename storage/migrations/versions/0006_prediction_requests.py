"""the Test tab's questions queue for the worker, which answers them with the model it holds

Revision ID: 0006_prediction_requests
Revises: 0005_run_summary
Create Date: 2026-11-30 20:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006_prediction_requests'
down_revision = '0005_run_summary'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('prediction_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('on_cpu', sa.Boolean(), nullable=False),
    sa.Column('request', sa.JSON(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('owner', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('prediction_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_prediction_requests_status'), ['status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('prediction_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_prediction_requests_status'))
    op.drop_table('prediction_requests')
