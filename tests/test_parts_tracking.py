"""Locating and tracking parts on generated moving frames (no video, no Redis)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable

import numpy as np
import pytest

from linewatch.pipeline.config import (
    PART_METHODS,
    BackgroundParts,
    ContrastParts,
    FixedParts,
    TrackedParts,
    load_settings,
)
from linewatch.pipeline.errors import ConfigError
from linewatch.pipeline.simulation.moving_line import (
    Belt,
    MovingLineSpec,
    PlacedPart,
    TileImages,
    part_truths,
    place_parts,
    render,
)
from linewatch.pipeline.simulation.synthetic import make_tile
from linewatch.pipeline.video.crop import PixelBox
from linewatch.pipeline.video.locate import LOCATORS, make_locator
from linewatch.pipeline.video.tracking import FrameInfo, PartRecord, make_tracker

CONTRAST = ContrastParts()
SPEC = MovingLineSpec(width=480, height=270, part_size=120, frames_to_cross=24, fps=10)


def tile(label: str = "free", size: int = 120, seed: int = 0) -> np.ndarray:
    return make_tile(np.random.default_rng(seed), label, size)


def part(index: int, x0: float, y: int = 70, size: int = 120) -> PlacedPart:
    return PlacedPart(index, "free", tile(size=size, seed=index), x0, y)


def frames(spec: MovingLineSpec, parts: list[PlacedPart], count: int) -> list[np.ndarray]:
    belt = Belt(spec, np.random.default_rng(7))
    return [belt.frame(parts, index) for index in range(count)]


class Run:
    """Locate + track a frame sequence; what the tracker reported, frame by frame."""

    def __init__(self, settings: TrackedParts | FixedParts = CONTRAST, fps: float = 10.0) -> None:
        self.locator = make_locator(settings, camera_id="cam")
        ids = itertools.count(1)
        self.tracker = make_tracker(self.locator, settings, new_part_id=lambda: next(ids))
        self.fps = fps
        self.views: list[tuple[int, int, PixelBox]] = []  # (frame, part id, box)
        self.ended: list[tuple[int, PartRecord]] = []
        self.boxes: list[list[PixelBox]] = []

    def feed(self, images: Iterable[np.ndarray], finish: str | None = "stream-ended") -> Run:
        for index, image in enumerate(images):
            boxes = self.locator.locate(image)
            self.boxes.append(boxes)
            info = FrameInfo(index / self.fps, index, image.shape[1], image.shape[0])
            step = self.tracker.update(boxes, info)
            self.views += [(index, view.part.part_id, view.box) for view in step.views]
            for view in step.views:
                view.part.note_sent(len(self.views))
            self.ended += [(index, record) for record in step.ended]
        if finish:
            self.ended += [(-1, record) for record in self.tracker.finish(finish)]
        return self

    def views_per_part(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for frame, part_id, _ in self.views:
            out.setdefault(part_id, []).append(frame)
        return out


def close(a: PixelBox, b: PixelBox, tolerance: int = 3) -> bool:
    pairs = zip((a.x1, a.y1, a.x2, a.y2), (b.x1, b.y1, b.x2, b.y2), strict=True)
    return all(abs(x - y) <= tolerance for x, y in pairs)


def test_contrast_finds_two_parts_in_view_at_their_boxes() -> None:
    parts = [part(0, 40), part(1, 260, y=110)]
    (image,) = frames(SPEC, parts, 1)
    boxes = make_locator(CONTRAST).locate(image)
    truth = [p.box(0, SPEC.speed) for p in parts]
    assert len(boxes) == 2
    assert all(close(found, expected) for found, expected in zip(boxes, truth, strict=True))


def test_an_empty_belt_with_brightness_drift_has_no_parts() -> None:
    images = frames(SPEC, [], 30)
    drifted = [
        np.clip(image * (0.6 + 0.03 * i), 0, 255).astype(np.uint8) for i, image in enumerate(images)
    ]
    run = Run().feed(drifted)
    assert sum(len(boxes) for boxes in run.boxes) == 0
    assert run.ended == [] and run.views == []


def test_a_moving_line_counts_each_part_once_with_stable_ids() -> None:
    spec = MovingLineSpec(width=480, height=270, part_size=110, frames_to_cross=30, parts=9, seed=4)
    placed = place_parts(spec, TileImages(), np.random.default_rng(4))
    rows: list[tuple] = []
    run = Run().feed(render(spec, placed, rows))
    truths = part_truths(placed, rows)
    assert [record.part_id for _, record in run.ended] == list(range(1, 10))
    assert Counter(record.reason for _, record in run.ended) == {"left": 9}
    views = run.views_per_part()
    assert sorted(views) == list(range(1, 10))
    for truth, (part_id, picked) in zip(truths, sorted(views.items()), strict=True):
        assert len(picked) == CONTRAST.max_views, f"part {part_id}"
        assert set(picked) <= set(truth.whole_frames), "views only while wholly in view"
        steps = np.diff(picked)
        assert steps.max() - steps.min() <= 1, f"views evenly spaced: {picked}"
    assert all(record.views_sent == CONTRAST.max_views for _, record in run.ended)


def test_brightness_drift_keeps_the_counts() -> None:
    spec = MovingLineSpec(width=480, height=270, part_size=110, frames_to_cross=30, parts=6, seed=9)
    placed = place_parts(spec, TileImages(), np.random.default_rng(9))
    images = list(render(spec, placed, []))
    gain = np.linspace(0.55, 1.5, len(images))
    drifted = [np.clip(im * g, 0, 255).astype(np.uint8) for im, g in zip(images, gain, strict=True)]
    run = Run().feed(drifted)
    assert [r.part_id for _, r in run.ended] == list(range(1, 7))
    assert all(r.reason == "left" and r.views_sent == 4 for _, r in run.ended)


def test_two_parts_in_view_give_two_views_of_one_frame() -> None:
    parts = [part(0, 190), part(1, 10)]  # both wholly in view from the first frame, 60 px apart
    run = Run(ContrastParts(min_frames=1)).feed(frames(SPEC, parts, 3))
    first = [(frame, part_id) for frame, part_id, _ in run.views if frame == 0]
    assert first == [(0, 1), (0, 2)] or first == [(0, 2), (0, 1)]
    assert {r.reason for _, r in run.ended} == {"stream-ended"}


def test_parts_touching_the_edges_are_tracked_but_never_viewed() -> None:
    edge_parts = [part(0, 100, y=0), part(1, 260, y=270 - 120)]  # top and bottom edges
    run = Run().feed(frames(SPEC, edge_parts, 8))
    assert run.views == []
    assert [(r.part_id, r.views_sent, r.reason) for _, r in run.ended] == [
        (1, 0, "stream-ended"),
        (2, 0, "stream-ended"),
    ]


def test_a_part_entering_and_leaving_is_viewed_only_in_between() -> None:
    entering = part(0, -130)
    run = Run().feed(frames(SPEC, [entering], 40), finish=None)
    ((end_frame, record),) = run.ended
    boxes = [entering.box(f, SPEC.speed) for f in range(40)]
    whole = [f for f, box in enumerate(boxes) if box.x1 >= 4 and box.x2 <= SPEC.width - 4]
    assert record.reason == "left" and record.part_id == 1
    assert all(f in whole for f, _, _ in run.views) and len(run.views) == 4
    assert boxes[end_frame].x1 >= SPEC.width, "ended once out of view"
    assert boxes[end_frame - 1].x1 < SPEC.width + 3 * SPEC.speed, "soon after leaving"


def test_a_part_that_vanishes_mid_view_is_lost() -> None:
    parts = [part(0, 100)]
    images = frames(SPEC, parts, 5) + frames(SPEC, [], 6)
    run = Run().feed(images, finish=None)
    ((frame, record),) = run.ended
    assert record.reason == "lost"
    assert frame == 5 + CONTRAST.max_unmatched, "after max_unmatched missed frames"


def test_a_part_stuck_in_view_ends_once_as_stuck() -> None:
    still = MovingLineSpec(width=480, height=270, frames_to_cross=10**9)
    settings = ContrastParts(max_part_s=2.0, view_every=3)
    run = Run(settings).feed(frames(still, [part(0, 150)], 60))
    assert [(r.part_id, r.reason) for _, r in run.ended] == [(1, "stuck")]
    assert run.ended[0][0] == 21, "first seen at pts 0, stuck once past 2 s (frame 21 at 10 fps)"
    assert [frame for frame, _, _ in run.views] == [1, 4, 7, 10], "every 3rd, at most 4"


def test_a_blob_seen_in_one_frame_is_no_part() -> None:
    images = frames(SPEC, [], 3) + frames(SPEC, [part(0, 150)], 1) + frames(SPEC, [], 4)
    run = Run().feed(images)
    assert run.ended == [] and run.tracker.discarded == 1


def test_background_subtraction_on_a_textured_static_background() -> None:
    rng = np.random.default_rng(1)
    texture = np.clip(rng.normal(110, 35, (270, 480)), 0, 255).astype(np.uint8)
    texture = np.repeat(texture[..., None], 3, axis=2)
    tiles = [tile(seed=s, size=100) for s in range(2)]

    def scene(index: int) -> np.ndarray:
        image = texture.copy()
        for number, offset in enumerate((0, -260)):
            left = offset - 100 + 16 * (index - 40)
            seen = slice(max(0, left), min(480, left + 100))
            if index >= 40 and seen.stop > seen.start:
                patch = tiles[number][:, seen.start - left : seen.stop - left]
                image[80:180, seen] = patch[..., None] // 3
        return image

    settings = BackgroundParts()
    run = Run(settings).feed((scene(i) for i in range(40 + 60)), finish=None)
    assert [(r.part_id, r.reason, r.views_sent) for _, r in run.ended] == [
        (1, "left", 4),
        (2, "left", 4),
    ]


def test_fixed_rois_make_one_part_per_roi_and_frame() -> None:
    settings = FixedParts(rois=((0, 0, 200, 200), (240, 0, 440, 200)))
    run = Run(settings).feed(frames(SPEC, [], 3))
    assert [(f, p) for f, p, _ in run.views] == [(0, 1), (0, 2), (1, 3), (1, 4), (2, 5), (2, 6)]
    assert [(f, r.part_id, r.reason) for f, r in run.ended][:2] == [(0, 1, "left"), (0, 2, "left")]
    assert len(run.ended) == 6, "nothing left open at the end"


def test_a_fixed_roi_outside_the_frame_is_a_config_error() -> None:
    settings = FixedParts(rois=((0, 0, 200, 200), (300, 0, 500, 200)))
    with pytest.raises(ConfigError, match=r"camera cam: parts.rois\[1\].*outside the 480x270"):
        Run(settings).feed(frames(SPEC, [], 1))


def test_every_part_method_but_none_has_a_registered_locator() -> None:
    assert set(LOCATORS) == set(PART_METHODS) - {"none"}


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ({"method": "edges"}, r"'cameras.0.parts': parts.method must be one of none, contrast"),
        (
            {"method": "contrast", "min_area": 500, "max_area": 500},
            r"parts.min_area \(500\) must be below parts.max_area \(500\)",
        ),
        ({"method": "fixed"}, r"parts.method fixed needs parts.rois"),
        (
            {"method": "contrast", "rois": [[0, 0, 5, 5]]},
            r"'cameras.0.parts': .*parts.rois belongs to method fixed, not contrast",
        ),
        (
            {"method": "fixed", "rois": [[10, 0, 5, 5]]},
            r"parts.rois\[0\] \[10, 0, 5, 5\] is not a box",
        ),
        ({"method": "contrast", "blur": 4}, r"parts.blur \(4\) must be odd"),
        ({"method": "contrast", "min_aspect": 3, "max_aspect": 2}, r"parts.min_aspect"),
        ({"method": "contrast", "threshhold": 9}, r"unknown key 'cameras.0.parts.threshhold'"),
    ],
)
def test_parts_settings_errors_name_the_key(parts: dict, message: str) -> None:
    camera = {"id": "c1", "url": "a.mp4", "parts": parts}
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={}, overrides={"cameras": [camera]})


def test_cameras_default_to_whole_frames() -> None:
    settings = load_settings(environ={}, overrides={"cameras": [{"id": "c1", "url": "a.mp4"}]})
    assert settings.cameras[0].parts.method == "none"
