"""Reports in parts: the hourly part summary that pruning leaves, and the part report views.

`part_hourly` holds parts rolled up per camera, UTC hour, model version and label once
`linewatch db prune` deletes their rows. `report_part_rows` is the base of every part
report: one row per part (parts 1) UNION ALL one row per hourly summary, with `at` (the
part's first capture time, or the summary's hour) and `hour`; filter it on `at` and
aggregate (pipeline/storage/reporting.py), which reaches the parts.captured_at indexes.

Parts are counted as the line saw them: `ok` and `ng` are parts decided in time; a part
without an inferred view, or decided after its deadline (`late`: the line was sent
`uninspected` at the deadline), counts as `uninspected`. First-pass yield = ok / parts;
NG rate = ng / (parts - uninspected), the share of inspected parts found defective.
Shifts are 3 x 8 h in UTC (06-14, 14-22, 22-06) as in 0003.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Dropped in this order (dependents first).
VIEWS = (
    "report_part_model_versions",
    "report_part_pareto",
    "report_part_camera_shift",
    "report_part_camera_hour",
    "report_part_hourly",
    "report_part_rows",
)
COUNTS = ("parts", "ok", "ng", "uninspected", "late")

_LATE = "CASE WHEN late THEN 1 ELSE 0 END"
_RAW_COUNTS = (
    "CAST(1 AS BIGINT) AS parts, "
    f"CAST(CASE WHEN verdict = 'ok' AND {_LATE} = 0 THEN 1 ELSE 0 END AS BIGINT) AS ok, "
    f"CAST(CASE WHEN verdict = 'defect' AND {_LATE} = 0 THEN 1 ELSE 0 END AS BIGINT) AS ng, "
    f"CAST(CASE WHEN verdict = 'uninspected' OR {_LATE} = 1 THEN 1 ELSE 0 END AS BIGINT) "
    f"AS uninspected, CAST({_LATE} AS BIGINT) AS late"
)
_SUMS = ", ".join(f"CAST(SUM({name}) AS BIGINT) AS {name}" for name in COUNTS)
_RATES = (
    "CAST(SUM(ok) AS FLOAT) / SUM(parts) AS first_pass_yield, "
    "CAST(SUM(ng) AS FLOAT) / NULLIF(SUM(parts) - SUM(uninspected), 0) AS ng_rate"
)


def _rows_sql(dialect: str) -> str:
    if dialect == "postgresql":
        raw_hour = "date_trunc('hour', captured_at AT TIME ZONE 'UTC')"
        summary_hour = "hour AT TIME ZONE 'UTC'"
    else:
        raw_hour, summary_hour = "substr(captured_at, 1, 13) || ':00:00.000000'", "hour"
    return (
        f"SELECT camera_id, captured_at AS at, {raw_hour} AS hour, model_version, label, "
        f"{_RAW_COUNTS} FROM parts "
        f"UNION ALL SELECT camera_id, hour AS at, {summary_hour} AS hour, model_version, label, "
        f"{', '.join(COUNTS)} FROM part_hourly"
    )


def _shift_sql(dialect: str) -> tuple[str, str]:
    """(shift_start, shift name) of the column `hour` (the same as migration 0003's)."""
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


def _grouped(keys: str, source: str = "report_part_rows", rates: bool = False) -> str:
    rates_sql = f", {_RATES}" if rates else ""
    return f"SELECT {keys}, {_SUMS}{rates_sql} FROM {source} GROUP BY {keys}"


def _view_sql(dialect: str) -> dict[str, str]:
    shift_start, shift = _shift_sql(dialect)
    counts = ", ".join(COUNTS)
    return {
        "report_part_rows": _rows_sql(dialect),
        "report_part_hourly": _grouped("camera_id, hour, model_version, label"),
        "report_part_camera_hour": (
            f"SELECT camera_id, hour, {shift_start} AS shift_start, {shift} AS shift, {counts}, "
            "first_pass_yield, ng_rate "
            f"FROM ({_grouped('camera_id, hour', rates=True)}) AS per_hour"
        ),
        "report_part_camera_shift": _grouped(
            "camera_id, shift_start, shift", "report_part_camera_hour", rates=True
        ),
        "report_part_pareto": (
            "SELECT label, ng, CAST(ng AS FLOAT) / SUM(ng) OVER () AS share, "
            "CAST(SUM(ng) OVER (ORDER BY ng DESC, label ROWS UNBOUNDED PRECEDING) AS FLOAT) "
            "/ SUM(ng) OVER () AS cumulative_share, "
            "RANK() OVER (ORDER BY ng DESC) AS ng_rank "
            "FROM (SELECT label, CAST(SUM(ng) AS BIGINT) AS ng FROM report_part_rows "
            "GROUP BY label) AS per_label WHERE ng > 0"
        ),
        "report_part_model_versions": _grouped("model_version", rates=True),
    }


def upgrade() -> None:
    op.create_table(
        "part_hourly",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("camera_id", sa.String(128), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in COUNTS),
        sa.UniqueConstraint("camera_id", "hour", "model_version", "label", name="uq_part_hourly"),
    )
    for name, query in _view_sql(op.get_bind().dialect.name).items():
        op.execute(f"CREATE VIEW {name} AS {query}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW {name}")
    op.drop_table("part_hourly")
