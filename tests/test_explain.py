"""Occlusion heat maps of evidence views, with the real Paddle predictor on the exported
synthetic line model: the heat points at the drawn defect."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from linewatch.pipeline.inference.explain import (
    GRID,
    Heat,
    heat_map_jpeg,
    occluded_copies,
    occlusion_heat,
)
from linewatch.pipeline.inference.loading import Model, load_model
from linewatch.pipeline.simulation.synthetic import make_tile


@pytest.fixture(scope="module")
def model(line_model: Path) -> Model:
    loaded = load_model(line_model, threads=1)
    loaded.warm_up()
    return loaded


def broken_tile(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic 'break' tile (RGB) and the mask of its broken corner (dark pixels)."""
    gray = make_tile(np.random.default_rng(seed), "break", size=96)
    return np.dstack([gray] * 3), gray < 60


def points_at(heat: Heat, mask: np.ndarray) -> bool:
    """The hottest window's centre cell touches the mask."""
    x, y = heat.peak()
    side, cell = mask.shape[0], mask.shape[0] // GRID
    col, row = int(x * side), int(y * side)
    return bool(mask[max(0, row - cell) : row + cell, max(0, col - cell) : col + cell].any())


def test_each_copy_covers_one_window_with_the_mean_colour() -> None:
    image = np.zeros((70, 70, 3), np.uint8)
    image[:, 35:] = 200
    copies = occluded_copies(image)
    assert len(copies) == GRID * GRID
    changed = [int((copy != image).any(axis=2).sum()) for copy in copies]
    assert all(0 < n < 70 * 70 / 4 for n in changed)
    assert (copies[0][0, 0] == 100).all() and (copies[-1][-1, -1] == 100).all()


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_the_heat_peaks_on_the_break(model: Model, seed: int) -> None:
    image, broken = broken_tile(seed)
    heat = occlusion_heat(model, image)
    assert heat.score >= 0.5, "the model sees the break"
    assert points_at(heat, broken), heat.grid.round(1)
    # windows two cells or more from the break stay far cooler than the peak
    distance = cv2.distanceTransform((~broken).astype(np.uint8), cv2.DIST_L2, 3)
    cell = broken.shape[0] / GRID
    centres = ((np.arange(GRID) + 0.5) * cell).astype(int)
    far = distance[np.ix_(centres, centres)] > 2 * cell
    assert far.any() and heat.grid[far].max() < 0.25 * heat.grid.max(), heat.grid.round(1)


def test_a_defect_free_tile_has_little_heat(model: Model) -> None:
    image = np.dstack([make_tile(np.random.default_rng(9), "free", size=96)] * 3)
    heat = occlusion_heat(model, image)
    assert heat.score < 0.5 and float(heat.grid.max()) < 1.0  # < e x more normal


def test_the_jpeg_overlay_keeps_the_size_and_refuses_a_broken_crop(model: Model) -> None:
    image, _ = broken_tile(1)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    overlay, heat = heat_map_jpeg(model, data.tobytes())
    shown = cv2.imdecode(np.frombuffer(overlay, np.uint8), cv2.IMREAD_COLOR)
    assert shown.shape == image.shape and heat.grid.shape == (GRID, GRID)
    with pytest.raises(ValueError, match="not a decodable image"):
        heat_map_jpeg(model, b"\xff\xd8\xff truncated")
    with pytest.raises(ValueError, match="RGB image"):
        occlusion_heat(model, image[:, :, 0])
