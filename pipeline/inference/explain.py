"""Where a classifier sees the defect: an occlusion heat map of a part's evidence view.

Grad-CAM needs gradients of the dynamic network at a feature map. The line has only the
exported inference graph (Paddle Inference runs forward passes; the shipped model's
trunk is a frozen ImageNet network read at several stages), so the heat map is
occlusion sensitivity instead (Zeiler & Fergus, 2014): each window of a grid over the
view is covered with the view's mean colour in turn, and how much more normal the view
looks then (the rise of log P(normal classes)) is that window's heat. Forward passes
only, through the same preprocessing and predictor as the line: grid² + 1 images in
one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.inference.loading import Model
from linewatch.pipeline.inference.prediction import normal_mass

GRID = 7  # windows per side: 49 + 1 images, one batch
WINDOW = 2.0  # window side in grid cells (overlapping windows give a smoother map)
OVERLAY_ALPHA = 0.45  # colour map share of the overlay
MIN_PROBABILITY = float(np.finfo(np.float32).tiny)  # P(normal) of a sure defect can be 0


class NotAClassifier(ValueError):
    """The model is a detector: its boxes are its evidence, there is no class to occlude."""


@dataclass(frozen=True)
class Heat:
    """Occlusion heat of one view: `grid` [GRID, GRID] rises of log P(normal) when each
    window is covered (window centres, row-major); `score` the view's defect probability."""

    grid: np.ndarray
    score: float

    def peak(self) -> tuple[float, float]:
        """The hottest window's centre as fractions (x, y) of the view's width and height."""
        row, col = np.unravel_index(int(np.argmax(self.grid)), self.grid.shape)
        size = self.grid.shape[0]
        return (col + 0.5) / size, (row + 0.5) / size


def occluded_copies(image: np.ndarray, grid: int = GRID) -> list[np.ndarray]:
    """`grid`² copies of the RGB image, each with one window covered by its mean colour."""
    height, width = image.shape[:2]
    fill = image.reshape(-1, image.shape[-1]).mean(axis=0).astype(image.dtype)
    copies = []
    for row in range(grid):
        for col in range(grid):
            x1, x2 = _window(col, grid, width)
            y1, y2 = _window(row, grid, height)
            copy = image.copy()
            copy[y1:y2, x1:x2] = fill
            copies.append(copy)
    return copies


def _window(index: int, grid: int, side: int) -> tuple[int, int]:
    centre = (index + 0.5) * side / grid
    half = WINDOW * side / grid / 2
    return max(0, int(round(centre - half))), min(side, int(round(centre + half)))


def occlusion_heat(model: Model, image: np.ndarray, grid: int = GRID) -> Heat:
    """The occlusion heat of an RGB uint8 view under a classifier."""
    if not isinstance(model, Classifier):
        raise NotAClassifier(
            "a heat map needs a classifier; a detection model's boxes are its own evidence"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    probs = model.predict([image, *occluded_copies(image, grid)])
    # log P(normal) rather than the defect probability: a confident model's defect
    # probability stays 1.0 when one window of a large defect is covered (P(normal) moves
    # from 1e-32 to 1e-23, say), its logarithm does not
    normal = normal_mass(probs, model.info)
    logs = np.log(np.clip(normal, MIN_PROBABILITY, 1.0))
    gains = np.clip(logs[1:] - logs[0], 0.0, None).reshape(grid, grid)
    return Heat(grid=gains.astype(np.float32), score=float(1.0 - normal[0]))


def overlay(image: np.ndarray, heat: Heat) -> np.ndarray:
    """The RGB view with its heat blended in (blue cold, red hot; scaled to the peak)."""
    height, width = image.shape[:2]
    peak = float(heat.grid.max())
    scaled = heat.grid / peak if peak > 0 else heat.grid
    smooth = cv2.resize(scaled, (width, height), interpolation=cv2.INTER_CUBIC)
    levels = (np.clip(smooth, 0.0, 1.0) * 255).astype(np.uint8)
    colours = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    blended = (1 - OVERLAY_ALPHA) * image.astype(np.float32) + OVERLAY_ALPHA * colours
    return blended.clip(0, 255).astype(np.uint8)


def heat_map_jpeg(model: Model, jpeg: bytes) -> tuple[bytes, Heat]:
    """A stored evidence crop (JPEG) → the JPEG of its heat overlay, and the heat."""
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise ValueError("the evidence crop is not a decodable image")
    image = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    heat = occlusion_heat(model, image)
    shown = cv2.cvtColor(overlay(image, heat), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", shown, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise ValueError("the heat overlay could not be encoded as JPEG")
    return encoded.tobytes(), heat
