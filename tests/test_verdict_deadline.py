"""The verdict deadline holds for live cameras only: a file is read faster than real time,
so its parts wait for their views instead of going `uninspected` at a wall-clock deadline.
Ingest puts each part's deadline on its part-end entry; the sink keeps to it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from linewatch.line import run_line
from linewatch.pipeline.config import load_settings
from linewatch.pipeline.runtime import StopFlag
from linewatch.pipeline.simulation.moving_line import MovingLineSpec, simulate_moving
from linewatch.pipeline.storage.database import open_database
from linewatch.schemas.messages import PartEndMessage, decode_result_entry
from linewatch.schemas.tables import Part
from linewatch.workers import ingest
from tests.support.builders import make_settings

SPEC = MovingLineSpec(width=320, height=240, part_size=90, frames_to_cross=24, parts=5, seed=2)
PARTS = {"method": "contrast", "min_area": 800}


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ((path, _, _),) = simulate_moving(tmp_path_factory.mktemp("line"), SPEC)
    return path


@pytest.mark.parametrize(("live", "wait_ns"), [(False, 90 * 10**9), (True, 250 * 10**6)])
def test_a_part_end_carries_its_deadline_live_or_file(
    video, redis_client, redis_url, line_name, tmp_path: Path, live: bool, wait_ns: int
) -> None:  # type: ignore[no-untyped-def]
    camera = {"id": "cam", "url": str(video), "parts": PARTS, "live": live}
    verdict = {"deadline_ms": 250, "file_wait_s": 90}
    settings = make_settings(tmp_path, line_name, redis_url, cameras=[camera], verdict=verdict)
    ingest.run(redis_client, settings.cameras[0], settings, StopFlag())
    ends = [decode_result_entry(f) for _, f in redis_client.xrange(settings.results_stream)]
    assert len(ends) == 5 and all(isinstance(end, PartEndMessage) for end in ends)
    assert [end.deadline_ts - end.ended_ts for end in ends] == [wait_ns] * 5


def test_file_parts_wait_for_their_views_while_live_parts_miss_a_1_ms_deadline(
    video, tmp_path: Path
) -> None:
    cameras = [
        {"id": "file", "url": str(video), "parts": PARTS},
        {"id": "live", "url": str(video), "parts": PARTS, "live": True},
    ]
    settings = load_settings(
        environ={},
        overrides={
            "line": "deadline",
            "data_dir": str(tmp_path / "data"),
            "cameras": cameras,
            "verdict": {"deadline_ms": 1},  # no view is inferred within 1 ms
            "inference": {"freshness_s": 600},  # the live views are all inferred, just late
        },
    )
    run_line(settings)
    engine = open_database(settings.resolved_database_url())
    with Session(engine) as session:
        rows = session.execute(select(Part.camera_id, Part.verdict, Part.late)).all()
    engine.dispose()
    file_rows = [(verdict, late) for camera, verdict, late in rows if camera == "file"]
    live_rows = [(verdict, late) for camera, verdict, late in rows if camera == "live"]
    assert len(file_rows) == len(live_rows) == 5
    assert all(verdict != "uninspected" and not late for verdict, late in file_rows)
    assert all(verdict == "uninspected" or late for verdict, late in live_rows)
