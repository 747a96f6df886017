"""`linewatch db prune`: old detections become hourly summary rows, nothing else changes."""

import time
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.storage import retention
from linewatch.schemas.tables import Detection, HourlySummary
from tests.support.builders import result
from tests.support.services import linewatch

HOUR_NS = 3600 * 10**9


@pytest.fixture()
def url(database_url: str) -> str:
    return database_url


def test_prune_keeps_hourly_summaries(url: str) -> None:
    engine = storage.open_database(url)
    now = time.time_ns()
    old_hour = (now // HOUR_NS - 48) * HOUR_NS  # two days ago, on the hour
    rows = [
        *(result(i, "crack") for i in range(1, 4)),
        *(result(i, "free") for i in range(4, 9)),
    ]
    rows = [r.__class__(**{**r.__dict__, "capture_ts": old_hour + r.seq * 10**9}) for r in rows]
    recent = result(100, "crack").__class__(**{**result(100, "crack").__dict__, "capture_ts": now})
    storage.write_batch(engine, [*rows, recent], sink_ts=now)
    storage.write_batch(engine, rows[:2], sink_ts=now)  # replays change nothing

    assert retention.prune(engine, timedelta(days=1), batch=3).detections == 8
    with Session(engine) as session:
        left = session.scalars(select(Detection.seq)).all()
        summary = {
            (s.label, s.frames, s.defects) for s in session.scalars(select(HourlySummary)).all()
        }
    assert left == [100]
    assert summary == {("crack", 3, 3), ("free", 5, 0)}
    engine.dispose()


def test_age_parsing_and_cli(sqlite_url: str) -> None:
    assert retention.parse_age("30d") == timedelta(days=30)
    assert retention.parse_age("12h") == timedelta(hours=12)
    with pytest.raises(ValueError, match="30d"):
        retention.parse_age("a month")
    env = {"LINEWATCH_DATABASE_URL": sqlite_url}
    bad = linewatch("db", "prune", "--older-than", "soon", env=env)
    assert bad.returncode == 2 and "--older-than" in bad.stderr
    ok = linewatch("db", "prune", "--older-than", "7d", env=env)
    assert ok.returncode == 0 and "pruned 0 detections" in ok.stdout
