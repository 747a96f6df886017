"""Locating + tracking cost per frame, on one core (target: <= 3 ms at 960x540).

    python bench/locate_bench.py                              # synthetic tiles, 960x540
    python bench/locate_bench.py --images ../shared/datasets/magnetic-tile/images
    python bench/locate_bench.py --size 1920x1080 --frames 300

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

from linewatch.pipeline.config import PartsSettings
from linewatch.pipeline.simulation.moving_line import (
    MovingLineSpec,
    TileImages,
    folder_items,
    place_parts,
    render,
)
from linewatch.pipeline.video.crop import PixelBox, crop_view
from linewatch.pipeline.video.locate import make_locator
from linewatch.pipeline.video.tracking import FrameInfo, make_tracker

METHODS = {
    "contrast (belt level)": PartsSettings(method="contrast"),
    "contrast (otsu)": PartsSettings(method="contrast", threshold="otsu"),
    "contrast (belt, downscale 4)": PartsSettings(method="contrast", downscale=4),
    "background (MOG2)": PartsSettings(method="background"),
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


def one_pass(settings: PartsSettings, frames: list[np.ndarray]) -> tuple[np.ndarray, int, int]:
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
    box = make_locator(METHODS["contrast (belt level)"]).locate(frames[len(frames) // 2])
    target = box[0] if box else PixelBox(width // 4, height // 4, width // 2, height // 2)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for frame in frames:
            crop_view(frame, target, size=(224, 224))
        best = min(best, (time.perf_counter() - start) / len(frames))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="960x540")
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=Path, help="ImageFolder of photos (default: synthetic)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    cv2.setNumThreads(1)
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
