"""Tracking parts across sampled frames, and choosing which of their views to send.

Boxes are matched to tracks by overlap with the track's predicted box (last box moved
by its velocity), or by centre distance while a track has no velocity yet. A track
becomes a part after `min_frames` sightings; only then is its `part_id` taken from
`new_part_id` (ingest reserves it in Redis: monotonic per camera, never reused).

A part ends (its record gets a reason) when:
- `left`: its predicted box has left the frame, or it went unseen for more than
  `max_unmatched` frames after touching the frame edge;
- `lost`: it went unseen for more than `max_unmatched` frames away from the edges;
- `stuck`: it was in view longer than `max_part_s` (stream time); its track stays as a
  silent ghost while it remains in view, so a stuck part is reported once, not anew
  every `max_part_s`;
- `stream-ended`: the stream ended or dropped (`finish`); the part keeps the views sent.

Views: only a box at least `edge_margin` px inside every frame edge is a whole view.
Ingest only learns a track's length when it ends, so views are spaced by the belt speed
measured when the part first becomes wholly visible: with E whole frames expected
(distance to the far edge / speed), the views sent are spaced E / max_views whole frames
apart, centred in the E frames, at most `max_views`; when the speed is unknown (a part
that does not move), every `view_every`-th whole view from the first, at most
`max_views`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from linewatch.pipeline.config import LocatedParts, TrackedParts
from linewatch.pipeline.video.crop import PixelBox
from linewatch.pipeline.video.locate import Locator

MIN_SPEED = 0.5  # px per sampled frame below which a part counts as standing still


@dataclass
class PartRecord:
    """What ingest knows about one part; when it ends it becomes a PartEndMessage."""

    part_id: int
    first_pts: float
    first_capture_ts: int
    last_pts: float
    last_capture_ts: int
    views_sent: int = 0
    first_seq: int = 0  # of the first view sent (0: none sent)
    last_seq: int = 0
    reason: str = ""
    ended_ts: int = 0

    def note_sent(self, seq: int) -> int:
        """Record a view sent with `seq`; returns its view index (0, 1, ...)."""
        index = self.views_sent
        self.views_sent += 1
        self.first_seq = self.first_seq or seq
        self.last_seq = seq
        return index


@dataclass(frozen=True)
class ViewPick:
    """A view to send: this part, at this box of the current frame."""

    part: PartRecord
    box: PixelBox


@dataclass
class TrackStep:
    views: list[ViewPick] = field(default_factory=list)
    ended: list[PartRecord] = field(default_factory=list)


@dataclass(frozen=True)
class FrameInfo:
    pts: float
    capture_ts: int
    width: int
    height: int


class PartTracker(Protocol):
    def update(self, boxes: list[PixelBox], frame: FrameInfo) -> TrackStep: ...

    def visible(self) -> list[tuple[PixelBox, int | None]]: ...

    def finish(self, reason: str) -> list[PartRecord]: ...


def make_tracker(
    locator: Locator,
    settings: LocatedParts,
    *,
    new_part_id: Callable[[], int],
    clock: Callable[[], int] = time.time_ns,
) -> PartTracker:
    """A belt tracker for moving parts; one part per box and frame for triggered ROIs."""
    factory = BeltTracker if locator.tracked else TriggeredParts
    return factory(settings, new_part_id=new_part_id, clock=clock)


@dataclass
class Track:
    box: PixelBox
    frame: int  # the sampled frame it was last seen in
    first_pts: float
    first_capture_ts: int
    velocity: tuple[float, float] | None = None
    seen: int = 1
    unmatched: int = 0
    record: PartRecord | None = None  # set once confirmed as a part
    ghost: bool = False  # ended (stuck) but still in view: matched, never reported again
    whole_seen: int = 0
    picked: int = 0
    stride: float = 1.0
    next_pick: float = 0.0

    def predicted(self, frame: int) -> PixelBox:
        if self.velocity is None:
            return self.box
        gap = frame - self.frame
        dx, dy = (round(v * gap) for v in self.velocity)
        box = self.box
        return PixelBox(box.x1 + dx, box.y1 + dy, box.x2 + dx, box.y2 + dy)


class BeltTracker:
    """Tracks of parts moving along the belt (see the module docstring)."""

    def __init__(
        self,
        settings: TrackedParts,
        *,
        new_part_id: Callable[[], int],
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.settings = settings
        self.new_part_id = new_part_id
        self.clock = clock
        self.tracks: list[Track] = []
        self.frame = 0
        self.discarded = 0  # tentative tracks that never became parts

    def visible(self) -> list[tuple[PixelBox, int | None]]:
        """The boxes seen in the last frame, with their part ids (None: not a part yet)."""
        return [
            (track.box, track.record.part_id if track.record else None)
            for track in self.tracks
            if track.frame == self.frame
        ]

    def update(self, boxes: list[PixelBox], frame: FrameInfo) -> TrackStep:
        self.frame += 1
        step = TrackStep()
        pairs = self._match(boxes)
        for track, box in pairs:
            self._follow(track, box, frame)
        matched = {id(track) for track, _ in pairs}
        for track in [t for t in self.tracks if id(t) not in matched]:
            self._missed(track, frame, step)
        taken = {id(box) for _, box in pairs}
        fresh = [
            Track(box, self.frame, frame.pts, frame.capture_ts)
            for box in boxes
            if id(box) not in taken
        ]
        self.tracks += fresh
        for track in [track for track, _ in pairs] + fresh:
            self._advance(track, frame, step)
        return step

    def finish(self, reason: str) -> list[PartRecord]:
        """End every open part with `reason` (the stream ended or dropped)."""
        open_tracks = [t for t in self.tracks if t.record and not t.ghost]
        ended = [self._end(t, reason) for t in open_tracks]
        ended.sort(key=lambda record: record.part_id)
        self.discarded += sum(1 for t in self.tracks if t.record is None)
        self.tracks = []
        return ended

    def _match(self, boxes: list[PixelBox]) -> list[tuple[Track, PixelBox]]:
        """Greedy assignment, best overlap first (centre distance ranks below overlap)."""
        scored = []
        for track in self.tracks:
            predicted = track.predicted(self.frame)
            for box in boxes:
                score = _match_score(predicted, box, self.settings.min_iou)
                if score > 0:
                    scored.append((score, id(track), track, box))
        pairs, used_tracks, used_boxes = [], set(), set()
        for _, _, track, box in sorted(scored, key=lambda row: (-row[0], row[1])):
            if id(track) not in used_tracks and id(box) not in used_boxes:
                pairs.append((track, box))
                used_tracks.add(id(track))
                used_boxes.add(id(box))
        return pairs

    def _follow(self, track: Track, box: PixelBox, frame: FrameInfo) -> None:
        gap = self.frame - track.frame
        moved = _displacement(track.box, box, frame.width, frame.height)
        measured = (moved[0] / gap, moved[1] / gap)
        if track.velocity is None:
            track.velocity = measured
        else:
            (old_x, old_y) = track.velocity
            track.velocity = ((old_x + measured[0]) / 2, (old_y + measured[1]) / 2)
        track.box, track.frame = box, self.frame
        track.seen += 1
        track.unmatched = 0
        if track.record is not None:
            track.record.last_pts, track.record.last_capture_ts = frame.pts, frame.capture_ts

    def _missed(self, track: Track, frame: FrameInfo, step: TrackStep) -> None:
        track.unmatched += 1
        gone = _outside(track.predicted(self.frame), frame.width, frame.height)
        if not gone and track.unmatched <= self.settings.max_unmatched:
            return
        self.tracks.remove(track)
        if track.record is None:
            self.discarded += 1
        elif not track.ghost:
            at_edge = gone or _touches_edge(track.box, frame.width, frame.height)
            step.ended.append(self._end(track, "left" if at_edge else "lost"))

    def _advance(self, track: Track, frame: FrameInfo, step: TrackStep) -> None:
        """Confirm, end as stuck, or pick a view, for a track seen in this frame."""
        settings = self.settings
        if track.record is None and track.seen >= settings.min_frames:
            track.record = PartRecord(
                self.new_part_id(),
                track.first_pts,
                track.first_capture_ts,
                frame.pts,
                frame.capture_ts,
            )
        if track.record is None or track.ghost:
            return
        if frame.pts - track.record.first_pts > settings.max_part_s:
            track.ghost = True
            step.ended.append(self._end(track, "stuck"))
        elif _is_whole(track.box, frame.width, frame.height, settings.edge_margin):
            if self._pick(track, frame):
                step.views.append(ViewPick(track.record, track.box))

    def _pick(self, track: Track, frame: FrameInfo) -> bool:
        settings = self.settings
        if track.whole_seen == 0:
            expected = _expected_whole_frames(track, frame, settings.edge_margin)
            if expected:
                track.stride = max(1.0, expected / settings.max_views)
                track.next_pick = (track.stride - 1) / 2  # centred: no view hugs the edges
            else:
                track.stride = float(settings.view_every)
        index = track.whole_seen
        track.whole_seen += 1
        if track.picked >= settings.max_views or index + 1e-9 < track.next_pick:
            return False
        track.picked += 1
        track.next_pick += track.stride
        return True

    def _end(self, track: Track, reason: str) -> PartRecord:
        record = track.record
        assert record is not None
        record.reason, record.ended_ts = reason, self.clock()
        return record


class TriggeredParts:
    """Fixed ROIs of a camera triggered once per part: every box of every frame is a new
    part with one view, ended (`left`) in the same frame."""

    def __init__(
        self,
        settings: LocatedParts,
        *,
        new_part_id: Callable[[], int],
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.new_part_id = new_part_id
        self.clock = clock
        self.last: list[tuple[PixelBox, int | None]] = []

    def visible(self) -> list[tuple[PixelBox, int | None]]:
        return list(self.last)

    def update(self, boxes: list[PixelBox], frame: FrameInfo) -> TrackStep:
        step = TrackStep()
        self.last = []
        for box in boxes:
            record = PartRecord(
                self.new_part_id(), frame.pts, frame.capture_ts, frame.pts, frame.capture_ts
            )
            step.views.append(ViewPick(record, box))
            record.reason, record.ended_ts = "left", self.clock()
            step.ended.append(record)
            self.last.append((box, record.part_id))
        return step

    def finish(self, reason: str) -> list[PartRecord]:
        return []


def iou(a: PixelBox, b: PixelBox) -> float:
    overlap = PixelBox(max(a.x1, b.x1), max(a.y1, b.y1), min(a.x2, b.x2), min(a.y2, b.y2))
    inter = overlap.area if overlap.width > 0 and overlap.height > 0 else 0
    union = a.area + b.area - inter
    return inter / union if union else 0.0


def _match_score(predicted: PixelBox, box: PixelBox, min_iou: float) -> float:
    """The overlap when at least `min_iou`; else a score below any overlap match when the
    centres lie within half the larger box side; else 0 (no match)."""
    overlap = iou(predicted, box)
    if overlap >= min_iou and overlap > 0:
        return 1.0 + overlap
    (ax, ay), (bx, by) = predicted.centre, box.centre
    limit = 0.5 * max(predicted.width, predicted.height, box.width, box.height)
    distance = math.hypot(ax - bx, ay - by)
    return 1.0 - distance / limit if distance < limit else 0.0


def _displacement(old: PixelBox, new: PixelBox, width: int, height: int) -> tuple[float, float]:
    """How far the part moved: from the box edges that touch no frame border in either
    box (a part entering or leaving is cut by the border), else from the centres."""
    dx = _edge_shift((old.x1, new.x1, 0), (old.x2, new.x2, width))
    dy = _edge_shift((old.y1, new.y1, 0), (old.y2, new.y2, height))
    (ox, oy), (nx, ny) = old.centre, new.centre
    return (nx - ox if dx is None else dx, ny - oy if dy is None else dy)


def _edge_shift(low: tuple[int, int, int], high: tuple[int, int, int]) -> float | None:
    shifts = []
    if low[0] > low[2] and low[1] > low[2]:
        shifts.append(low[1] - low[0])
    if high[0] < high[2] and high[1] < high[2]:
        shifts.append(high[1] - high[0])
    return sum(shifts) / len(shifts) if shifts else None


def _expected_whole_frames(track: Track, frame: FrameInfo, margin: int) -> int | None:
    """Whole views still to come (this one included) at the track's speed; None when the
    part stands still."""
    if track.velocity is None:
        return None
    box, (vx, vy) = track.box, track.velocity
    estimates = []
    for speed, ahead, behind in (
        (vx, frame.width - margin - box.x2, box.x1 - margin),
        (vy, frame.height - margin - box.y2, box.y1 - margin),
    ):
        if abs(speed) >= MIN_SPEED:
            room = ahead if speed > 0 else behind
            estimates.append(int(room / abs(speed)) + 1)
    return min(estimates) if estimates else None


def _is_whole(box: PixelBox, width: int, height: int, margin: int) -> bool:
    return (
        box.x1 >= margin
        and box.y1 >= margin
        and box.x2 <= width - margin
        and box.y2 <= height - margin
    )


def _touches_edge(box: PixelBox, width: int, height: int) -> bool:
    return box.x1 <= 0 or box.y1 <= 0 or box.x2 >= width or box.y2 >= height


def _outside(box: PixelBox, width: int, height: int) -> bool:
    return box.x2 <= 0 or box.y2 <= 0 or box.x1 >= width or box.y1 >= height
