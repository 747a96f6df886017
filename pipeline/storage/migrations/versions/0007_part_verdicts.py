"""Part verdicts: pending part ends, view evidence, part and line alerts.

`part_ends` holds the part ends the sink has received and not yet finished deciding
(its restart state: a part end is acknowledged on the stream once stored here).
`detections.view_box` is a view's part box in frame pixels; `detections.evidence` keeps a
defect view's crop until its part is decided.
`alerts.kind` (frame | part | line) and `alerts.part_id`: a part alert is unique per
(camera_id, part_id); frame and line alerts keep their (camera_id, label, opened_seq).
`outbox` holds each part verdict and part or line alert to announce, written with the
decision; `outbox_cursors` says how far each notifier has been given them.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
NOT_A_PART = sa.text("part_id IS NULL")
A_PART = sa.text("part_id IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "part_ends",
        sa.Column("id", BIGINT, primary_key=True),
        sa.Column("camera_id", sa.String(128), nullable=False),
        sa.Column("part_id", sa.BigInteger(), nullable=False),
        sa.Column("views_sent", sa.Integer(), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("first_pts", sa.Float(), nullable=False),
        sa.Column("last_pts", sa.Float(), nullable=False),
        sa.Column("first_capture_ts", sa.BigInteger(), nullable=False),
        sa.Column("last_capture_ts", sa.BigInteger(), nullable=False),
        sa.Column("ended_ts", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("deadline_ts", sa.BigInteger(), nullable=False),
        sa.Column("received_ts", sa.BigInteger(), nullable=False),
        sa.Column("announced", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("camera_id", "part_id", name="uq_part_end"),
    )
    op.add_column("detections", sa.Column("view_box", sa.String(64), nullable=True))
    op.add_column("detections", sa.Column("evidence", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("alerts") as batch:  # SQLite rebuilds the table
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="frame"))
        batch.add_column(sa.Column("part_id", sa.BigInteger(), nullable=True))
        batch.drop_constraint("uq_alert_event", type_="unique")
    _partial_unique("uq_alert_event", ["camera_id", "label", "opened_seq"], NOT_A_PART)
    _partial_unique("uq_alert_part", ["camera_id", "part_id"], A_PART)
    op.create_table(
        "outbox",
        sa.Column("id", BIGINT, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_ts", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "outbox_cursors",
        sa.Column("notifier", sa.String(64), primary_key=True),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
    )


def _partial_unique(name: str, columns: list[str], where: sa.TextClause) -> None:
    op.create_index(
        name, "alerts", columns, unique=True, sqlite_where=where, postgresql_where=where
    )


def downgrade() -> None:
    op.drop_table("outbox_cursors")
    op.drop_table("outbox")
    op.drop_index("uq_alert_part", "alerts")
    op.drop_index("uq_alert_event", "alerts")
    op.execute("DELETE FROM alerts WHERE kind != 'frame'")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("part_id")
        batch.drop_column("kind")
        batch.create_unique_constraint("uq_alert_event", ["camera_id", "label", "opened_seq"])
    for column in ("evidence", "view_box"):  # SQLite >= 3.35 drops a column in place (the
        op.execute(f"ALTER TABLE detections DROP COLUMN {column}")  # report views use detections)
    op.drop_table("part_ends")
