"""Part reviews: people's verdicts on parts (the review queue), every review kept.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "part_reviews",
        sa.Column("id", BIGINT, primary_key=True),
        sa.Column(
            "part_row_id",
            BIGINT,
            sa.ForeignKey("parts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("machine_verdict", sa.String(16), nullable=False),
        sa.Column("machine_label", sa.String(64), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
    )
    op.create_index("ix_part_reviews_part", "part_reviews", ["part_row_id"])
    op.create_index("ix_part_reviews_reviewed_at", "part_reviews", ["reviewed_at"])


def downgrade() -> None:
    op.drop_table("part_reviews")
