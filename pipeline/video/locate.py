"""Locating parts: the boxes of the parts in one frame, with cheap OpenCV.

A base class, a registry of methods and one factory (as Frigate's detectors do), so a
new method is one registered class, never another branch of an `isinstance` chain:

- `contrast`: the part differs from a uniform belt: blur, Otsu (or fixed) threshold,
  opening + closing, outer contours, area and aspect limits;
- `background`: MOG2 background subtraction for a textured (static) background;
- `fixed`: configured ROI boxes, for a camera triggered once per part.

Work happens on a grey image downscaled by `parts.downscale`; boxes come back in the
pixels of the frame as ingest decodes it. `none` (whole frames) locates nothing and is
handled by ingest itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import cv2
import numpy as np

from linewatch.pipeline.config import PartsSettings
from linewatch.pipeline.errors import ConfigError
from linewatch.pipeline.video.crop import PixelBox


class Locator(ABC):
    """Finds part boxes in RGB frames; one instance per camera (it may keep state)."""

    method: ClassVar[str]
    tracked: ClassVar[bool] = True  # parts move along the belt: track them across frames

    def __init__(self, settings: PartsSettings, *, camera_id: str = "") -> None:
        self.settings = settings
        self.camera_id = camera_id

    @abstractmethod
    def locate(self, frame: np.ndarray) -> list[PixelBox]:
        """Boxes of the parts in `frame` (RGB uint8 HxWx3), in its pixels, left to right."""


LOCATORS: dict[str, type[Locator]] = {}


def register(cls: type[Locator]) -> type[Locator]:
    LOCATORS[cls.method] = cls
    return cls


def make_locator(settings: PartsSettings, *, camera_id: str = "") -> Locator:
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


class MaskLocator(Locator):
    """Locating by a foreground mask: subclasses make the mask, this class cleans it and
    turns its outer contours into filtered boxes."""

    def __init__(self, settings: PartsSettings, *, camera_id: str = "") -> None:
        super().__init__(settings, camera_id=camera_id)
        size = settings.morph_kernel
        self.kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (size, size)) if size else None

    @abstractmethod
    def mask(self, grey: np.ndarray) -> np.ndarray | None:
        """uint8 mask (255 = part) of the downscaled, blurred grey image; None: no part."""

    def locate(self, frame: np.ndarray) -> list[PixelBox]:
        grey = self._grey(frame)
        mask = self.mask(grey)
        if mask is None:
            return []
        if self.kernel is not None:
            mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self.kernel)
            mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self.kernel)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        height, width = frame.shape[:2]
        boxes = [self._box(cv2.boundingRect(c), width, height) for c in contours]
        if self.settings.merge_gap:
            boxes = merge_close(boxes, self.settings.merge_gap)
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


def merge_close(boxes: list[PixelBox], gap: int) -> list[PixelBox]:
    """Boxes with less than `gap` px between them, both ways, merged into one."""
    merged = list(boxes)
    changed = True
    while changed:
        changed = False
        for i, a in enumerate(merged):
            for j in range(i + 1, len(merged)):
                b = merged[j]
                if max(b.x1 - a.x2, a.x1 - b.x2) < gap and max(b.y1 - a.y2, a.y1 - b.y2) < gap:
                    merged[i] = PixelBox(
                        min(a.x1, b.x1), min(a.y1, b.y1), max(a.x2, b.x2), max(a.y2, b.y2)
                    )
                    del merged[j]
                    changed = True
                    break
            if changed:
                break
    return merged


@register
class ContrastLocator(MaskLocator):
    """Parts brighter (or darker) than a uniform belt, thresholded at the belt's own grey
    level + `min_contrast` (so brightness drift moves the threshold with it), at Otsu's
    threshold, or at a fixed grey level."""

    method = "contrast"

    def mask(self, grey: np.ndarray) -> np.ndarray | None:
        settings = self.settings
        brighter = settings.polarity == "brighter"
        flag = cv2.THRESH_BINARY if brighter else cv2.THRESH_BINARY_INV
        if settings.threshold == "otsu":
            level, mask = cv2.threshold(grey, 0, 255, flag | cv2.THRESH_OTSU)
            return mask if _contrast(grey, level) >= settings.min_contrast else None
        if settings.threshold == "belt":
            belt = _percentile(
                grey, settings.belt_percentile if brighter else 100 - settings.belt_percentile
            )
            level = belt + settings.min_contrast if brighter else belt - settings.min_contrast
        else:
            level = float(settings.threshold)
        return cv2.threshold(grey, level, 255, flag)[1]


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

    def __init__(self, settings: PartsSettings, *, camera_id: str = "") -> None:
        super().__init__(settings, camera_id=camera_id)
        self.subtractor = cv2.createBackgroundSubtractorMOG2(
            history=settings.history, varThreshold=settings.var_threshold, detectShadows=False
        )
        self.subtractor.setBackgroundRatio(settings.background_ratio)

    def mask(self, grey: np.ndarray) -> np.ndarray | None:
        return self.subtractor.apply(grey)


@register
class FixedLocator(Locator):
    """The configured ROIs, every frame: a camera triggered once per part, so each frame
    shows new parts (they are not tracked across frames)."""

    method = "fixed"
    tracked = False

    def __init__(self, settings: PartsSettings, *, camera_id: str = "") -> None:
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
