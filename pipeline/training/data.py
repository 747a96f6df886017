"""Training data: ImageFolder scan, stratified split, cached images, augmentation.

Images are grey surface photos; they are read once, resized and cached in
memory as uint8, and replicated to three channels only when batched, which
matches the RGB frames the inference worker sees.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.simulation.synthetic import LABELS as SYNTHETIC_LABELS
from linewatch.pipeline.simulation.synthetic import make_tile

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
MEAN_RGB = (0.485, 0.456, 0.406)
STD_RGB = (0.229, 0.224, 0.225)
MEAN = np.array(MEAN_RGB, np.float32)
STD = np.array(STD_RGB, np.float32)
SYNTHETIC_PREFIX = "synthetic:"


@dataclass(frozen=True)
class Split:
    labels: tuple[str, ...]
    train: tuple[tuple[str, int], ...]  # (item id, class index)
    val: tuple[tuple[str, int], ...]
    # Training photos held out of training: they set the operating point (never val).
    calibration: tuple[tuple[str, int], ...] = ()

    def save(self, path: Path) -> None:
        data = {"labels": self.labels, "train": self.train, "val": self.val}
        if self.calibration:
            data["calibration"] = self.calibration
        path.write_text(json.dumps(data, indent=1))

    def without_synthetic(self) -> Split:
        real = lambda rows: tuple(r for r in rows if not r[0].startswith(SYNTHETIC_PREFIX))  # noqa: E731
        return Split(self.labels, real(self.train), real(self.val), real(self.calibration))

    def with_calibration(self, fraction: float, seed: int) -> Split:
        """A stratified `fraction` of the training items moved to `calibration`."""
        if fraction <= 0:
            return self
        kept = stratified_split(self.labels, list(self.train), fraction, seed)
        return Split(self.labels, kept.train, self.val, self.calibration + kept.val)

    @classmethod
    def load(cls, path: Path) -> Split:
        data = json.loads(path.read_text())
        as_items = lambda rows: tuple((str(item), int(index)) for item, index in rows)  # noqa: E731
        return cls(
            tuple(data["labels"]),
            as_items(data["train"]),
            as_items(data["val"]),
            as_items(data.get("calibration", [])),
        )


def scan_image_folder(root: Path) -> tuple[tuple[str, ...], list[tuple[str, int]]]:
    """Class names (sorted folder names) and (path, class index) for every image."""
    if not root.is_dir():
        raise LinewatchError(
            f"data folder {root} not found; pass an ImageFolder root "
            "(one sub-folder of images per class)"
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise LinewatchError(f"{root} needs at least two class folders, found {classes}")
    items = []
    for index, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise LinewatchError(f"class folder {root / name} has no images ({IMAGE_SUFFIXES})")
        items += [(str(path), index) for path in files]
    return tuple(classes), items


def synthetic_items(labels: tuple[str, ...], per_class: int) -> list[tuple[str, int]]:
    """Ids of generated tiles for the classes the synthetic generator knows."""
    return [
        (f"{SYNTHETIC_PREFIX}{label}:{i}", labels.index(label))
        for label in SYNTHETIC_LABELS
        if label in labels
        for i in range(per_class)
    ]


def stratified_split(
    labels: tuple[str, ...], items: list[tuple[str, int]], val_fraction: float, seed: int
) -> Split:
    rng = np.random.default_rng(seed)
    train, val = [], []
    for index in range(len(labels)):
        members = [item for item in items if item[1] == index]
        rng.shuffle(members)
        n_val = max(1, round(len(members) * val_fraction)) if len(members) > 1 else 0
        val += members[:n_val]
        train += members[n_val:]
    return Split(labels, tuple(train), tuple(val))


def load_image(item: str, size: int, seed: int = 0) -> np.ndarray:
    """Grey uint8 size x size: a file resized, or a synthetic tile made from its id."""
    if item.startswith(SYNTHETIC_PREFIX):
        label, index = item[len(SYNTHETIC_PREFIX) :].rsplit(":", 1)
        rng = np.random.default_rng([seed, SYNTHETIC_LABELS.index(label), int(index)])
        return make_tile(rng, label, size)
    image = cv2.imread(item, cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise LinewatchError(f"cannot read image {item}; remove it or replace it")
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def load_images(items: tuple[tuple[str, int], ...], size: int) -> np.ndarray:
    return np.stack([load_image(item, size) for item, _ in items])


def photo_cache_size(size: int) -> int:
    """The square size photos are loaded at for views of `size` (ImageNet's 256/224
    resize-then-crop ratio), so a view can move and scale within the photo."""
    return int(round(size * 256 / 224))


def mask_path(item: str) -> Path:
    """`<root>/images/<class>/<name>.jpg` -> `<root>/masks/<class>/<name>.png`."""
    path = Path(item)
    return path.parents[2] / "masks" / path.parent.name / f"{path.stem}.png"


def load_mask(item: str, is_normal: bool, size: int) -> np.ndarray | None:
    """Defect pixels (uint8, 255 = defect) at size x size; None when unknown."""
    if is_normal:
        return np.zeros((size, size), np.uint8)
    if item.startswith(SYNTHETIC_PREFIX) or not mask_path(item).exists():
        return None
    mask = cv2.imread(str(mask_path(item)), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        return None
    # Dilating first keeps a few-pixel defect visible after the area resize.
    grown = cv2.dilate(mask, np.ones((5, 5), np.uint8))
    return cv2.resize(grown, (size, size), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class Masks:
    masks: np.ndarray  # [N, H, W] uint8, 255 = defect; zeros where unknown
    known: np.ndarray  # [N] bool


def load_masks(items: tuple[tuple[str, int], ...], normal: int | None, size: int) -> Masks:
    masks = [load_mask(item, index == normal, size) for item, index in items]
    blank = np.zeros((size, size), np.uint8)
    return Masks(
        np.stack([blank if m is None else m for m in masks]),
        np.array([m is not None for m in masks]),
    )


def cell_targets(
    masks: np.ndarray, labels: np.ndarray, known: np.ndarray, normal: int, cells: int
) -> np.ndarray:
    """Per-cell class targets [N, cells, cells]: the image's class where the cell holds defect
    pixels, `normal` elsewhere, -1 for images without a known mask."""
    n, size, _ = masks.shape
    step = size // cells
    pooled = masks[:, : step * cells, : step * cells].reshape(n, cells, step, cells, step)
    defect = pooled.max(axis=(2, 4)) > 64
    targets = np.where(defect, labels[:, None, None], normal)
    targets[~known] = -1
    return targets.astype(np.int64)


def augment(
    image: np.ndarray,
    size: int,
    rng: np.random.Generator,
    mask: np.ndarray | None = None,
    quarter_turns: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Random resized crop, flips, 90° turns (optional: real tiles have vertical streaks),
    brightness/contrast and noise; the mask follows the geometric steps."""
    if mask is None:
        mask = np.zeros_like(image)
    height, width = image.shape
    # Mild crops only: a small defect near the border must not be cropped out of its label.
    area = rng.uniform(0.85, 1.0) * height * width
    ratio = np.exp(rng.uniform(np.log(7 / 8), np.log(8 / 7)))
    crop_w = int(min(width, round(np.sqrt(area * ratio))))
    crop_h = int(min(height, round(np.sqrt(area / ratio))))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    both = np.stack([image, mask], axis=2)[top : top + crop_h, left : left + crop_w]
    both = cv2.resize(both, (size, size))
    if rng.random() < 0.5:
        both = both[:, ::-1]
    if rng.random() < 0.5:
        both = both[::-1]
    if quarter_turns:
        both = np.rot90(both, int(rng.integers(0, 4)))
    out = both[..., 0].astype(np.float32) * rng.uniform(0.85, 1.15) + rng.uniform(-15, 15)
    if rng.random() < 0.5:
        out += rng.normal(0, rng.uniform(1, 8), out.shape)
    return np.clip(out, 0, 255).astype(np.uint8), np.ascontiguousarray(both[..., 1])


def to_batch(grey: np.ndarray) -> np.ndarray:
    """[N, H, W] uint8 grey -> [N, 3, H, W] float32, normalised like inference."""
    scaled = grey.astype(np.float32)[:, None] / 255.0
    return ((scaled - MEAN[None, :, None, None]) / STD[None, :, None, None]).astype(np.float32)


def balanced_batches(
    targets: np.ndarray, batch_size: int, steps: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Index batches sampled with weight count**-0.5 per class (square-root balancing)."""
    counts = np.bincount(targets)
    weights = counts[targets].astype(np.float64) ** -0.5
    weights /= weights.sum()
    for _ in range(steps):
        yield rng.choice(len(targets), size=batch_size, p=weights)
