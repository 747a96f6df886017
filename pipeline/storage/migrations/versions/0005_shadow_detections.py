"""Shadow model results and the view that compares them with the live model.

`shadow_detections` holds what a shadow model (inference.shadow_model_dir) said about
each frame: stored, never alerted on, never counted in the other report views.
`report_shadow_comparison` pairs each frame's live and shadow results: frames compared,
same label, defects flagged by each, and the disagreements either way.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

COMPARISON_SQL = """
SELECT d.model_version AS model_version, s.model_version AS shadow_version,
       COUNT(*) AS frames,
       SUM(CASE WHEN d.label = s.label THEN 1 ELSE 0 END) AS same_label,
       SUM(CASE WHEN d.is_defect THEN 1 ELSE 0 END) AS defects,
       SUM(CASE WHEN s.is_defect THEN 1 ELSE 0 END) AS shadow_defects,
       SUM(CASE WHEN d.is_defect AND NOT s.is_defect THEN 1 ELSE 0 END) AS only_live_defects,
       SUM(CASE WHEN s.is_defect AND NOT d.is_defect THEN 1 ELSE 0 END) AS only_shadow_defects
FROM detections AS d
JOIN shadow_detections AS s ON s.camera_id = d.camera_id AND s.seq = d.seq
WHERE d.status = 'ok' AND s.status = 'ok'
GROUP BY d.model_version, s.model_version
"""


def upgrade() -> None:
    op.create_table(
        "shadow_detections",
        sa.Column("id", BIGINT, primary_key=True),
        sa.Column("camera_id", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("is_defect", sa.Boolean(), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sink_ts", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("camera_id", "seq", "model_version", name="uq_shadow_frame"),
    )
    op.create_index("ix_shadow_captured_at", "shadow_detections", ["captured_at"])
    op.execute(f"CREATE VIEW report_shadow_comparison AS {COMPARISON_SQL}")


def downgrade() -> None:
    op.execute("DROP VIEW report_shadow_comparison")
    op.drop_index("ix_shadow_captured_at", "shadow_detections")
    op.drop_table("shadow_detections")
