"""Procedural magnetic-tile-like surface images, with or without drawn defects.

Used by the demo line, the tests (which must not need the real dataset) and as
extra training data, so a fresh machine without the dataset still sees real
detections. Class names match the magnetic-tile dataset.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

NORMAL_LABEL = "free"
DEFECT_LABELS = ("blowhole", "break", "crack", "fray", "uneven")
LABELS = tuple(sorted((NORMAL_LABEL, *DEFECT_LABELS)))
CLEAR_CUT_DEFECTS = ("blowhole", "break", "crack")  # the demo line shows these


def make_tile(rng: np.random.Generator, label: str, size: int = 224) -> np.ndarray:
    """One grey tile image (uint8, size x size) showing `label`."""
    if label not in LABELS:
        raise ValueError(f"unknown synthetic label {label!r}; expected one of {LABELS}")
    tile = _surface(rng, size)
    if label != NORMAL_LABEL:
        _DRAW[label](rng, tile)
    noise = rng.normal(0.0, rng.uniform(2.0, 6.0), tile.shape)
    return np.clip(tile + noise, 0, 255).astype(np.uint8)


def _surface(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(95, 150)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    gradient = rng.uniform(-18, 18) * xx + rng.uniform(-18, 18) * yy
    grain = cv2.GaussianBlur(rng.normal(0, 8, (size, size)).astype(np.float32), (0, 0), 2.0)
    return (base + gradient + grain).astype(np.float32)


def _draw_blowhole(rng: np.random.Generator, tile: np.ndarray) -> None:
    size = tile.shape[0]
    for _ in range(rng.integers(1, 4)):
        centre = tuple(int(v) for v in rng.integers(size // 6, size - size // 6, 2))
        radius = int(rng.integers(max(3, size // 28), max(5, size // 11)))
        cv2.circle(tile, centre, radius, float(rng.uniform(15, 45)), -1, cv2.LINE_AA)


def _draw_break(rng: np.random.Generator, tile: np.ndarray) -> None:
    size = tile.shape[0]
    corner = rng.integers(0, 4)
    depth = int(rng.integers(size // 5, size // 3))
    pts = np.array([[0, 0], [depth + int(rng.integers(0, depth)), 0], [0, depth]], np.int32)
    if corner in (1, 3):
        pts[:, 0] = size - 1 - pts[:, 0]
    if corner in (2, 3):
        pts[:, 1] = size - 1 - pts[:, 1]
    cv2.fillPoly(tile, [pts], float(rng.uniform(5, 25)), cv2.LINE_AA)


def _draw_crack(rng: np.random.Generator, tile: np.ndarray) -> None:
    size = tile.shape[0]
    point = rng.integers(size // 8, size - size // 8, 2).astype(np.float64)
    angle = rng.uniform(0, np.pi)
    points = [point.copy()]
    for _ in range(int(rng.integers(6, 12))):
        angle += rng.normal(0, 0.35)
        point = np.clip(point + 12 * np.array([np.cos(angle), np.sin(angle)]), 0, size - 1)
        points.append(point.copy())
    line = np.array(points, np.int32).reshape(-1, 1, 2)
    cv2.polylines(tile, [line], False, float(rng.uniform(10, 40)), int(rng.integers(3, 6)))


def _draw_fray(rng: np.random.Generator, tile: np.ndarray) -> None:
    size = tile.shape[0]
    edge_y = np.cumsum(rng.normal(0, 3, size)) + rng.uniform(size * 0.08, size * 0.2)
    edge = np.clip(edge_y, 2, size // 3).astype(np.int32)
    shade = float(rng.uniform(20, 50))
    for x, depth in enumerate(edge):
        tile[:depth, x] = shade
    if rng.random() < 0.5:
        tile[:] = tile[::-1].copy()


def _draw_uneven(rng: np.random.Generator, tile: np.ndarray) -> None:
    size = tile.shape[0]
    blotch = np.zeros_like(tile)
    for _ in range(rng.integers(2, 5)):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        axes = tuple(int(v) for v in rng.integers(size // 8, size // 3, 2))
        cv2.ellipse(blotch, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    blotch = cv2.GaussianBlur(blotch, (0, 0), size / 20)
    tile += blotch * rng.choice([-1.0, 1.0]) * rng.uniform(45, 70)


_DRAW = {
    "blowhole": _draw_blowhole,
    "break": _draw_break,
    "crack": _draw_crack,
    "fray": _draw_fray,
    "uneven": _draw_uneven,
}


def write_image_folder(
    root: Path, per_class: int, size: int = 224, seed: int = 0, labels: tuple[str, ...] = LABELS
) -> Path:
    """Write an ImageFolder tree `root/<label>/<n>.png` of synthetic tiles."""
    rng = np.random.default_rng(seed)
    for label in labels:
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            cv2.imwrite(str(folder / f"syn_{index:05d}.png"), make_tile(rng, label, size))
    return root


def line_labels(frames: int, defect_every: int, run_length: int, seed: int = 0) -> list[str]:
    """Per-frame labels for a demo line: clean frames with runs of one defect class."""
    rng = np.random.default_rng(seed)
    labels = [NORMAL_LABEL] * frames
    for start in range(defect_every // 2, frames, defect_every):
        defect = str(rng.choice(CLEAR_CUT_DEFECTS))
        for index in range(start, min(start + run_length, frames)):
            labels[index] = defect
    return labels
