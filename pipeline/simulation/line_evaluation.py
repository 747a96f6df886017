"""Scoring a line run against the simulator's ground truth.

Frame level: each stored detection is matched to its video frame by pts.
Part level: a defective part is caught when an alert opens while it is in
view; an alert that opens while a good part is in view is a false alarm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from linewatch.pipeline.simulation.simulator import TruthRow
from linewatch.pipeline.simulation.synthetic import NORMAL_LABEL


@dataclass(frozen=True)
class FrameResult:
    seq: int
    pts: float
    label: str
    is_defect: bool


@dataclass(frozen=True)
class LineScore:
    frames_in_truth: int
    frames_scored: int
    frame_accuracy: float
    defect_frame_recall: float
    false_alarm_frame_rate: float
    defective_parts: int
    parts_caught: int
    alerts: int
    alerts_on_defective_parts: int

    @property
    def event_recall(self) -> float:
        return self.parts_caught / self.defective_parts if self.defective_parts else 1.0

    @property
    def event_precision(self) -> float:
        return self.alerts_on_defective_parts / self.alerts if self.alerts else 1.0


def frame_index(pts: float, fps: float) -> int:
    return int(round(pts * fps))


def truth_fps(truth: list[TruthRow]) -> float:
    if len(truth) < 2 or truth[1].pts <= truth[0].pts:
        raise ValueError("the truth needs at least two frames with increasing pts")
    return 1.0 / (truth[1].pts - truth[0].pts)


def score_line(
    truth: list[TruthRow], results: list[FrameResult], alert_open_seqs: list[int]
) -> LineScore:
    fps = truth_fps(truth)
    by_frame = {row.frame: row for row in truth}
    matched = [(by_frame[i], r) for r in results if (i := frame_index(r.pts, fps)) in by_frame]
    actual = np.array([row.label != NORMAL_LABEL for row, _ in matched], bool)
    flagged = np.array([r.is_defect for _, r in matched], bool)
    correct = sum(row.label == r.label for row, r in matched)
    parts = _part_frames(truth)
    seq_frame = {r.seq: frame_index(r.pts, fps) for r in results}
    opened_in = [_part_at(parts, seq_frame.get(seq, -1)) for seq in alert_open_seqs]
    defective = {p for p, (_, _, label) in parts.items() if label != NORMAL_LABEL}
    return LineScore(
        frames_in_truth=len(truth),
        frames_scored=len(matched),
        frame_accuracy=correct / len(matched) if matched else 0.0,
        defect_frame_recall=_rate(flagged & actual, actual),
        false_alarm_frame_rate=_rate(flagged & ~actual, ~actual),
        defective_parts=len(defective),
        parts_caught=len(defective & set(opened_in)),
        alerts=len(alert_open_seqs),
        alerts_on_defective_parts=sum(1 for part in opened_in if part in defective),
    )


def _rate(hits: np.ndarray, population: np.ndarray) -> float:
    return float(hits.sum() / population.sum()) if population.sum() else 0.0


def _part_frames(truth: list[TruthRow]) -> dict[int, tuple[int, int, str]]:
    parts: dict[int, tuple[int, int, str]] = {}
    for row in truth:
        first, _, _ = parts.get(row.part_id, (row.frame, row.frame, row.label))
        parts[row.part_id] = (first, row.frame, row.label)
    return parts


def _part_at(parts: dict[int, tuple[int, int, str]], frame: int) -> int | None:
    return next((p for p, (first, last, _) in parts.items() if first <= frame <= last), None)
