"""Reporting views over raw detections plus the hourly summary rows that pruning leaves.

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

VIEWS = (
    "report_top_hours",
    "report_camera_shift",
    "report_camera_hour",
    "report_class_hour",
    "report_hourly",
)

# PostgreSQL sums bigints as numeric; the views keep whole counts.
_SUMS = "CAST(SUM(frames) AS BIGINT) AS frames, CAST(SUM(defects) AS BIGINT) AS defects"


def _hour_sql(dialect: str) -> tuple[str, str]:
    """(raw detections' hour bucket, summary rows' hour) as the same UTC type."""
    if dialect == "postgresql":
        return "date_trunc('hour', captured_at AT TIME ZONE 'UTC')", "(hour AT TIME ZONE 'UTC')"
    return "(substr(captured_at, 1, 13) || ':00:00.000000')", "hour"


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


def _union(dialect: str, keys: tuple[str, ...]) -> str:
    """Raw detections rolled up per hour and `keys`, UNION ALL the summary rows."""
    raw_hour, summary_hour = _hour_sql(dialect)
    columns = "".join(f", {key}" for key in keys)
    return (
        f"SELECT camera_id, {raw_hour} AS hour{columns}, COUNT(*) AS frames, "
        "SUM(CASE WHEN is_defect THEN 1 ELSE 0 END) AS defects "
        f"FROM detections WHERE label <> '' GROUP BY camera_id, {raw_hour}{columns} "
        f"UNION ALL SELECT camera_id, {summary_hour} AS hour{columns}, frames, defects "
        "FROM detection_hourly WHERE label <> ''"
    )


def _rollup(dialect: str, keys: tuple[str, ...]) -> str:
    """Frames and defects per camera, hour and `keys` (an hour pruned half-way has two parts)."""
    columns = ", ".join(("camera_id", "hour", *keys))
    return (
        f"SELECT {columns}, {_SUMS} "
        f"FROM ({_union(dialect, keys)}) AS parts GROUP BY {columns}"
    )


def _view_sql(dialect: str) -> dict[str, str]:
    shift_start, shift = _shift_sql(dialect)
    return {
        "report_hourly": _rollup(dialect, ("model_version", "label")),
        "report_class_hour": _rollup(dialect, ("label",)),
        "report_camera_hour": (
            f"SELECT camera_id, hour, {shift_start} AS shift_start, {shift} AS shift, "
            f"frames, defects FROM ({_rollup(dialect, ())}) AS per_hour"
        ),
        "report_camera_shift": (
            f"SELECT camera_id, shift_start, shift, {_SUMS} FROM report_camera_hour "
            "GROUP BY camera_id, shift_start, shift"
        ),
        "report_top_hours": (
            "SELECT camera_id, hour, frames, defects, "
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
