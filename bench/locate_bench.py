"""Locating + tracking: cost per frame on one core (target: <= 3 ms at 960x540), and
how well each setting finds whole parts on validation lines, side by side.

    python bench/locate_bench.py                              # synthetic tiles, 960x540
    python bench/locate_bench.py --images ../shared/datasets/magnetic-tile/images
    python bench/locate_bench.py --size 1920x1080 --frames 300
    python bench/locate_bench.py --accuracy --split-file models/linewatch-tile/split.json

`--accuracy` renders lines of the validation photos (tiles at their own aspect ratio,
0.3..2.6) on four belts — dark (the tiles' greys straddle the belt's), a belt in the
middle of the parts' greys (parts darker and brighter than it, tone 0.5..1.5), a
textured noisy belt, and parts 24 px apart — and scores each setting against the
simulator's truth (`pipeline/simulation/locate_score.py`): the share of parts whose
every view sent has IoU >= 0.9 with the true box, the 5th percentile of the views'
IoU, ghosts, splits (of parts wholly in view) and merges per frame, parts counted.

Frames of a moving line are rendered into memory first (no decoding is timed), then
each method locates and tracks them as ingest does, with OpenCV held to one thread.
Each figure is the best of --repeats passes (the machine is shared and noisy); the
median and p95 per frame come from that best pass. Cropping the chosen views is timed
apart: it is paid per view sent, not per frame.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import cv2
import numpy as np

from linewatch.pipeline.config import BackgroundParts, ContrastParts, TrackedParts
from linewatch.pipeline.simulation.locate_score import score_line
from linewatch.pipeline.simulation.moving_line import (
    MovingLineSpec,
    TileImages,
    folder_items,
    place_parts,
    render,
)
from linewatch.pipeline.training.splits import split_items
from linewatch.pipeline.video.crop import PixelBox, crop_view
from linewatch.pipeline.video.locate import make_locator
from linewatch.pipeline.video.tracking import FrameInfo, make_tracker

OLD_DEFAULTS = {"polarity": "brighter", "min_contrast": 12, "noise_factor": 0, "merge_gap": 0}
METHODS = {
    "contrast (defaults)": ContrastParts(),
    "contrast (old defaults)": ContrastParts(**OLD_DEFAULTS),
    "contrast (old, merge_gap 64)": ContrastParts(**{**OLD_DEFAULTS, "merge_gap": 64}),
    "contrast (otsu)": ContrastParts(threshold="otsu"),
    "contrast (defaults, downscale 4)": ContrastParts(downscale=4),
    "background (MOG2)": BackgroundParts(),
}


def line_frames(width: int, height: int, count: int, images: Path | None) -> list[np.ndarray]:
    spec = MovingLineSpec(
        parts=max(4, count // 12),
        width=width,
        height=height,
        part_size=round(height * 5 / 12),
        frames_to_cross=24,
        min_gap=max(96, width // 10),
    )
    tiles = TileImages(folder_items(images) if images else ())
    parts = place_parts(spec, tiles, np.random.default_rng(0))
    return list(itertools.islice(render(spec, parts, []), count))


def one_pass(settings: TrackedParts, frames: list[np.ndarray]) -> tuple[np.ndarray, int, int]:
    """Per-frame seconds of locate + track, parts ended and views chosen."""
    locator = make_locator(settings)
    ids = itertools.count(1)
    tracker = make_tracker(locator, settings, new_part_id=lambda: next(ids))
    times, parts, views = np.empty(len(frames)), 0, 0
    height, width = frames[0].shape[:2]
    for index, frame in enumerate(frames):
        start = time.perf_counter()
        step = tracker.update(locator.locate(frame), FrameInfo(index / 10, index, width, height))
        times[index] = time.perf_counter() - start
        parts, views = parts + len(step.ended), views + len(step.views)
    return times, parts + len(tracker.finish("stream-ended")), views


def crop_cost(frames: list[np.ndarray], repeats: int) -> float:
    """Seconds per view: crop_view (margin, resize to 224x224), as ingest crops views."""
    height, width = frames[0].shape[:2]
    box = make_locator(METHODS["contrast (defaults)"]).locate(frames[len(frames) // 2])
    target = box[0] if box else PixelBox(width // 4, height // 4, width // 2, height // 2)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for frame in frames:
            crop_view(frame, target, size=(224, 224))
        best = min(best, (time.perf_counter() - start) / len(frames))
    return best


ACCURACY_LINES = {
    "dark belt": {},
    "mid-grey belt": {"belt_level": 90.0, "tone": (0.5, 1.5)},
    "textured belt": {"belt_grain": 14.0, "noise": 5.0},
    "parts 24 px apart": {"min_gap": 24},
}


def accuracy(width: int, height: int, items: list[tuple[str, str]], parts: int, seed: int) -> None:
    """Score every contrast setting on each validation line; one table row per pair."""
    print(
        f"{'line':18} {'settings':30} {'whole':>6} {'iou p05':>8} {'ghosts':>6} "
        f"{'splits':>6} {'merges':>6} {'counted':>8}"
    )
    for offset, (line, changes) in enumerate(ACCURACY_LINES.items()):
        spec = MovingLineSpec(
            parts=parts,
            width=width,
            height=height,
            part_size=round(height * 5 / 12),
            frames_to_cross=24,
            aspect=(0.3, 2.6),
            seed=seed + offset,
            **changes,
        )
        placed = place_parts(spec, TileImages(items, spec.aspect), np.random.default_rng(spec.seed))
        rows: list[tuple] = []
        frames = list(render(spec, placed, rows))
        for name, settings in METHODS.items():
            if settings.method != "contrast" or settings.threshold == "otsu":
                continue
            score = score_line(frames, rows, settings).summary()
            print(
                f"{line:18} {name:30} {score['whole_parts']:6.3f} {score['view_iou_p05']:8.3f} "
                f"{score['ghosts']:6d} {score['splits']:6d} {score['merges']:6d} "
                f"{score['counted']:>4}/{score['parts']:<3}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="960x540")
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=Path, help="ImageFolder of photos (default: synthetic)")
    parser.add_argument("--accuracy", action="store_true", help="score whole parts on lines")
    parser.add_argument("--split-file", type=Path, help="--accuracy: photos of a run's val split")
    parser.add_argument("--parts", type=int, default=214, help="--accuracy: parts per line")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    cv2.setNumThreads(1)
    if args.accuracy:
        if args.split_file:
            items = split_items(args.split_file, "val", args.images)
        else:
            items = folder_items(args.images) if args.images else []
        accuracy(width, height, items, args.parts, args.seed)
        return
    frames = line_frames(width, height, args.frames, args.images)
    print(f"{len(frames)} frames {width}x{height}, OpenCV on 1 thread, best of {args.repeats}")
    print(f"{'method':30} {'mean ms':>8} {'p50 ms':>8} {'p95 ms':>8} {'parts':>6} {'views':>6}")
    for name, settings in METHODS.items():
        runs = [one_pass(settings, frames) for _ in range(args.repeats)]
        times, parts, views = min(runs, key=lambda run: run[0].sum())
        ms = times * 1e3
        print(
            f"{name:30} {ms.mean():8.2f} {np.median(ms):8.2f} {np.percentile(ms, 95):8.2f} "
            f"{parts:6d} {views:6d}"
        )
    print(f"crop_view to 224x224, per view sent: {crop_cost(frames, args.repeats) * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
