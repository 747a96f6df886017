"""Scoring a line run against the simulator's ground truth.

Frame level: each stored detection is matched to its video frame by pts.
Line alarms (frame mode): a defective part is caught when an alarm opens while it is in
view; an alarm that opens while a good part is in view is a false alarm.
Per part (parts mode): each row of the `parts` table is matched to the truth part whose
time in view (pts) it overlaps most; truth parts without a row are missed, rows without
a truth part are ghosts, a second row for one truth part is a part reported twice.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linewatch.pipeline.decide.ng_rule import is_ng, sent_uninspected
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


# ---- per part: the parts table against the simulator's truth per part ----

PART_TRUTH_COLUMNS = ("part", "label", "first_frame", "last_frame")  # camera, is_defect, *_pts
_ALIASES = {
    "part": ("part", "part_index", "part_id", "index"),
    "camera": ("camera", "camera_id"),
    "first_frame": ("first_frame", "first_frame_in_view"),
    "last_frame": ("last_frame", "last_frame_in_view"),
}


@dataclass(frozen=True)
class TruthPart:
    part: int
    label: str
    is_defect: bool
    first_frame: int
    last_frame: int
    camera: str = ""
    first_pts: float | None = None
    last_pts: float | None = None

    def span(self, fps: float | None) -> tuple[float, float]:
        """Seconds of video the part is in view (pts when the CSV has them)."""
        if self.first_pts is not None and self.last_pts is not None:
            return self.first_pts, self.last_pts
        if not fps:
            raise ValueError("the part truth has frames but no pts: give the video's fps")
        return self.first_frame / fps, self.last_frame / fps


@dataclass(frozen=True)
class StoredPart:
    part_id: int
    first_pts: float
    last_pts: float
    verdict: str  # ok | defect | uninspected
    label: str
    late: bool  # sent to the line as uninspected at its deadline

    @property
    def sent_uninspected(self) -> bool:
        return sent_uninspected(self.verdict, self.late)


@dataclass(frozen=True)
class PartScore:
    parts_in_truth: int
    parts_counted: int  # rows in the parts table for the camera
    parts_matched: int  # truth parts with at least one stored part
    defective_parts: int
    defective_rejected: int  # NG: defect, or uninspected when uninspected rejects
    good_parts: int
    good_rejected: int
    class_correct: int  # inspected matched parts whose label is the truth label
    class_scored: int
    ghost_parts: int  # stored parts overlapping no truth part
    reported_twice: int  # extra stored parts for a truth part already matched
    uninspected: int  # stored parts sent to the line as uninspected

    @property
    def defective_recall(self) -> float:
        return self.defective_rejected / self.defective_parts if self.defective_parts else 1.0

    @property
    def false_reject_rate(self) -> float:
        return self.good_rejected / self.good_parts if self.good_parts else 0.0

    @property
    def class_accuracy(self) -> float:
        return self.class_correct / self.class_scored if self.class_scored else 0.0


def read_part_truth(path: Path, camera: str | None = None) -> list[TruthPart]:
    """The simulator's truth per part: a CSV with columns part (or part_index), label,
    first_frame, last_frame and optionally camera, is_defect, first_pts, last_pts. Rows of
    other cameras are left out when a camera column names `camera`."""
    with path.open(newline="") as source:
        reader = csv.DictReader(source)
        columns = _columns(reader.fieldnames or [], path)
        rows = [_truth_part(row, columns) for row in reader]
    if camera and any(row.camera == camera for row in rows):
        rows = [row for row in rows if row.camera == camera]
    return rows


def _columns(fieldnames: Sequence[str], path: Path) -> dict[str, str]:
    names = {name.strip().lower(): name for name in fieldnames}
    found = {}
    for key in (*PART_TRUTH_COLUMNS, "camera", "is_defect", "first_pts", "last_pts"):
        alias = next((a for a in _ALIASES.get(key, (key,)) if a in names), None)
        if alias is not None:
            found[key] = names[alias]
    missing = [key for key in PART_TRUTH_COLUMNS if key not in found]
    if missing:
        raise ValueError(f"{path} is not a part truth CSV: no column {', '.join(missing)}")
    return found


def _truth_part(row: dict[str, str], columns: dict[str, str]) -> TruthPart:
    def value(key: str) -> str | None:
        text = row.get(columns[key], "") if key in columns else ""
        return text.strip() or None

    label = value("label") or NORMAL_LABEL
    defect = value("is_defect")
    first_pts, last_pts = value("first_pts"), value("last_pts")
    return TruthPart(
        part=int(value("part") or 0),
        label=label,
        is_defect=defect.lower() in ("1", "true", "yes") if defect else label != NORMAL_LABEL,
        first_frame=int(value("first_frame") or 0),
        last_frame=int(value("last_frame") or 0),
        camera=value("camera") or "",
        first_pts=float(first_pts) if first_pts else None,
        last_pts=float(last_pts) if last_pts else None,
    )


def match_parts(
    truth: Sequence[TruthPart], stored: Sequence[StoredPart], fps: float | None
) -> dict[int, list[StoredPart]]:
    """Each stored part goes to the truth part its pts span overlaps most (half a frame of
    slack); those overlapping none are under the key -1 (ghosts)."""
    slack = 0.5 / fps if fps else 0.05
    spans = [(part, part.span(fps)) for part in truth]
    matched: dict[int, list[StoredPart]] = {}
    for item in sorted(stored, key=lambda s: s.part_id):
        best, overlap = -1, 0.0
        for part, (first, last) in spans:
            shared = min(last, item.last_pts) - max(first, item.first_pts) + 2 * slack
            if shared > overlap:
                best, overlap = part.part, shared
        matched.setdefault(best, []).append(item)
    return matched


def score_parts(
    truth: Sequence[TruthPart],
    stored: Sequence[StoredPart],
    fps: float | None,
    reject_uninspected: bool = True,
) -> PartScore:
    """Part figures of a camera; a truth part reported twice is judged by its first row."""
    matched = match_parts(truth, stored, fps)
    judged = [(part, matched[part.part][0]) for part in truth if part.part in matched]

    def rejected(item: StoredPart) -> bool:
        return is_ng(item.verdict, item.late, reject_uninspected)

    inspected = [(part, item) for part, item in judged if not item.sent_uninspected]
    return PartScore(
        parts_in_truth=len(truth),
        parts_counted=len(stored),
        parts_matched=len(judged),
        defective_parts=sum(part.is_defect for part in truth),
        defective_rejected=sum(part.is_defect and rejected(item) for part, item in judged),
        good_parts=sum(not part.is_defect for part, _ in judged),
        good_rejected=sum(not part.is_defect and rejected(item) for part, item in judged),
        class_correct=sum(item.label == part.label for part, item in inspected),
        class_scored=len(inspected),
        ghost_parts=len(matched.get(-1, [])),
        reported_twice=sum(len(items) - 1 for key, items in matched.items() if key != -1),
        uninspected=sum(item.sent_uninspected for item in stored),
    )
