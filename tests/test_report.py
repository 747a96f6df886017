"""Reports: exact numbers from the views and `linewatch report`, before and after pruning."""

from __future__ import annotations

import csv
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text

from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.storage import migrate, reporting, retention
from linewatch.pipeline.storage.reporting import Window
from linewatch.pipeline.streams.embedded_redis import free_port
from linewatch.schemas.messages import ResultMessage
from tests.support.browser import (
    coloured,
    each_plot_in_chromium,
    plot_images,
    require_chromium,
    screenshot,
)
from tests.support.rows import count_detections
from tests.support.services import assert_clean_error, linewatch

DAY = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
    days=3
)
CHROMIUM = Path("/usr/bin/chromium")
# (camera, hour of DAY, minute, label, model version); "" is a stale frame (not counted).
FRAMES = [
    ("cam1", 5, 10, "free", "v1"),
    ("cam1", 5, 20, "free", "v1"),
    ("cam1", 5, 30, "crack", "v1"),
    ("cam1", 6, 10, "crack", "v1"),
    ("cam1", 6, 20, "crack", "v1"),
    ("cam1", 6, 30, "crack", "v1"),
    ("cam1", 6, 40, "free", "v1"),
    ("cam1", 6, 50, "", "v1"),
    ("cam1", 13, 10, "blowhole", "v1"),
    ("cam1", 13, 50, "free", "v1"),
    ("cam1", 22, 10, "crack", "v1"),
    ("cam1", 22, 20, "crack", "v1"),
    ("cam2", 6, 10, "free", "v1"),
    ("cam2", 6, 20, "crack", "v1"),
    ("cam2", 6, 10, "free", "v2"),  # a shadow model on the same frames
    ("cam2", 6, 20, "free", "v2"),
    *(("cam2", 14, minute, "free", "v1") for minute in (5, 15, 25, 35)),
]
CUTOFF = DAY + timedelta(hours=13, minutes=30)  # prunes half of cam1's 13:00 hour


def at(hour: int, minute: int = 0) -> datetime:
    return DAY + timedelta(hours=hour, minutes=minute)


def frame(camera: str, hour: int, minute: int, label: str, version: str) -> ResultMessage:
    return ResultMessage(
        camera_id=camera,
        seq=hour * 60 + minute,
        pts=0.0,
        status="ok" if label else "stale",
        model_name="m",
        model_version=version,
        label=label,
        score=0.9,
        topk=((label, 0.9),) if label else (),
        is_defect=label not in ("", "free"),
        capture_ts=int(at(hour, minute).timestamp() * 1e9),
        ingest_ts=0,
        dequeue_ts=0,
        infer_start_ts=0,
        infer_end_ts=0,
        worker_id="w",
    )


@pytest.fixture()
def engine(database_url: str) -> Engine:
    engine = storage.open_database(database_url)
    storage.write_batch(engine, [frame(*row) for row in FRAMES], sink_ts=0)
    yield engine
    engine.dispose()


def prune(engine: Engine) -> None:
    removed = retention.prune(engine, datetime.now(timezone.utc) - CUTOFF, batch=4).detections
    assert removed == 13  # the stale frame too


WHOLE_DAY = Window(DAY, DAY + timedelta(days=1))


def hours(report: reporting.Report) -> list[tuple[str, int, int, int]]:
    return [(r.camera_id, r.hour.hour, r.frames, r.defects) for r in report.camera_hours]


def assert_known_counts(report: reporting.Report) -> None:
    assert hours(report) == [
        ("cam1", 5, 3, 1),
        ("cam1", 6, 4, 3),
        ("cam2", 6, 4, 1),
        ("cam1", 13, 2, 1),
        ("cam2", 14, 4, 0),
        ("cam1", 22, 2, 2),
    ]
    shifts = [
        (s.camera_id, s.shift_start, s.shift, s.frames, s.defects) for s in report.camera_shifts
    ]
    assert shifts == [
        ("cam1", at(-2), "22-06", 3, 1),
        ("cam1", at(6), "06-14", 6, 4),
        ("cam2", at(6), "06-14", 4, 1),
        ("cam2", at(14), "14-22", 4, 0),
        ("cam1", at(22), "22-06", 2, 2),
    ]
    rates = [(c.label, c.frames, c.defects, round(c.rate, 4)) for c in report.class_rates]
    assert rates == [("free", 11, 0, 0.5789), ("crack", 7, 7, 0.3684), ("blowhole", 1, 1, 0.0526)]
    top = [(r.camera_id, r.hour.hour, r.defects) for r in report.top_hours]
    assert top == [("cam1", 6, 3), ("cam1", 22, 2), ("cam1", 5, 1), ("cam2", 6, 1), ("cam1", 13, 1)]
    versions = [(m.model_version, m.frames, m.defects, m.per_class) for m in report.model_versions]
    assert versions == [
        ("v1", 17, 8, (("free", 9), ("crack", 7), ("blowhole", 1))),
        ("v2", 2, 0, (("free", 2),)),
    ]
    assert (report.frames, report.defects) == (19, 8)


def test_reports_are_exact_and_survive_pruning(engine: Engine) -> None:
    before = reporting.build_report(engine, WHOLE_DAY)
    assert_known_counts(before)
    assert reporting.camera_shifts(engine, WHOLE_DAY) == before.camera_shifts
    assert reporting.class_rates(engine, WHOLE_DAY) == before.class_rates
    assert reporting.top_hours(engine, WHOLE_DAY) == before.top_hours
    assert reporting.model_versions(engine, WHOLE_DAY) == before.model_versions
    prune(engine)
    assert count_detections(engine) == 7  # from 13:50 on
    after = reporting.build_report(engine, WHOLE_DAY)
    assert_known_counts(after)
    assert after == before


def test_window_edges_and_camera(engine: Engine) -> None:
    prune(engine)
    # Whole hours: 06:30 counts from 06:00, 13:20 up to 14:00.
    edges = reporting.build_report(engine, Window(at(6, 30), at(13, 20)))
    assert hours(edges) == [("cam1", 6, 4, 3), ("cam2", 6, 4, 1), ("cam1", 13, 2, 1)]
    only = reporting.build_report(engine, Window(DAY, at(24), camera="cam2"))
    assert (only.frames, only.defects) == (8, 1)
    assert {r.camera_id for r in only.camera_hours} == {"cam2"}
    empty = reporting.build_report(engine, Window(at(-48), at(-24)))
    assert empty.frames == 0 and empty.camera_hours == [] and empty.model_versions == []


def test_views_agree_with_the_reports(engine: Engine) -> None:
    prune(engine)
    report = reporting.build_report(engine, WHOLE_DAY)
    with engine.connect() as connection:
        shifts = connection.execute(
            text(
                "SELECT camera_id, shift, frames, defects FROM report_camera_shift "
                "ORDER BY shift_start, camera_id"
            )
        ).all()
        per_hour = connection.execute(
            text("SELECT shift_start, shift FROM report_camera_hour ORDER BY hour, camera_id")
        ).all()
        top = connection.execute(
            text(
                "SELECT camera_id, defects, defect_rank FROM report_top_hours ORDER BY defect_rank"
            )
        ).first()
        shadow = connection.execute(
            text(
                "SELECT frames, version_frames, version_defect_rate FROM report_model_versions "
                "WHERE model_version = 'v2'"
            )
        ).one()
        classes = connection.execute(
            text("SELECT label, SUM(frames) FROM report_class_hour GROUP BY label ORDER BY label")
        ).all()
    assert [tuple(row) for row in shifts] == [
        (s.camera_id, s.shift, s.frames, s.defects) for s in report.camera_shifts
    ]
    assert [name for _, name in per_hour] == [r.shift for r in report.camera_hours]
    assert tuple(top) == ("cam1", 3, 1)
    assert tuple(shadow) == (2, 2, 0.0)
    assert [tuple(row) for row in classes] == [("blowhole", 1), ("crack", 7), ("free", 11)]


def test_shift_boundaries() -> None:
    for hour, start, name in [
        (5, -2, "22-06"),
        (6, 6, "06-14"),
        (13, 6, "06-14"),
        (14, 14, "14-22"),
        (21, 14, "14-22"),
        (22, 22, "22-06"),
        (23, 22, "22-06"),
    ]:
        assert reporting.shift_of(at(hour)) == (at(start), name)


def test_time_parsing() -> None:
    now = datetime(2026, 11, 2, 12, 0, tzinfo=timezone.utc)
    assert reporting.parse_time("24h", now) == datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
    assert reporting.parse_time("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert reporting.parse_time("2026-11-01T06:30", now).hour == 6
    with pytest.raises(ValueError, match="24h"):
        reporting.parse_time("yesterday", now)


def test_migration_round_trip(database_url: str) -> None:
    engine = storage.open_database(database_url)
    with engine.begin() as connection:
        command.downgrade(migrate._config(connection), "0002")
    assert not [v for v in inspect(engine).get_view_names() if v.startswith("report_")]
    migrate.upgrade(engine)
    assert "report_rows" in inspect(engine).get_view_names()
    assert migrate.current_revision(engine) == migrate.head_revision()
    engine.dispose()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_cli_csv(engine: Engine, database_url: str, tmp_path: Path) -> None:
    prune(engine)
    out = tmp_path / "csv"
    run = linewatch(
        "report",
        "--since",
        DAY.strftime("%Y-%m-%d"),
        "--until",
        (DAY + timedelta(days=1)).strftime("%Y-%m-%d"),
        "--format",
        "csv",
        "--out",
        str(out),
        "--database-url",
        database_url,
    )
    assert run.returncode == 0, run.stderr
    assert "19 frames, 8 defects" in run.stdout
    summary = read_csv(out / "summary.csv")[0]
    assert (summary["frames"], summary["defects"], summary["defect rate"]) == ("19", "8", "0.4211")
    shifts = [
        (r["camera"], r["shift"], r["frames"], r["defects"])
        for r in read_csv(out / "camera_shifts.csv")
    ]
    assert shifts == [
        ("cam1", "22-06", "3", "1"),
        ("cam1", "06-14", "6", "4"),
        ("cam2", "06-14", "4", "1"),
        ("cam2", "14-22", "4", "0"),
        ("cam1", "22-06", "2", "2"),
    ]
    versions = read_csv(out / "model_versions.csv")
    assert versions[1] == {
        "model version": "v2",
        "frames": "2",
        "defects": "0",
        "defect rate": "0.0000",
        "frames per label": "free=2",
    }
    assert len(read_csv(out / "camera_hours.csv")) == 6


@pytest.fixture()
def html_report(sqlite_url: str, tmp_path: Path) -> Path:
    engine = storage.open_database(sqlite_url)
    storage.write_batch(engine, [frame(*row) for row in FRAMES], sink_ts=0)
    engine.dispose()
    out = tmp_path / "report.html"
    run = linewatch(
        "report",
        "--since",
        DAY.isoformat()[:16],
        "--until",
        at(24).isoformat()[:16],
        "--out",
        str(out),
        "--database-url",
        sqlite_url,
    )
    assert run.returncode == 0, run.stderr
    return out


def test_cli_html(html_report: Path) -> None:
    page = html_report.read_text()
    assert page.count('src="data:image/png;base64,') == 3
    assert page.count("<table>") == 7
    assert "Defects per camera per shift" in page and "<td>v2</td>" in page
    assert (
        "<td>cam1</td><td>"
        + at(6).strftime("%Y-%m-%d %H:%M")
        + "</td><td>06-14</td><td>4</td><td>3</td>"
        in page
    )
    assert "http" not in page.replace("http-equiv", ""), "the page must not load anything"


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)"
)
def test_html_renders_in_chromium(html_report: Path, tmp_path: Path) -> None:
    image = screenshot(html_report, tmp_path / "shot.png", height=2000)
    non_white = (image.min(axis=2) < 230).mean()
    blue, red = image[..., 0].astype(int), image[..., 2].astype(int)
    assert 0.02 < non_white < 0.6, non_white
    assert image.std() > 20
    assert ((blue - red) > 60).sum() > 500, "the plots (blue lines and bars) did not render"


def test_one_hour_window_draws_every_frame_plot(sqlite_url: str, tmp_path: Path) -> None:
    engine = storage.open_database(sqlite_url)
    storage.write_batch(engine, [frame(*row) for row in FRAMES], sink_ts=0)
    engine.dispose()
    out = tmp_path / "hour.html"
    window = ("--since", at(6).isoformat()[:16], "--until", at(7).isoformat()[:16])
    run = linewatch("report", *window, "--out", str(out), "--database-url", sqlite_url)
    assert run.returncode == 0, run.stderr
    page = out.read_text()
    assert "No parts in window" in page
    images = plot_images(page)
    assert len(images) == 3  # defects per hour, class shares, model versions
    for image in images:
        assert image is not None and coloured(image) > 40, coloured(image)
    require_chromium()
    rendered = each_plot_in_chromium(page, tmp_path)
    assert len(rendered) == 3 and min(rendered) > 40, f"a frame plot did not render: {rendered}"


def test_cli_empty_window(html_report: Path, sqlite_url: str, tmp_path: Path) -> None:
    out = tmp_path / "empty.html"
    args = ("--until", "2000-01-02", "--database-url", sqlite_url)
    run = linewatch("report", "--since", "2000-01-01", "--out", str(out), *args)
    assert run.returncode == 0 and "no detections in window" in run.stdout
    assert "No detections in window" in out.read_text() and "base64" not in out.read_text()
    folder = tmp_path / "empty-csv"
    run = linewatch(
        "report", "--since", "2000-01-01", "--format", "csv", "--out", str(folder), *args
    )
    assert run.returncode == 0
    assert read_csv(folder / "summary.csv")[0]["note"] == "no detections in window"
    assert read_csv(folder / "camera_hours.csv") == []


def test_cli_errors(sqlite_url: str, tmp_path: Path) -> None:
    out = ("--out", str(tmp_path / "r.html"))
    bad = linewatch("report", "--since", "last week", "--database-url", sqlite_url, *out)
    assert_clean_error(bad, "--since", "last week")
    late = linewatch("report", "--since", "1h", "--until", "2h", "--database-url", sqlite_url, *out)
    assert_clean_error(late, "not before")
    down = f"postgresql+psycopg://u:secret@127.0.0.1:{free_port()}/db"
    refused = linewatch("report", "--since", "1h", "--database-url", down, *out)
    assert_clean_error(refused, "cannot reach database", "u:***@")
    assert "secret" not in refused.stderr
    missing = linewatch(
        "report", "--since", "1h", "--database-url", "sqlite:////nonexistent/x.db", *out
    )
    assert_clean_error(missing, "no database file")
    engine = storage.open_database(sqlite_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0002'"))
    engine.dispose()
    old = linewatch("report", "--since", "1h", "--database-url", sqlite_url, *out)
    assert_clean_error(old, "schema revision 0002", "linewatch db upgrade")
