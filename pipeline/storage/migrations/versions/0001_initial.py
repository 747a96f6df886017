"""Detections and alerts.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "detections",
        sa.Column("id", BIGINT, primary_key=True),
        sa.Column("camera_id", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("pts", sa.Float(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("topk", sa.Text(), nullable=False),
        sa.Column("is_defect", sa.Boolean(), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("capture_ts", sa.BigInteger(), nullable=False),
        sa.Column("ingest_ts", sa.BigInteger(), nullable=False),
        sa.Column("dequeue_ts", sa.BigInteger(), nullable=False),
        sa.Column("infer_start_ts", sa.BigInteger(), nullable=False),
        sa.Column("infer_end_ts", sa.BigInteger(), nullable=False),
        sa.Column("sink_ts", sa.BigInteger(), nullable=False),
        sa.Column("worker_id", sa.String(128), nullable=False),
        sa.UniqueConstraint("camera_id", "seq", "model_version", name="uq_detection_frame"),
    )
    op.create_index("ix_detections_captured_at", "detections", ["captured_at"])
    op.create_index("ix_detections_camera_captured", "detections", ["camera_id", "captured_at"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("camera_id", sa.String(128), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("opened_seq", sa.BigInteger(), nullable=False),
        sa.Column("opened_ts", sa.BigInteger(), nullable=False),
        sa.Column("raised_ts", sa.BigInteger(), nullable=False),
        sa.Column("closed_seq", sa.BigInteger(), nullable=True),
        sa.Column("closed_ts", sa.BigInteger(), nullable=True),
        sa.Column("peak_score", sa.Float(), nullable=False),
        sa.Column("frames", sa.BigInteger(), nullable=False),
        sa.Column("evidence", sa.LargeBinary(), nullable=True),
        sa.UniqueConstraint("camera_id", "label", "opened_seq", name="uq_alert_event"),
    )


def downgrade() -> None:
    op.drop_table("alerts")
    op.drop_index("ix_detections_camera_captured", "detections")
    op.drop_index("ix_detections_captured_at", "detections")
    op.drop_table("detections")
