"""Parts: one row per part that passed a camera, with its verdict; detections of part
views carry the part's id and the view's index.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("detections", sa.Column("part_id", sa.BigInteger(), nullable=True))
    op.add_column("detections", sa.Column("view_index", sa.Integer(), nullable=True))
    op.create_index("ix_detections_camera_part", "detections", ["camera_id", "part_id"])
    op.create_table(
        "parts",
        sa.Column("id", BIGINT, primary_key=True),
        sa.Column("camera_id", sa.String(128), nullable=False),
        sa.Column("part_id", sa.BigInteger(), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("first_pts", sa.Float(), nullable=False),
        sa.Column("last_pts", sa.Float(), nullable=False),
        sa.Column("first_capture_ts", sa.BigInteger(), nullable=False),
        sa.Column("last_capture_ts", sa.BigInteger(), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("views_sent", sa.Integer(), nullable=False),
        sa.Column("views_inferred", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("class_scores", sa.Text(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("end_reason", sa.String(32), nullable=False),
        sa.Column("decided_ts", sa.BigInteger(), nullable=False),
        sa.Column("deadline_ts", sa.BigInteger(), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("best_pts", sa.Float(), nullable=True),
        sa.Column("x1", sa.Integer(), nullable=True),
        sa.Column("y1", sa.Integer(), nullable=True),
        sa.Column("x2", sa.Integer(), nullable=True),
        sa.Column("y2", sa.Integer(), nullable=True),
        sa.Column("evidence", sa.LargeBinary(), nullable=True),
        sa.UniqueConstraint("camera_id", "part_id", "model_version", name="uq_part"),
    )
    op.create_index("ix_parts_captured_at", "parts", ["captured_at"])
    op.create_index("ix_parts_camera_captured", "parts", ["camera_id", "captured_at"])
    op.create_index("ix_parts_verdict", "parts", ["verdict"])


def downgrade() -> None:
    op.drop_table("parts")
    op.drop_index("ix_detections_camera_part", "detections")
    # In place (SQLite >= 3.35): a batch rebuild of detections fails on SQLite, whose
    # report views (0003) name the table while it is being swapped.
    for column in ("view_index", "part_id"):
        op.execute(f"ALTER TABLE detections DROP COLUMN {column}")
