"""The view the line cuts of a part photographed alone: the photo on the simulated belt
(BELT_LEVEL grey, the tile TILE_FRACTION of the frame), cropped by `crop_view` with its
default margin. Training's validation views and thresholds use it, and so does the
judging of an uploaded photo (pipeline/inference/uploads.py)."""

from __future__ import annotations

import cv2
import numpy as np

from linewatch.pipeline.video.crop import PixelBox, crop_view

BELT_LEVEL = 40  # the simulator's belt grey level
TILE_FRACTION = 224 / 256  # tile size over frame size on the simulated line


def canonical_view(photo: np.ndarray, size: int) -> np.ndarray:
    """The view the line cuts of this grey photo with no jitter, `size` square."""
    frame_size = int(round(size / TILE_FRACTION))
    pad = (frame_size - size) // 2
    frame = np.full((frame_size, frame_size), BELT_LEVEL, np.uint8)
    frame[pad : pad + size, pad : pad + size] = cv2.resize(
        photo, (size, size), interpolation=cv2.INTER_AREA
    )
    return crop_view(frame, PixelBox(pad, pad, pad + size, pad + size), size=(size, size))


def canonical_rgb(photo: np.ndarray, size: int) -> np.ndarray:
    """`canonical_view` as the 3-channel image a classifier takes."""
    return cv2.cvtColor(canonical_view(photo, size), cv2.COLOR_GRAY2RGB)
