"""End to end: a generated line video through real ingest, inference and sink processes."""

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from linewatch.demo import write_demo_video
from linewatch.line import run_line
from linewatch.pipeline.simulation.line_evaluation import StoredPart, read_part_truth, score_parts
from linewatch.pipeline.simulation.moving_line import MovingLineSpec, simulate_moving
from linewatch.pipeline.simulation.synthetic import (
    CLEAR_CUT_DEFECTS,
    NORMAL_LABEL,
    write_image_folder,
)
from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.storage.parts import camera_parts
from linewatch.schemas.tables import Alert, Detection, Part
from tests.support.builders import NO_UNKNOWN, defect_runs, make_settings

FRAMES = 90  # defect runs of 8 frames start at frames 20 and 60


@pytest.mark.slow
def test_every_frame_has_one_row_with_the_right_label_and_alerts_open_and_close(
    database_url, tmp_path: Path, redis_url, line_name, line_model
) -> None:  # type: ignore[no-untyped-def]
    """Frame mode: every frame is a one-view part judged like any part; each defect run
    raises one line alarm, closed by the clean frames after it."""
    video = tmp_path / "line.mp4"
    truth = write_demo_video(video, FRAMES, fps=10)
    url = database_url
    settings = make_settings(
        tmp_path,
        line_name,
        redis_url,
        database_url=url,
        cameras=[{"id": "cam-e2e", "url": str(video)}],
        inference={"max_batch": 8, "max_wait_ms": 10, "model_dir": str(line_model)},
        verdict={
            "line_alarm": {"n": 5, "open_rate": 0.6, "close_rate": 0.0, "run": 3},
            "novelty_threshold": NO_UNKNOWN,
        },
    )

    stats = run_line(settings)

    assert stats.decoded == stats.sent == stats.inferred == stats.written == FRAMES
    assert stats.frames_backlog == stats.results_backlog == stats.dead_letters == 0
    engine = storage.open_database(url)
    with Session(engine) as session:
        rows = session.execute(select(Detection.seq, Detection.label, Detection.is_defect)).all()
        alarms = session.execute(
            select(Alert.state, Alert.opened_seq, Alert.closed_seq)
            .where(Alert.kind == "line")
            .order_by(Alert.opened_seq)
        ).all()
        part_alerts = session.execute(
            select(Alert.opened_seq, Alert.label, Alert.evidence).where(Alert.kind == "part")
        ).all()
        parts = dict(session.execute(select(Part.first_seq, Part.verdict)).all())
    engine.dispose()
    assert sorted(seq for seq, _, _ in rows) == list(range(1, FRAMES + 1))
    assert sorted(parts) == list(range(1, FRAMES + 1)), "one part per frame"
    predicted = {seq: (label, is_defect) for seq, label, is_defect in rows}
    for seq, label in enumerate(truth, start=1):
        assert predicted[seq][1] == (label != NORMAL_LABEL), f"frame {seq} is {label}"
        assert (parts[seq] == "defect") == (label != NORMAL_LABEL), f"part {seq}"
    defective = [seq for seq, label in enumerate(truth, start=1) if label != NORMAL_LABEL]
    right = [seq for seq in defective if predicted[seq][0] == truth[seq - 1]]
    assert len(right) >= 0.8 * len(defective), f"defect classes right for {right} of {defective}"
    runs = defect_runs(truth)
    assert len(alarms) == len(runs) == 2
    for (first, last, _), alarm in zip(runs, alarms, strict=True):
        assert alarm.state == "closed"
        assert first + 2 <= alarm.opened_seq <= last
        assert alarm.closed_seq == last + 5
    assert sorted(seq for seq, _, _ in part_alerts) == defective, "one alert per NG frame"
    for seq, label, evidence in part_alerts:
        assert label == predicted[seq][0]
        assert evidence and evidence[:2] == b"\xff\xd8", "JPEG evidence kept"


# The test model was trained on whole tiles without belt: boxes located at full size,
# unblurred, above the grey of the tile's blended edge, so its views show no belt.
TIGHT_BOXES = {"method": "contrast", "merge_gap": 64, "downscale": 1, "blur": 0, "threshold": 90}


@pytest.mark.slow
def test_a_moving_line_gives_every_part_one_right_verdict(
    database_url, tmp_path: Path, redis_url, line_name, line_model
) -> None:  # type: ignore[no-untyped-def]
    """Parts mode through real ingest, inference and sink processes: clear-cut synthetic
    tiles (the classes the test model knows) ride the belt; every part is counted once
    and judged right."""
    labels = (NORMAL_LABEL, *CLEAR_CUT_DEFECTS)
    tiles = write_image_folder(tmp_path / "tiles", per_class=6, size=224, seed=11, labels=labels)
    items = [(str(path), path.parent.name) for path in sorted(tiles.rglob("*.png"))]
    spec = MovingLineSpec(parts=16, defect_rate=0.4, seed=4)
    ((video, parts_csv, _),) = simulate_moving(tmp_path / "line", spec, items=items)
    settings = make_settings(
        tmp_path,
        line_name,
        redis_url,
        database_url=database_url,
        cameras=[{"id": "cam1", "url": str(video), "parts": TIGHT_BOXES}],
        inference={"max_batch": 8, "model_dir": str(line_model), "passed_crops_every": 4},
        verdict={"novelty_threshold": NO_UNKNOWN},
    )

    stats = run_line(settings)

    assert stats.inferred == stats.written and stats.dead_letters == 0
    engine = storage.open_database(database_url)
    stored = [StoredPart(*row) for row in camera_parts(engine, "cam1")]
    with Session(engine) as session:
        crops = session.execute(select(Part.part_id, Part.verdict, Part.evidence)).all()
    passed = {part: evidence is not None for part, verdict, evidence in crops if verdict == "ok"}
    assert passed == {part_id: part_id % 4 == 0 for part_id in passed}, "one passed part in 4"
    assert any(passed.values()) and all(e for _, v, e in crops if v == "defect"), crops
    engine.dispose()
    truth = read_part_truth(parts_csv, "cam1")
    score = score_parts(truth, stored, spec.fps)
    assert 0 < score.defective_parts < len(truth) == spec.parts
    assert (score.parts_counted, score.parts_matched) == (len(truth), len(truth)), score
    assert (score.ghost_parts, score.reported_twice, score.uninspected) == (0, 0, 0), score
    assert score.defective_rejected == score.defective_parts, score
    assert score.good_rejected == 0, score
    assert score.class_correct == score.class_scored == len(truth), score
