"""Simulated line videos and the line scorer's arithmetic."""

from pathlib import Path

import pytest

from linewatch.pipeline.simulation.line_evaluation import FrameResult, score_line
from linewatch.pipeline.simulation.simulator import LineSpec, TruthRow, read_truth, simulate
from linewatch.pipeline.video.source import SourceOptions, open_frames


def test_simulated_video_matches_its_truth(tmp_path: Path) -> None:
    spec = LineSpec(parts=6, frames_per_part=4, fps=8, defect_rate=0.5, seed=2)
    (video, truth_csv), (video2, _) = simulate(tmp_path, spec, cameras=2)
    truth = read_truth(truth_csv)
    frames = list(open_frames(str(video), SourceOptions()))
    assert len(frames) == len(truth) == 24
    assert [row.frame for row in truth] == list(range(24))
    for part in range(6):
        labels = {row.label for row in truth if row.part_id == part}
        assert len(labels) == 1, "a part keeps its class while in view"
    assert any(row.label != "free" for row in truth) and any(row.label == "free" for row in truth)
    assert frames[5].pts == pytest.approx(truth[5].pts, abs=1e-3)
    assert video2.exists() and video2.read_bytes() != video.read_bytes()


def test_bad_truth_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "gt.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="truth CSV"):
        read_truth(path)


def test_scoring_arithmetic() -> None:
    # Parts: 0 free (frames 0-3), 1 crack (4-7), 2 free (8-11), 3 hole (12-15); 10 fps.
    labels = ["free", "crack", "free", "hole"]
    truth = [TruthRow(f, f / 10, f // 4, labels[f // 4]) for f in range(16)]
    predicted = {f: (labels[f // 4], labels[f // 4] != "free") for f in range(16)}
    predicted[9] = ("crack", True)  # a false alarm frame on a good part
    predicted[13] = ("free", False)  # a missed defect frame
    results = [FrameResult(f + 1, f / 10, *predicted[f]) for f in range(16) if f != 15]
    score = score_line(truth, results, alert_open_seqs=[7, 10])
    assert score.frames_scored == 15 and score.frames_in_truth == 16
    assert score.frame_accuracy == pytest.approx(13 / 15)
    assert score.defect_frame_recall == pytest.approx(6 / 7)
    assert score.false_alarm_frame_rate == pytest.approx(1 / 8)
    assert (score.defective_parts, score.parts_caught) == (2, 1)
    assert (score.alerts, score.alerts_on_defective_parts) == (2, 1)
    assert score.event_recall == 0.5 and score.event_precision == 0.5
