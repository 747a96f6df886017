"""Reporting views over raw detections plus the hourly summary rows that pruning leaves.

`report_rows` is the base: one row per raw detection (frames 1) UNION ALL one row per
hourly summary, each with `at` (capture time, or the summary's hour) and `hour` (its UTC
hour bucket). Filter it on `at` and aggregate: the filter reaches the indexes on
detections.captured_at, which is what makes windowed reports fast (pipeline/storage/reporting.py).
The grouped views on top are whole-history conveniences for SQL users and dashboards.

Every view counts inferred frames only (label <> ''; stale, undecodable and invalid-output
rows carry an empty label, in `detections` and in `detection_hourly` alike), so a report
gives the same numbers before and after `linewatch db prune`.

Times are UTC. `hour` is a timestamp without time zone on PostgreSQL and SQLAlchemy's
DateTime text ('YYYY-MM-DD HH:00:00.000000') on SQLite. Shifts are 3 x 8 h in UTC:
06-14, 14-22 and 22-06; a night shift belongs to the day it starts on.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Dropped in this order (dependents first).
VIEWS = (
    "report_top_hours",
    "report_model_versions",
    "report_camera_shift",
    "report_camera_hour",
    "report_class_hour",
    "report_hourly",
    "report_rows",
)

# PostgreSQL sums bigints as numeric; the views keep whole counts.
_SUMS = "CAST(SUM(frames) AS BIGINT) AS frames, CAST(SUM(defects) AS BIGINT) AS defects"
_RATE = "CAST(SUM(defects) AS FLOAT) / SUM(frames) AS defect_rate"


def _rows_sql(dialect: str) -> str:
    """Raw detections (frames 1) UNION ALL hourly summaries, inferred frames only."""
    if dialect == "postgresql":
        raw_hour, summary_hour = (
            "date_trunc('hour', captured_at AT TIME ZONE 'UTC')",
            ("hour AT TIME ZONE 'UTC'"),
        )
    else:
        raw_hour, summary_hour = "substr(captured_at, 1, 13) || ':00:00.000000'", "hour"
    return (
        f"SELECT camera_id, captured_at AS at, {raw_hour} AS hour, model_version, label, "
        "CAST(1 AS BIGINT) AS frames, CAST(CASE WHEN is_defect THEN 1 ELSE 0 END AS BIGINT) "
        "AS defects FROM detections WHERE label <> '' "
        f"UNION ALL SELECT camera_id, hour AS at, {summary_hour} AS hour, model_version, "
        "label, frames, defects FROM detection_hourly WHERE label <> ''"
    )


def _shift_sql(dialect: str) -> tuple[str, str]:
    """(shift_start, shift name) of the column `hour`: shift k of day d starts d 06:00 + 8k h."""
    if dialect == "postgresql":
        index = "(CAST(EXTRACT(HOUR FROM hour - INTERVAL '6 hours') AS INTEGER) / 8)"
        start = (
            f"date_trunc('day', hour - INTERVAL '6 hours') + (6 + 8 * {index}) * INTERVAL '1 hour'"
        )
    else:
        index = "(CAST(strftime('%H', hour, '-6 hours') AS INTEGER) / 8)"
        start = (
            f"strftime('%Y-%m-%d %H:%M:%S.000000', date(hour, '-6 hours'), "
            f"'+' || (6 + 8 * {index}) || ' hours')"
        )
    name = f"CASE {index} WHEN 0 THEN '06-14' WHEN 1 THEN '14-22' ELSE '22-06' END"
    return start, name


def _grouped(keys: str, source: str = "report_rows", rate: bool = False) -> str:
    rate_sql = f", {_RATE}" if rate else ""
    return f"SELECT {keys}, {_SUMS}{rate_sql} FROM {source} GROUP BY {keys}"


def _view_sql(dialect: str) -> dict[str, str]:
    shift_start, shift = _shift_sql(dialect)
    return {
        "report_rows": _rows_sql(dialect),
        "report_hourly": _grouped("camera_id, hour, model_version, label"),
        "report_class_hour": _grouped("camera_id, hour, label"),
        "report_camera_hour": (
            f"SELECT camera_id, hour, {shift_start} AS shift_start, {shift} AS shift, frames, "
            f"defects, defect_rate FROM ({_grouped('camera_id, hour', rate=True)}) AS per_hour"
        ),
        "report_camera_shift": _grouped(
            "camera_id, shift_start, shift", "report_camera_hour", rate=True
        ),
        "report_model_versions": (
            "SELECT model_version, label, frames, defects, "
            "SUM(frames) OVER version AS version_frames, "
            "CAST(SUM(defects) OVER version AS FLOAT) / SUM(frames) OVER version "
            "AS version_defect_rate, CAST(frames AS FLOAT) / SUM(frames) OVER version AS share "
            f"FROM ({_grouped('model_version, label')}) AS per_class "
            "WINDOW version AS (PARTITION BY model_version)"
        ),
        "report_top_hours": (
            "SELECT camera_id, hour, frames, defects, defect_rate, "
            "RANK() OVER (ORDER BY defects DESC) AS defect_rank "
            "FROM report_camera_hour WHERE defects > 0"
        ),
    }


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name, query in _view_sql(dialect).items():
        op.execute(f"CREATE VIEW {name} AS {query}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW {name}")
