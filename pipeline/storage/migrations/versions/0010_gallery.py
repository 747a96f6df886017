"""Gallery: per view (detections) and per part, the novelty against the model's gallery
and the nearest gallery class; null for a model without a gallery.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLES = ("detections", "parts")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("novelty", sa.Float(), nullable=True))
        op.add_column(table, sa.Column("gallery_label", sa.String(64), nullable=True))


def downgrade() -> None:
    # In place (SQLite >= 3.35): a batch rebuild fails on SQLite, whose report views
    # (0003, 0008) name these tables while they are swapped.
    for table in TABLES:
        for column in ("gallery_label", "novelty"):
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
