"""labelled images: the boxes a person rejected in an image (by index), left out when the image is accepted

Revision ID: 0009_label_rejected_boxes
Revises: 0008_label_jobs
Create Date: 2026-12-04 06:45:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0009_label_rejected_boxes'
down_revision = '0008_label_jobs'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('label_items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rejected_boxes', sa.JSON(), nullable=False, server_default='[]'))


def downgrade() -> None:
    with op.batch_alter_table('label_items', schema=None) as batch_op:
        batch_op.drop_column('rejected_boxes')
