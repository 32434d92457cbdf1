"""fenced leases: each claim of a run gets a fresh token; writes for the run carry it

Revision ID: 0003_lease_fencing
Revises: 0002
Create Date: 2026-11-30 13:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003_lease_fencing'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_token', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('lease_token')
