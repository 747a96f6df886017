"""The crop of one part view: its box plus a margin, resized to the model's input.

The line (ingest) and training both cut views with `crop_view`, so the model sees at
training time exactly what the line will show it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

DEFAULT_MARGIN = 0.04  # of the box's larger side, each way


@dataclass(frozen=True)
class PixelBox:
    """A box in frame pixels: x1, y1 inclusive, x2, y2 exclusive."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1

    @property
    def area(self) -> int:
        return max(0, self.width) * max(0, self.height)

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2)


def share_inside(box: PixelBox, container: PixelBox) -> float:
    """The share of `box`'s area that lies inside `container` (0 for an empty box)."""
    overlap = PixelBox(
        max(box.x1, container.x1),
        max(box.y1, container.y1),
        min(box.x2, container.x2),
        min(box.y2, container.y2),
    )
    inside = overlap.area if overlap.width > 0 and overlap.height > 0 else 0
    return inside / box.area if box.area else 0.0


def expand(box: PixelBox, *, margin: float, width: int, height: int) -> PixelBox:
    """The box grown by `margin` × its larger side each way, clipped to the frame."""
    pad = round(margin * max(box.width, box.height))
    return PixelBox(
        x1=max(0, box.x1 - pad),
        y1=max(0, box.y1 - pad),
        x2=min(width, box.x2 + pad),
        y2=min(height, box.y2 + pad),
    )


def crop_view(
    frame: np.ndarray,
    box: PixelBox,
    *,
    size: tuple[int, int],
    margin: float = DEFAULT_MARGIN,
    interpolation: int = cv2.INTER_AREA,
) -> np.ndarray:
    """The part's view: `box` plus `margin`, resized to `size` (width, height), HWC uint8."""
    frame_height, frame_width = frame.shape[:2]
    grown = expand(box, margin=margin, width=frame_width, height=frame_height)
    if grown.area == 0:
        raise ValueError(f"box {box} lies outside the {frame_width}×{frame_height} frame")
    crop = frame[grown.y1 : grown.y2, grown.x1 : grown.x2]
    return cv2.resize(crop, size, interpolation=interpolation)


def video_crops(
    path: Path,
    wanted: Mapping[int, Sequence[tuple[Hashable, PixelBox]]],
    *,
    size: tuple[int, int],
    margin: float = DEFAULT_MARGIN,
) -> dict[tuple[Hashable, int], np.ndarray]:
    """The views `crop_view` cuts from a video file (decoded with PyAV, RGB): for each
    frame number (in decoding order) in `wanted`, {(key, frame number): view} of its
    (key, box) pairs."""
    import av

    last = max(wanted, default=-1)
    views: dict[tuple[Hashable, int], np.ndarray] = {}
    with av.open(str(path)) as container:
        for number, frame in enumerate(container.decode(video=0)):
            if number > last:
                break
            if number in wanted:
                image = frame.to_ndarray(format="rgb24")
                for key, box in wanted[number]:
                    views[(key, number)] = crop_view(image, box, size=size, margin=margin)
    return views
