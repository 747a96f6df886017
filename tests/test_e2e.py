"""End to end: a generated line video through real ingest, inference and sink processes."""

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from linewatch.demo import write_demo_video
from linewatch.line import run_line
from linewatch.pipeline.simulation.synthetic import NORMAL_LABEL
from linewatch.pipeline.storage import database as storage
from linewatch.schemas.tables import Alert, Detection
from tests.helpers import defect_runs, make_settings

FRAMES = 90  # defect runs of 8 frames start at frames 20 and 60


@pytest.mark.slow
def test_every_frame_has_one_row_with_the_right_label_and_alerts_open_and_close(
    database_url, tmp_path: Path, redis_url, line_name, line_model
) -> None:  # type: ignore[no-untyped-def]
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
        alerts={"k": 3, "n": 5, "m": 5, "cooldown_s": 0},
    )

    stats = run_line(settings)

    assert stats.decoded == stats.sent == stats.inferred == stats.written == FRAMES
    assert stats.frames_backlog == stats.results_backlog == stats.dead_letters == 0
    engine = storage.open_database(url)
    with Session(engine) as session:
        rows = session.execute(select(Detection.seq, Detection.label, Detection.is_defect)).all()
        alerts = session.execute(
            select(
                Alert.label, Alert.state, Alert.opened_seq, Alert.closed_seq, Alert.evidence
            ).order_by(Alert.opened_seq)
        ).all()
    engine.dispose()
    assert sorted(seq for seq, _, _ in rows) == list(range(1, FRAMES + 1))
    predicted = {seq: (label, is_defect) for seq, label, is_defect in rows}
    for seq, label in enumerate(truth, start=1):
        assert predicted[seq][1] == (label != NORMAL_LABEL), f"frame {seq} is {label}"
    defective = [seq for seq, label in enumerate(truth, start=1) if label != NORMAL_LABEL]
    right = [seq for seq in defective if predicted[seq][0] == truth[seq - 1]]
    assert len(right) >= 0.8 * len(defective), f"defect classes right for {right} of {defective}"
    runs = defect_runs(truth)
    assert len(alerts) == len(runs) == 2
    for (first, last, label), alert in zip(runs, alerts, strict=True):
        assert alert.label == label and alert.state == "closed"
        assert first + 2 <= alert.opened_seq <= last
        assert alert.closed_seq == last + 5
        assert alert.evidence and alert.evidence[:2] == b"\xff\xd8", "JPEG evidence kept"
