"""labelling jobs: unlabelled images queued for the worker's answerers, each image's boxes written once, and reviewed

Revision ID: 0008_label_jobs
Revises: 0007_dataset_split_origin
Create Date: 2026-12-05 10:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0008_label_jobs'
down_revision = '0007_dataset_split_origin'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('label_jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('on_cpu', sa.Boolean(), nullable=False),
    sa.Column('source', sa.JSON(), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('owner', sa.String(length=128), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('label_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_label_jobs_status'), ['status'], unique=False)
    op.create_table('label_items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('image', sa.String(length=512), nullable=False),
    sa.Column('name', sa.String(length=1024), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('boxes', sa.JSON(), nullable=False),
    sa.Column('seconds', sa.Float(), nullable=True),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('review', sa.String(length=16), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['label_jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id', 'position')
    )
    with op.batch_alter_table('label_items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_label_items_job_id'), ['job_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('label_items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_label_items_job_id'))
    op.drop_table('label_items')
    with op.batch_alter_table('label_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_label_jobs_status'))
    op.drop_table('label_jobs')
