"""Boxes of detection models: one row per box, keyed by its frame's detection row.

A frame stays one `detections` row (its label and score are the best defect box's, so
reports and the alert rule count frames as before); its boxes are rows of
`detection_boxes` (detection_id, box_index: 0 is the best box), x1, y1, x2, y2 in the
frame's own pixels. The sink writes them in the same transaction as the detection row and
only when that row is new, so a replay writes no box twice. Deleting a detection (pruning)
deletes its boxes. Classifier frames have no boxes.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "detection_boxes",
        sa.Column("id", BIGINT, primary_key=True),
        sa.Column(
            "detection_id",
            BIGINT,
            sa.ForeignKey("detections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("box_index", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("x1", sa.Float(), nullable=False),
        sa.Column("y1", sa.Float(), nullable=False),
        sa.Column("x2", sa.Float(), nullable=False),
        sa.Column("y2", sa.Float(), nullable=False),
        sa.UniqueConstraint("detection_id", "box_index", name="uq_detection_box"),
    )


def downgrade() -> None:
    op.drop_table("detection_boxes")
