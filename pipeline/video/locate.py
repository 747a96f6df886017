"""Locating parts: the boxes of the parts in one frame, with cheap OpenCV.

A base class, a registry of methods and one factory (as Frigate's detectors do), so a
new method is one registered class, never another branch of an `isinstance` chain:

- `contrast`: the part differs from a uniform belt, either way by default (dark tiles
  straddle the belt's grey): blur, a threshold at the belt's level ± a contrast that
  follows the belt's noise (or Otsu's, or a fixed grey), opening + closing, outer
  contours, pieces of one part joined, area and aspect limits;
- `background`: MOG2 background subtraction for a textured (static) background;
- `fixed`: configured ROI boxes, for a camera triggered once per part.

Work happens on a grey image downscaled by `parts.downscale`; boxes come back in the
pixels of the frame as ingest decodes it. `none` (whole frames) locates nothing and is
handled by ingest itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from linewatch.pipeline.config import (
    BackgroundParts,
    ContrastParts,
    FixedParts,
    LocatedParts,
    TrackedParts,
)
from linewatch.pipeline.errors import ConfigError
from linewatch.pipeline.video.crop import PixelBox

JOIN_REACH = 1 / 3  # pieces closer than this × their size are one part


class Locator(ABC):
    """Finds part boxes in RGB frames; one instance per camera (it may keep state)."""

    method: ClassVar[str]
    tracked: ClassVar[bool] = True  # parts move along the belt: track them across frames

    def __init__(self, settings: LocatedParts, *, camera_id: str = "") -> None:
        self.settings = settings
        self.camera_id = camera_id

    @abstractmethod
    def locate(self, frame: np.ndarray) -> list[PixelBox]:
        """Boxes of the parts in `frame` (RGB uint8 HxWx3), in its pixels, left to right."""


LOCATORS: dict[str, type[Locator]] = {}


def register(cls: type[Locator]) -> type[Locator]:
    LOCATORS[cls.method] = cls
    return cls


def make_locator(settings: LocatedParts, *, camera_id: str = "") -> Locator:
    """The locator for `settings.method`; ConfigError names the key for an unknown one."""
    try:
        factory = LOCATORS[settings.method]
    except KeyError:
        known = ", ".join(sorted(LOCATORS))
        raise ConfigError(
            f"camera {camera_id}: parts.method {settings.method!r} locates nothing; "
            f"use one of {known} (or none for whole frames)"
        ) from None
    return factory(settings, camera_id=camera_id)


@dataclass(frozen=True)
class Foreground:
    """What differs from the belt: a mask (255 = part) and, when the locator has one, how
    strongly each pixel differs (grey levels) with the level the mask was cut at."""

    mask: np.ndarray
    strength: np.ndarray | None = None
    level: float = 0.0


class MaskLocator(Locator):
    """Locating by a foreground mask: subclasses make the mask, this class cleans it and
    turns its outer contours into filtered boxes."""

    settings: TrackedParts

    def __init__(self, settings: TrackedParts, *, camera_id: str = "") -> None:
        super().__init__(settings, camera_id=camera_id)
        size = settings.morph_kernel
        self.kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (size, size)) if size else None
        # how far the blur can spread an edge outward, px of the downscaled image
        self.spread = settings.blur // 2 + 1

    @abstractmethod
    def foreground(self, grey: np.ndarray) -> Foreground | None:
        """What differs from the belt in the downscaled, blurred grey image; None: no part."""

    def locate(self, frame: np.ndarray) -> list[PixelBox]:
        grey = self._grey(frame)
        found = self.foreground(grey)
        if found is None:
            return []
        mask = found.mask
        if self.kernel is not None:
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self.kernel)
            mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self.kernel)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        height, width = frame.shape[:2]
        rects = [cv2.boundingRect(c) for c in contours]
        rects = [_at_half_contrast(rect, found, self.spread) for rect in rects]
        boxes = [self._box(rect, width, height) for rect in rects]
        if self.settings.merge_gap != 0:
            boxes = join_pieces(boxes, gap=self.settings.merge_gap)
        return sorted((b for b in boxes if self._accepted(b)), key=lambda b: (b.x1, b.y1))

    def _grey(self, frame: np.ndarray) -> np.ndarray:
        scale = self.settings.downscale
        if scale > 1:
            height, width = frame.shape[:2]
            size = (width // scale, height // scale)
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        blur = self.settings.blur
        return cv2.GaussianBlur(grey, (blur, blur), 0) if blur > 1 else grey

    def _box(self, rect: tuple[int, int, int, int], width: int, height: int) -> PixelBox:
        x, y, w, h = (value * self.settings.downscale for value in rect)
        return PixelBox(x1=x, y1=y, x2=min(width, x + w), y2=min(height, y + h))

    def _accepted(self, box: PixelBox) -> bool:
        settings = self.settings
        if box.area < settings.min_area:
            return False
        if settings.max_area is not None and box.area > settings.max_area:
            return False
        return settings.min_aspect <= box.width / box.height <= settings.max_aspect


def _at_half_contrast(
    rect: tuple[int, int, int, int], found: Foreground, spread: int
) -> tuple[int, int, int, int]:
    """The rect with each side moved to where the part's edge crosses half its contrast
    (a blurred edge crosses half its height where the edge truly is: the low threshold
    alone places boxes a few pixels out, and noise makes them jitter). A side stays where
    the mask put it when the mask reaches further out than the blur can spread an edge
    (a part whose grey there is close to the belt's) or when it lies on the image border."""
    x, y, w, h = rect
    if found.strength is None:
        return rect
    patch = found.strength[y : y + h, x : x + w]
    inside = patch[patch > found.level]
    if not inside.size:
        return rect
    rows, cols = np.nonzero(patch > max(found.level, 0.5 * float(np.median(inside))))
    if not rows.size:
        return rect
    height, width = found.strength.shape
    weak = (x, y, x + w, y + h)
    strong = (x + cols.min(), y + rows.min(), x + cols.max() + 1, y + rows.max() + 1)
    border = (0, 0, width, height)
    x1, y1, x2, y2 = (
        side if side == edge or abs(side - firm) > spread else firm
        for side, firm, edge in zip(weak, strong, border, strict=True)
    )
    return int(x1), int(y1), int(x2 - x1), int(y2 - y1)


def join_pieces(boxes: list[PixelBox], *, gap: int | None) -> list[PixelBox]:
    """Boxes that are pieces of one part joined into one: a part whose grey crosses the
    belt's level shows as pieces side by side, each spanning (most of) the part one way.
    Two boxes join when they overlap by at least half of the smaller one on one axis and
    lie closer than `gap` px on the other (None: a third of the larger box's size on the
    axis they overlap on)."""

    def reach(size: int, other: int) -> float:
        return gap if gap is not None else JOIN_REACH * max(size, other)

    joined = list(boxes)
    while True:
        pair = next(
            (
                (i, j)
                for i in range(len(joined))
                for j in range(i + 1, len(joined))
                if beside(joined[i], joined[j], reach)
            ),
            None,
        )
        if pair is None:
            return joined
        i, j = pair
        a, b = joined[i], joined.pop(j)
        joined[i] = PixelBox(min(a.x1, b.x1), min(a.y1, b.y1), max(a.x2, b.x2), max(a.y2, b.y2))


def beside(a: PixelBox, b: PixelBox, reach: Callable[[int, int], float]) -> bool:
    """Side by side: overlapping by half of the smaller box on one axis and closer than
    `reach(size a, size b)` (their sizes on that axis) on the other."""
    pairs = (
        ((a.y1, a.y2, b.y1, b.y2), (a.x1, a.x2, b.x1, b.x2)),  # left and right of each other
        ((a.x1, a.x2, b.x1, b.x2), (a.y1, a.y2, b.y1, b.y2)),  # above and below
    )
    for (a1, a2, b1, b2), (c1, c2, d1, d2) in pairs:
        sizes = (a2 - a1, b2 - b1)
        if min(a2, b2) - max(a1, b1) >= 0.5 * min(sizes) and max(d1 - c2, c1 - d2) < reach(*sizes):
            return True
    return False


@register
class ContrastLocator(MaskLocator):
    """Parts brighter (or darker) than a uniform belt, thresholded at the belt's own grey
    level + `min_contrast` (so brightness drift moves the threshold with it), at Otsu's
    threshold, or at a fixed grey level."""

    method = "contrast"
    settings: ContrastParts

    def foreground(self, grey: np.ndarray) -> Foreground | None:
        settings = self.settings
        if settings.threshold == "otsu":
            return self._otsu(grey)
        if isinstance(settings.threshold, int):
            return Foreground(cv2.threshold(grey, settings.threshold, 255, self._flag)[1])
        belt, noise = belt_level(grey)
        level = max(settings.min_contrast, settings.noise_factor * noise)
        if settings.sides == "either":
            strength = cv2.absdiff(grey, np.full_like(grey, belt))
        else:
            brighter = settings.sides == "brighter"
            percent = settings.belt_percentile if brighter else 100 - settings.belt_percentile
            base = np.full_like(grey, round(_percentile(grey, percent)))
            strength = cv2.subtract(grey, base) if brighter else cv2.subtract(base, grey)
        return Foreground(cv2.threshold(strength, level, 255, 0)[1], strength, level)

    @property
    def _flag(self) -> int:
        return cv2.THRESH_BINARY_INV if self.settings.sides == "darker" else cv2.THRESH_BINARY

    def _otsu(self, grey: np.ndarray) -> Foreground | None:
        level, mask = cv2.threshold(grey, 0, 255, self._flag | cv2.THRESH_OTSU)
        return Foreground(mask) if _contrast(grey, level) >= self.settings.min_contrast else None


def belt_level(grey: np.ndarray) -> tuple[int, float]:
    """The belt's grey level (the most common grey: the belt covers most of the frame)
    and its noise (the standard deviation that the width of that peak implies)."""
    hist = cv2.GaussianBlur(_histogram(grey).reshape(1, -1), (5, 1), 0).ravel()
    mode = int(np.argmax(hist))
    half = hist[mode] / 2
    below = np.flatnonzero(hist[:mode] < half)
    above = np.flatnonzero(hist[mode:] < half)
    low = below[-1] + 1 if below.size else 0
    high = mode + above[0] if above.size else 256
    return mode, (high - low) / 2.355


def _histogram(grey: np.ndarray) -> np.ndarray:
    return cv2.calcHist([grey], [0], None, [256], [0, 256]).ravel()


def _percentile(grey: np.ndarray, percent: float) -> float:
    cumulative = np.cumsum(_histogram(grey))
    return float(np.searchsorted(cumulative, cumulative[-1] * percent / 100))


def _contrast(grey: np.ndarray, level: float) -> float:
    """Mean grey above the threshold minus mean grey at or below it (0 when one is empty)."""
    hist = _histogram(grey)
    values = np.arange(256, dtype=np.float64)
    split = int(level) + 1
    low, high = hist[:split], hist[split:]
    if not low.sum() or not high.sum():
        return 0.0
    high_mean = float(high @ values[split:] / high.sum())
    return high_mean - float(low @ values[:split] / low.sum())


@register
class BackgroundLocator(MaskLocator):
    """Whatever differs from the learned background (MOG2): for textured backgrounds that
    stay put. The first frames teach it the background; parts present then are learned."""

    method = "background"

    def __init__(self, settings: BackgroundParts, *, camera_id: str = "") -> None:
        super().__init__(settings, camera_id=camera_id)
        self.subtractor = cv2.createBackgroundSubtractorMOG2(
            history=settings.history, varThreshold=settings.var_threshold, detectShadows=False
        )
        self.subtractor.setBackgroundRatio(settings.background_ratio)

    def foreground(self, grey: np.ndarray) -> Foreground | None:
        return Foreground(self.subtractor.apply(grey))


@register
class FixedLocator(Locator):
    """The configured ROIs, every frame: a camera triggered once per part, so each frame
    shows new parts (they are not tracked across frames)."""

    method = "fixed"
    tracked = False
    settings: FixedParts

    def __init__(self, settings: FixedParts, *, camera_id: str = "") -> None:
        super().__init__(settings, camera_id=camera_id)
        self.boxes = [PixelBox(*roi) for roi in settings.rois]
        self._checked: tuple[int, int] | None = None

    def locate(self, frame: np.ndarray) -> list[PixelBox]:
        height, width = frame.shape[:2]
        if self._checked != (width, height):
            check_rois(self.settings.rois, width=width, height=height, camera_id=self.camera_id)
            self._checked = (width, height)
        return list(self.boxes)


def check_rois(
    rois: tuple[tuple[int, int, int, int], ...], *, width: int, height: int, camera_id: str
) -> None:
    """ConfigError naming the first ROI that does not lie inside a width x height frame."""
    for index, (x1, y1, x2, y2) in enumerate(rois):
        if x2 > width or y2 > height:
            raise ConfigError(
                f"camera {camera_id}: parts.rois[{index}] {[x1, y1, x2, y2]} lies outside "
                f"the {width}x{height} frame; boxes are in the frame's pixels (after the "
                "camera's roi / resize)"
            )
