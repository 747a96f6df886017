"""How well a locator finds whole parts on a simulated line, against the simulator's truth.

Locating is scored apart from judging: per frame, each located box is assigned to the
truth box it lies mostly inside (a box inside none is a `ghost`); a truth box with two
or more boxes assigned is `split`; a box that covers most of two truth boxes is a
`merge`. Through the tracker, as ingest runs it, each view sent is scored by its IoU
with the true box of the part it shows, and the parts counted are compared with the
parts that crossed the view.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from linewatch.pipeline.config import LocatedParts
from linewatch.pipeline.video.crop import PixelBox, share_inside
from linewatch.pipeline.video.locate import Locator, make_locator
from linewatch.pipeline.video.tracking import FrameInfo, iou, make_tracker

INSIDE = 0.5  # share of a box's area that must lie in a truth box to belong to it
WHOLE_IOU = 0.9  # a view with this IoU or more shows the whole part


@dataclass
class LocateScore:
    frames: int = 0
    truth_parts: int = 0  # parts wholly in view at least once
    parts_counted: int = 0  # parts the tracker ended with at least one view sent
    ghosts: int = 0  # located boxes inside no part (slivers of the belt, noise)
    splits: int = 0  # (frame, part) pairs with two or more boxes on a part wholly in view
    merges: int = 0  # boxes covering most of two parts
    view_ious: list[float] = field(default_factory=list)  # every view sent
    part_ious: dict[int, float] = field(default_factory=dict)  # worst view per part

    @property
    def whole_parts(self) -> float:
        """Share of the parts whose every view sent had IoU >= 0.9 (0 when none sent)."""
        if not self.truth_parts:
            return 1.0
        good = sum(value >= WHOLE_IOU for value in self.part_ious.values())
        return good / self.truth_parts

    def summary(self) -> dict[str, float | int]:
        views = np.asarray(self.view_ious or [0.0])
        return {
            "frames": self.frames,
            "parts": self.truth_parts,
            "counted": self.parts_counted,
            "whole_parts": round(self.whole_parts, 4),
            "view_iou_p05": round(float(np.percentile(views, 5)), 3),
            "ghosts": self.ghosts,
            "splits": self.splits,
            "merges": self.merges,
        }


def score_frame(
    located: Sequence[PixelBox], truth: Sequence[PixelBox], whole: Sequence[bool] | None = None
) -> tuple[int, int, int]:
    """(ghosts, splits, merges) of one frame's located boxes against its truth boxes;
    splits count only the parts wholly in view (`whole`, default all): a part cut by the
    frame edge is never sent as a view."""
    whole = whole if whole is not None else [True] * len(truth)
    owners: list[int] = []
    merges = 0
    for box in located:
        shares = [share_inside(box, part) for part in truth]
        covers = sum(share_inside(part, box) >= INSIDE for part in truth)
        merges += covers >= 2
        best = int(np.argmax(shares)) if shares else -1
        owners.append(best if shares and shares[best] >= INSIDE else -1)
    ghosts = owners.count(-1)
    splits = sum(owners.count(index) >= 2 for index in range(len(truth)) if whole[index])
    return ghosts, splits, merges


def score_line(
    frames: Iterable[np.ndarray],
    truth_rows: Sequence[tuple],
    settings: LocatedParts,
    *,
    fps: float = 10.0,
    locator: Locator | None = None,
) -> LocateScore:
    """Run `settings`' locator and tracker over `frames`; `truth_rows` are the
    simulator's (frame, part index, visible box, whole) rows, filled while frames render
    (so they are read after each frame is drawn)."""
    locator = locator or make_locator(settings)
    ids = itertools.count(1)
    tracker = make_tracker(locator, settings, new_part_id=lambda: next(ids))
    score = LocateScore()
    part_of_id: dict[int, int] = {}
    seen_whole: set[int] = set()
    row = 0
    for index, frame in enumerate(frames):
        truth: dict[int, PixelBox] = {}
        whole_now: list[bool] = []
        while row < len(truth_rows) and truth_rows[row][0] == index:
            _, part_index, box, whole = truth_rows[row]
            truth[part_index] = box
            whole_now.append(bool(whole))
            if whole:
                seen_whole.add(part_index)
            row += 1
        height, width = frame.shape[:2]
        located = locator.locate(frame)
        ghosts, splits, merges = score_frame(located, list(truth.values()), whole_now)
        score.ghosts, score.splits, score.merges = (
            score.ghosts + ghosts,
            score.splits + splits,
            score.merges + merges,
        )
        step = tracker.update(located, FrameInfo(index / fps, index, width, height))
        for pick in step.views:
            pick.part.note_sent(len(score.view_ious) + 1)
            _score_view(score, pick.part.part_id, pick.box, truth, part_of_id)
        score.parts_counted += sum(record.views_sent > 0 for record in step.ended)
        score.frames = index + 1
    score.parts_counted += sum(r.views_sent > 0 for r in tracker.finish("stream-ended"))
    score.truth_parts = len(seen_whole)
    return score


def _score_view(
    score: LocateScore,
    part_id: int,
    box: PixelBox,
    truth: dict[int, PixelBox],
    part_of_id: dict[int, int],
) -> None:
    """Record a sent view's IoU with the truth part it shows (the first view decides
    which part a track is); a view of no part counts as IoU 0."""
    if part_id not in part_of_id and truth:
        part_of_id[part_id] = max(truth, key=lambda index: iou(box, truth[index]))
    part_index = part_of_id.get(part_id)
    value = iou(box, truth[part_index]) if part_index in truth else 0.0
    score.view_ious.append(value)
    if part_index is not None:
        score.part_ious[part_index] = min(score.part_ious.get(part_index, 1.0), value)
