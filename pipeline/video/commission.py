"""Commissioning a camera's locator without ground truth: what a correct locator shows.

On a belt, a correct locator gives each part one box whose size stays the same while the
part crosses the view, no slivers beside the parts, no pairs of boxes side by side that
are pieces of one part, a whole view of every part, and no box that holds only part of
what another clean candidate boxes as one part (a part cut the same way in every frame
shows no other breach). `check_locator` counts the breaches of each over sampled frames;
`commission` tries the settings that matter (polarity, contrast, closing, joining of
pieces, smallest area), ranks them by those counts and keeps the configured settings
unless another is better by more than one part's worth; `contact_sheet` draws the boxes
of two settings on the same frames.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from linewatch.pipeline.config import MethodParts, TrackedParts
from linewatch.pipeline.video.crop import PixelBox, share_inside
from linewatch.pipeline.video.locate import beside, make_locator
from linewatch.pipeline.video.tracking import FrameInfo, make_tracker

log = logging.getLogger(__name__)

SLIVER_SHARE = 0.25  # a box under this share of the median part's area is a sliver
SIZE_TOLERANCE = 0.1  # a part's whole-view box may vary by this share of its size (or 8 px)
PIECE_REACH = 0.5  # boxes side by side closer than this × their size across may be pieces
CUT_SHARE = 0.85  # a box under this share of a box another candidate draws around it is cut
PENALTY_SLACK = 0.05  # candidates this close to the lowest penalty are references for cuts


@dataclass
class LocatorCheck:
    """Breaches of what a correct locator shows, over `frames` sampled frames."""

    settings: TrackedParts
    frames: int = 0
    parts: int = 0
    slivers: int = 0  # boxes far smaller than the median part
    pieces: int = 0  # (frame, pair) of boxes side by side that look like pieces of one part
    unstable: int = 0  # parts whose whole-view box size changed along the track
    never_whole: int = 0  # parts never seen wholly inside the view (the ROI)
    cut: int = 0  # boxes that hold only part of what a clean candidate boxes (set by ranking)
    boxes: list[list[PixelBox]] = field(default_factory=list, repr=False)

    @property
    def busy(self) -> int:
        """Frames in which it located something."""
        return sum(bool(frame) for frame in self.boxes)

    def penalty(self, busiest: int) -> float:
        """Lower is better: unstable or never-whole parts per part, slivers and pieces per
        frame with parts, and the share of frames where another candidate (`busiest`
        frames with parts) saw parts and this one saw none (missed parts)."""
        if not self.parts:
            return float("inf")
        per_part = (self.unstable + self.never_whole) / self.parts
        per_frame = (self.slivers + self.pieces) / max(1, self.busy)
        return per_part + per_frame + 2 * (busiest - self.busy) / max(1, busiest)

    def summary(self) -> str:
        return (
            f"{self.parts} parts, {self.unstable} with unstable boxes, {self.never_whole} "
            f"never whole, {self.slivers} slivers, {self.pieces} piece pairs, {self.cut} cut "
            f"boxes in {self.frames} frames"
        )


def check_locator(frames: Sequence[np.ndarray], settings: TrackedParts) -> LocatorCheck:
    """Locate and track `frames` with `settings`; count the breaches."""
    locator = make_locator(settings)
    ids = itertools.count(1)
    tracker = make_tracker(locator, settings, new_part_id=lambda: next(ids))
    check = LocatorCheck(settings)
    sizes: dict[int, list[tuple[int, int]]] = {}
    for index, frame in enumerate(frames):
        height, width = frame.shape[:2]
        boxes = locator.locate(frame)
        check.boxes.append(boxes)
        step = tracker.update(boxes, FrameInfo(index / 10, index, width, height))
        for pick in step.views:
            sizes.setdefault(pick.part.part_id, []).append((pick.box.width, pick.box.height))
        for record in step.ended:
            check.parts += 1
            check.never_whole += record.part_id not in sizes
    for record in tracker.finish("sample-ended"):
        check.parts += 1
        check.never_whole += record.part_id not in sizes
    check.frames = len(frames)
    check.unstable = sum(not _steady(track) for track in sizes.values())
    check.slivers, check.pieces = frame_breaches(check.boxes)
    return check


def _steady(sizes: list[tuple[int, int]]) -> bool:
    widths, heights = zip(*sizes, strict=True)
    return all(
        max(values) - min(values) <= max(8, SIZE_TOLERANCE * max(values))
        for values in (widths, heights)
    )


def frame_breaches(frames: Sequence[Sequence[PixelBox]]) -> tuple[int, int]:
    """(slivers, piece pairs) over the located boxes of `frames`."""
    areas = [box.area for boxes in frames for box in boxes]
    if not areas:
        return 0, 0
    typical = float(np.median(areas))
    slivers = sum(box.area < SLIVER_SHARE * typical for boxes in frames for box in boxes)
    pieces = sum(
        beside(a, b, _piece_reach) for boxes in frames for a, b in itertools.combinations(boxes, 2)
    )
    return slivers, pieces


class SplitWatch:
    """Watches a camera's first `seconds` of located boxes and warns once when they look
    like split parts: slivers or pieces side by side in more than `share` of the frames
    that show parts."""

    def __init__(self, camera_id: str, *, seconds: float = 60.0, share: float = 0.1) -> None:
        self.camera_id = camera_id
        self.seconds = seconds
        self.share = share
        self.frames: list[list[PixelBox]] = []
        self.start: float | None = None
        self.done = False

    def see(self, boxes: list[PixelBox], pts: float) -> None:
        if self.done:
            return
        self.start = pts if self.start is None else self.start
        if boxes:
            self.frames.append(boxes)
        if pts - self.start >= self.seconds:
            self.done = True
            self.warning()

    def warning(self) -> str | None:
        """The warning (logged) when the boxes seen look split; None when they look right."""
        slivers, pieces = frame_breaches(self.frames)
        busy = len(self.frames) or 1
        self.frames = []
        if slivers + pieces <= self.share * busy:
            return None
        message = (
            f"camera {self.camera_id}: parts may be split in two - {slivers} slivers and "
            f"{pieces} pairs of boxes side by side in the first {self.seconds:g} s; check the "
            f"boxes with `linewatch commission --camera {self.camera_id}` (it prints settings "
            "that fit this belt)"
        )
        log.warning(message)
        return message


def _piece_reach(size: int, other: int) -> float:
    return PIECE_REACH * min(size, other)


THRESHOLDS = [
    {"polarity": polarity, "min_contrast": contrast, "threshold": "belt"}
    for polarity in ("either", "brighter", "darker")
    for contrast in (3.0, 4.0, 6.0, 8.0, 12.0, 20.0)
]
SHAPES = [
    {"morph_kernel": kernel, "merge_gap": gap}
    for kernel in (5, 9)
    for gap in (None, 0, 16, 32, 64, 96)
]


def commission(
    frames: Sequence[np.ndarray],
    base: TrackedParts,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[LocatorCheck, LocatorCheck]:
    """(the check of `base`, the best check found). Two rounds: how the mask is cut
    (polarity, contrast), then how it is shaped (closing, joining of pieces) on the best
    cut; then the smallest area. The lowest penalty wins; on a tie, `base` (and then the
    earlier candidate) does. `progress(done, total)` is called after each check."""
    total = 1 + (len(THRESHOLDS) + len(SHAPES) if base.method == "contrast" else 0)
    done = 0

    def checked(settings: TrackedParts) -> LocatorCheck:
        nonlocal done
        check = check_locator(frames, settings)
        done += 1
        if progress is not None:
            progress(done, total)
        return check

    first = best = checked(base)
    if base.method == "contrast":
        for changes in (THRESHOLDS, SHAPES):
            checks = [best] + [checked(best.settings.model_copy(update=c)) for c in changes]
            best = _best(checks)
    # _clearly_better leaves each one's cut boxes counted against the other
    return first, _clearly_better(first, _with_area_limit(frames, best))


def _scores(checks: Sequence[LocatorCheck]) -> list[float]:
    """Each check's penalty plus the share of its boxes that are cut.

    A locator that cuts every part the same way (a band of the part at the belt's grey
    below its threshold) is steady and draws no slivers: only another candidate that
    boxes the whole part shows it. The candidates within PENALTY_SLACK of the lowest
    penalty are the references a box is compared with."""
    busiest = max(check.busy for check in checks)
    penalties = [check.penalty(busiest) for check in checks]
    floor = min(penalties)
    references = [c for c, p in zip(checks, penalties, strict=True) if p <= floor + PENALTY_SLACK]
    for check in checks:
        check.cut = count_cut(check, references)
    return [
        penalty + check.cut / max(1, sum(map(len, check.boxes)))
        for check, penalty in zip(checks, penalties, strict=True)
    ]


def _best(checks: Sequence[LocatorCheck]) -> LocatorCheck:
    """The lowest score; the earlier check wins a tie."""
    scores = [round(score, 9) for score in _scores(checks)]
    return checks[scores.index(min(scores))]


def _clearly_better(first: LocatorCheck, best: LocatorCheck) -> LocatorCheck:
    """`best` only when it beats the configured settings by more than one part's worth
    (a sample of a minute is small: a single unsteady box is no reason to change)."""
    if best is first:
        return first
    mine, theirs = _scores([first, best])
    return best if mine - theirs > 1 / max(1, first.parts) else first


def count_cut(check: LocatorCheck, references: Sequence[LocatorCheck]) -> int:
    """Boxes of `check` that a reference boxes bigger: the reference box holds the box
    (90 %), is more than 1 / CUT_SHARE times its area and holds no other box of `check`
    (it is not two parts merged)."""
    cut = 0
    for index, boxes in enumerate(check.boxes):
        around = [box for ref in references if ref is not check for box in ref.boxes[index]]
        cut += sum(any(_cuts(box, boxes, other) for other in around) for box in boxes)
    return cut


def _cuts(box: PixelBox, own: Sequence[PixelBox], other: PixelBox) -> bool:
    if box.area >= CUT_SHARE * other.area or share_inside(box, other) < 0.9:
        return False
    return sum(share_inside(mine, other) >= 0.5 for mine in own) == 1


def _with_area_limit(frames: Sequence[np.ndarray], best: LocatorCheck) -> LocatorCheck:
    """The best settings with min_area raised to a third of the median part, when that
    removes slivers without losing parts."""
    areas = [box.area for boxes in best.boxes for box in boxes]
    if not best.slivers or not areas:
        return best
    floor = int(np.median(areas) / 3)
    if floor <= best.settings.min_area:
        return best
    trial = check_locator(frames, best.settings.model_copy(update={"min_area": floor}))
    return _best([best, trial])


def settings_yaml(settings: MethodParts) -> str:
    """The `parts:` block for a camera: the method and every key that differs from its
    method's default, in the config file's own layout."""
    lines = ["parts:", f"  method: {settings.method}"]
    for name, spec in type(settings).model_fields.items():
        value = getattr(settings, name)
        if name != "method" and value != spec.default:
            lines.append(f"  {name}: {_yaml_value(value)}")
    return "\n".join(lines) + "\n"


def _yaml_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, tuple):
        return "[" + ", ".join(_yaml_value(item) for item in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


DEFAULT_COLOUR = (255, 140, 0)  # RGB: the default settings' boxes, orange
CHOSEN_COLOUR = (0, 220, 0)  # RGB: the chosen settings' boxes, green


def contact_sheet(
    frames: Sequence[np.ndarray],
    default: LocatorCheck,
    chosen: LocatorCheck,
    *,
    count: int = 6,
    width: int = 480,
) -> np.ndarray:
    """An RGB sheet: rows of sampled frames with parts, the default settings' boxes on
    the left (orange), the chosen settings' on the right (green)."""
    busy = [i for i, boxes in enumerate(chosen.boxes) if boxes] or list(range(len(frames)))
    picks = [busy[round(k)] for k in np.linspace(0, len(busy) - 1, min(count, len(busy)))]
    header = np.hstack(
        [
            _caption("as configured", DEFAULT_COLOUR, width),
            _caption("best found", CHOSEN_COLOUR, width),
        ]
    )
    rows = [header] + [
        np.hstack(
            [
                _drawn(frames[i], default.boxes[i], DEFAULT_COLOUR, width),
                _drawn(frames[i], chosen.boxes[i], CHOSEN_COLOUR, width),
            ]
        )
        for i in picks
    ]
    return np.vstack(rows)


def _caption(text: str, colour: tuple[int, int, int], width: int) -> np.ndarray:
    strip = np.full((28, width, 3), 24, np.uint8)
    cv2.putText(strip, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 1, cv2.LINE_AA)
    return strip


def _drawn(
    frame: np.ndarray, boxes: Sequence[PixelBox], colour: tuple[int, int, int], width: int
) -> np.ndarray:
    scale = width / frame.shape[1]
    image = cv2.resize(frame, (width, round(frame.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    image = np.ascontiguousarray(image)
    for box in boxes:
        corners = [round(v * scale) for v in (box.x1, box.y1, box.x2 - 1, box.y2 - 1)]
        cv2.rectangle(image, tuple(corners[:2]), tuple(corners[2:]), colour, 2)
    cv2.rectangle(image, (0, 0), (image.shape[1] - 1, image.shape[0] - 1), (90, 90, 90), 1)
    return image
