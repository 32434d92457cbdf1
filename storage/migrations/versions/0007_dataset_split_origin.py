"""where a dataset's held-out split came from: the export's own folders or lists, or ours (stratified)

Revision ID: 0007_dataset_split_origin
Revises: 0006_prediction_requests
Create Date: 2026-12-02 10:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007_dataset_split_origin'
down_revision = '0006_prediction_requests'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every dataset imported before this revision was split by us.
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('split_origin', sa.String(length=16), nullable=False,
                                      server_default='stratified'))


def downgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_column('split_origin')
