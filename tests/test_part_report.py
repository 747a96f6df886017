"""Reports in parts: exact counts from the part views, before and after pruning."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.storage import reporting, retention
from linewatch.pipeline.storage.reporting import PartCounts, Window
from linewatch.schemas.tables import Part, PartHourly
from tests.support.browser import coloured, each_plot_in_chromium, plot_images, require_chromium
from tests.support.rows import part_row, write_parts
from tests.support.services import linewatch

DAY = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
    days=3
)
# (camera, hour of DAY, minute, verdict, label, model version, late)
PARTS = [
    ("cam1", 5, 10, "ok", "free", "v1", False),
    ("cam1", 5, 20, "defect", "crack", "v1", False),
    ("cam1", 5, 40, "ok", "free", "v1", False),
    ("cam1", 6, 5, "defect", "crack", "v1", False),
    ("cam1", 6, 15, "defect", "blowhole", "v1", False),
    ("cam1", 6, 25, "uninspected", "", "v1", False),
    ("cam1", 6, 35, "ok", "free", "v1", True),  # late: the line got `uninspected`
    ("cam1", 6, 45, "ok", "free", "v1", False),
    ("cam1", 13, 10, "defect", "crack", "v1", False),
    ("cam1", 13, 50, "ok", "free", "v1", False),
    ("cam1", 22, 10, "defect", "break", "v1", True),  # late: not an NG part for the line
    ("cam1", 22, 20, "ok", "free", "v1", False),
    ("cam2", 6, 10, "ok", "free", "v1", False),
    ("cam2", 6, 20, "defect", "crack", "v1", False),
    ("cam2", 14, 5, "ok", "free", "v2", False),  # a model switch at 14:00
    ("cam2", 14, 15, "ok", "free", "v2", False),
    ("cam2", 14, 25, "defect", "blowhole", "v2", False),
    ("cam2", 14, 35, "uninspected", "", "v2", False),
]
CUTOFF = DAY + timedelta(hours=13, minutes=30)  # prunes half of cam1's 13:00 hour
WHOLE_DAY = Window(DAY, DAY + timedelta(days=1))


def at(hour: int, minute: int = 0) -> datetime:
    return DAY + timedelta(hours=hour, minutes=minute)


def rows() -> list[dict[str, object]]:
    out = []
    for index, (camera, hour, minute, verdict, label, version, late) in enumerate(PARTS):
        out.append(part_row(camera, index, at(hour, minute), verdict, label, version, late))
    return out


@pytest.fixture()
def engine(database_url: str) -> Iterator[Engine]:
    engine = storage.open_database(database_url)
    write_parts(engine, rows())
    yield engine
    engine.dispose()


def prune(engine: Engine) -> None:
    assert retention.prune_parts(engine, CUTOFF, batch=4) == 11


def hours(parts: reporting.PartsReport) -> list[tuple[str, int, tuple[int, ...]]]:
    return [(r.camera_id, r.hour.hour, r.counts.as_tuple()) for r in parts.camera_hours]


def assert_known_counts(parts: reporting.PartsReport) -> None:
    # counts: (parts, ok, ng, uninspected, late)
    assert hours(parts) == [
        ("cam1", 5, (3, 2, 1, 0, 0)),
        ("cam1", 6, (5, 1, 2, 2, 1)),
        ("cam2", 6, (2, 1, 1, 0, 0)),
        ("cam1", 13, (2, 1, 1, 0, 0)),
        ("cam2", 14, (4, 2, 1, 1, 0)),
        ("cam1", 22, (2, 1, 0, 1, 1)),
    ]
    shifts = [
        (s.camera_id, s.shift_start, s.shift, s.counts.as_tuple()) for s in parts.camera_shifts
    ]
    assert shifts == [
        ("cam1", at(-2), "22-06", (3, 2, 1, 0, 0)),
        ("cam1", at(6), "06-14", (7, 2, 3, 2, 1)),
        ("cam2", at(6), "06-14", (2, 1, 1, 0, 0)),
        ("cam2", at(14), "14-22", (4, 2, 1, 1, 0)),
        ("cam1", at(22), "22-06", (2, 1, 0, 1, 1)),
    ]
    pareto = [
        (p.label, p.ng, round(p.share, 4), round(p.cumulative_share, 4)) for p in parts.pareto
    ]
    assert pareto == [("crack", 4, 0.6667, 0.6667), ("blowhole", 2, 0.3333, 1.0)]
    versions = [
        (v.model_version, v.counts.as_tuple(), v.ng_per_class) for v in parts.model_versions
    ]
    assert versions == [
        ("v1", (14, 6, 5, 3, 2), (("crack", 4), ("blowhole", 1))),
        ("v2", (4, 2, 1, 1, 0), (("blowhole", 1),)),
    ]
    totals = parts.totals
    assert totals == PartCounts(18, 8, 6, 4, 2)
    assert (round(totals.first_pass_yield, 4), round(totals.ng_rate, 4)) == (0.4444, 0.4286)
    assert [(moment.hour, c.parts) for moment, c in parts.line_hours] == [
        (5, 3),
        (6, 7),
        (13, 2),
        (14, 4),
        (22, 2),
    ]


def test_part_reports_are_exact_and_survive_pruning(engine: Engine) -> None:
    before = reporting.build_parts_report(engine, WHOLE_DAY)
    assert_known_counts(before)
    prune(engine)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Part)) == 7
        assert session.scalar(select(func.sum(PartHourly.parts))) == 11
    after = reporting.build_parts_report(engine, WHOLE_DAY)
    assert_known_counts(after)
    assert after == before
    assert reporting.build_report(engine, WHOLE_DAY).parts == before


def test_pruning_twice_adds_to_the_summary(engine: Engine) -> None:
    assert retention.prune_parts(engine, at(6), batch=2) == 3
    prune_rest = retention.prune_parts(engine, CUTOFF, batch=100)
    assert prune_rest == 8
    assert_known_counts(reporting.build_parts_report(engine, WHOLE_DAY))
    assert (
        retention.prune(engine, datetime.now(timezone.utc) - at(23)).detections == 0
    )  # no detections
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Part)) == 0
    assert_known_counts(reporting.build_parts_report(engine, WHOLE_DAY))


def test_part_window_edges_and_camera(engine: Engine) -> None:
    prune(engine)
    edges = reporting.build_parts_report(engine, Window(at(6, 30), at(13, 20)))
    assert [(c, h) for c, h, _ in hours(edges)] == [("cam1", 6), ("cam2", 6), ("cam1", 13)]
    only = reporting.build_parts_report(engine, Window(DAY, at(24), camera="cam2"))
    assert only.totals == PartCounts(6, 3, 2, 1, 0)
    assert {r.camera_id for r in only.camera_hours} == {"cam2"}
    empty = reporting.build_parts_report(engine, Window(at(-48), at(-24)))
    assert empty.totals == PartCounts() and empty.pareto == [] and empty.model_versions == []
    assert (empty.totals.first_pass_yield, empty.totals.ng_rate) == (0.0, 0.0)


def test_part_views_agree_with_the_reports(engine: Engine) -> None:
    prune(engine)
    parts = reporting.build_parts_report(engine, WHOLE_DAY)
    with engine.connect() as connection:
        shifts = connection.execute(
            text(
                "SELECT camera_id, shift, parts, ok, ng, uninspected, late "
                "FROM report_part_camera_shift ORDER BY shift_start, camera_id"
            )
        ).all()
        hour = connection.execute(
            text(
                "SELECT first_pass_yield, ng_rate FROM report_part_camera_hour "
                "WHERE camera_id = 'cam1' AND shift = '06-14' ORDER BY hour"
            )
        ).first()
        pareto = connection.execute(
            text("SELECT label, ng, cumulative_share, ng_rank FROM report_part_pareto ORDER BY 4")
        ).all()
        versions = connection.execute(
            text(
                "SELECT model_version, parts, ng, first_pass_yield, ng_rate "
                "FROM report_part_model_versions ORDER BY model_version"
            )
        ).all()
    assert [tuple(row) for row in shifts] == [
        (s.camera_id, s.shift, *s.counts.as_tuple()) for s in parts.camera_shifts
    ]
    assert hour is not None and (round(hour[0], 4), round(hour[1], 4)) == (0.2, 0.6667)
    assert [(r[0], r[1], round(r[2], 4), r[3]) for r in pareto] == [
        ("crack", 4, 0.6667, 1),
        ("blowhole", 2, 1.0, 2),
    ]
    assert [(v[0], v[1], v[2], round(v[3], 4), round(v[4], 4)) for v in versions] == [
        ("v1", 14, 5, 0.4286, 0.4545),
        ("v2", 4, 1, 0.5, 0.3333),
    ]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_cli_csv_in_parts(engine: Engine, database_url: str, tmp_path: Path) -> None:
    prune(engine)
    out = tmp_path / "csv"
    window = ("--since", DAY.strftime("%Y-%m-%d"), "--until", at(24).strftime("%Y-%m-%d"))
    run = linewatch(
        "report", *window, "--format", "csv", "--out", str(out), "--database-url", database_url
    )
    assert run.returncode == 0, run.stderr
    assert "18 parts, 6 NG, 4 uninspected, first-pass yield 44.4%" in run.stdout
    assert "no detections in window" in run.stdout  # the frames section: none stored
    summary = read_csv(out / "parts_summary.csv")[0]
    assert [summary[k] for k in ("parts", "OK", "NG", "uninspected", "late")] == [
        "18",
        "8",
        "6",
        "4",
        "2",
    ]
    assert (summary["first-pass yield"], summary["NG rate"], summary["note"]) == (
        "0.4444",
        "0.4286",
        "",
    )
    pareto = [(r["defect class"], r["NG parts"]) for r in read_csv(out / "parts_pareto.csv")]
    assert pareto == [("crack", "4"), ("blowhole", "2")]
    shifts = [(r["camera"], r["shift"], r["NG"]) for r in read_csv(out / "parts_camera_shifts.csv")]
    assert shifts == [
        ("cam1", "22-06", "1"),
        ("cam1", "06-14", "3"),
        ("cam2", "06-14", "1"),
        ("cam2", "14-22", "1"),
        ("cam1", "22-06", "0"),
    ]
    per_hour = [(r["hour (UTC)"][-5:], r["parts"]) for r in read_csv(out / "parts_line_hours.csv")]
    assert per_hour == [
        ("05:00", "3"),
        ("06:00", "7"),
        ("13:00", "2"),
        ("14:00", "4"),
        ("22:00", "2"),
    ]
    versions = read_csv(out / "parts_model_versions.csv")
    assert (
        versions[1]["model version"] == "v2" and versions[1]["NG parts per class"] == "blowhole=1"
    )
    assert read_csv(out / "summary.csv")[0]["note"] == "no detections in window"


def test_one_hour_window_draws_every_part_plot(sqlite_url: str, tmp_path: Path) -> None:
    engine = storage.open_database(sqlite_url)
    write_parts(engine, rows())
    engine.dispose()
    out = tmp_path / "hour.html"
    window = ("--since", at(6).isoformat()[:16], "--until", at(7).isoformat()[:16])
    run = linewatch("report", *window, "--out", str(out), "--database-url", sqlite_url)
    assert run.returncode == 0, run.stderr
    page = out.read_text()
    assert "Pareto of defect classes" in page and "No detections in window" in page
    images = plot_images(page)
    assert len(images) == 3  # parts per hour + NG rate, Pareto, model versions
    for image in images:
        assert image is not None and coloured(image) > 40, coloured(image)
    require_chromium()
    rendered = each_plot_in_chromium(page, tmp_path)
    assert len(rendered) == 3 and min(rendered) > 40, f"a part plot did not render: {rendered}"


def test_empty_window_says_so_in_parts(engine: Engine, database_url: str, tmp_path: Path) -> None:
    out = tmp_path / "empty.html"
    window = ("--since", "2000-01-01", "--until", "2000-01-02")
    run = linewatch("report", *window, "--out", str(out), "--database-url", database_url)
    assert run.returncode == 0, run.stderr
    assert "no parts in window; no detections in window" in run.stdout
    page = out.read_text()
    assert "No parts in window" in page and "base64" not in page
