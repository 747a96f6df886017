"""Hourly summary rows that survive pruning of old detections.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "detection_hourly",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("camera_id", sa.String(128), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("frames", sa.BigInteger(), nullable=False),
        sa.Column("defects", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("camera_id", "hour", "model_version", "label", name="uq_hourly"),
    )


def downgrade() -> None:
    op.drop_table("detection_hourly")
