"""Training views as the line shows them: a photo on a belt, located, cropped, filmed.

The line simulator puts each tile photo (resized square) on a dark belt; ingest locates
the tile and cuts its view with `crop_view` (box + 4 % margin, resized to the model
input). Training does the same with `crop_view` itself, and adds what a real line does
to a part: tile scale and position on the belt, a locator box that is a few pixels off,
a small rotation, motion or focus blur, sensor noise, brightness drift and JPEG/H.264
blocking. Validation uses the same crop without any of the randomness.

Photo views are what a person uploads to `/v1/classify`: the photo itself, cropped tight
around the tile (a few percent off at most) and resized, with a phone's or scanner's
exposure, noise and JPEG; no belt, no locator.

Images are grey uint8 (H, W); an optional defect mask follows every geometric step.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from linewatch.pipeline.video.belt_view import BELT_LEVEL as BELT_LEVEL
from linewatch.pipeline.video.belt_view import TILE_FRACTION as TILE_FRACTION
from linewatch.pipeline.video.belt_view import canonical_view as canonical_view
from linewatch.pipeline.video.crop import DEFAULT_MARGIN, PixelBox, crop_view


@dataclass(frozen=True)
class LineJitter:
    """How far a training view strays from the canonical line crop."""

    tile_scale: tuple[float, float] = (0.6, 1.15)  # tile size relative to the input size
    box_error: float = 0.03  # locator error per box edge, of the tile size
    rotation_deg: float = 3.0
    belt_level: tuple[int, int] = (20, 70)
    gain: tuple[float, float] = (0.85, 1.15)
    offset: float = 12.0
    noise_sigma: tuple[float, float] = (0.0, 6.0)
    blur_p: float = 0.3
    jpeg_p: float = 0.5
    jpeg_quality: tuple[int, int] = (35, 90)
    flip_p: float = 0.5
    belt_texture: tuple[float, float] = (0.0, 0.0)  # grain sigma (grey levels) of the belt
    shading: float = 0.0  # at most this many grey levels of light falling across the view


# Wider than the default (which the shipped frozen recipe was trained with): parts filmed
# smaller than the input too (a 200 px tile cut to 160 px), textured belts, uneven light.
WIDE_JITTER = LineJitter(tile_scale=(0.6, 1.6), belt_texture=(0.0, 8.0), shading=24.0)
JITTERS = {"default": LineJitter(), "wide": WIDE_JITTER}


def _belt(
    height: int,
    width: int,
    level: float,
    rng: np.random.Generator | None,
    texture: float = 0.0,
) -> np.ndarray:
    belt = np.full((height, width), level, np.float32)
    if rng is not None:
        belt += rng.normal(0, 2.0, belt.shape).astype(np.float32)
    if rng is not None and texture > 0:
        grain = rng.normal(0, texture, belt.shape).astype(np.float32)
        belt += cv2.GaussianBlur(grain, (0, 0), float(rng.uniform(0.8, 2.5)))
    return belt


def _shade(frame: np.ndarray, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A linear light gradient in a random direction, up to `amplitude` grey levels."""
    height, width = frame.shape
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(angle) * xs / width + np.sin(angle) * ys / height).astype(np.float32)
    return frame + rng.uniform(-amplitude, amplitude) * ramp


def place_on_belt(
    photo: np.ndarray,
    tile: int,
    level: float,
    rng: np.random.Generator | None = None,
    rotation_deg: float = 0.0,
    mask: np.ndarray | None = None,
    texture: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, PixelBox]:
    """The photo resized to `tile` x `tile` on a belt frame (rotated by `rotation_deg`),
    its mask on the same frame, and the tile's true box in frame pixels."""
    frame_size = int(round(tile / TILE_FRACTION))
    pad = (frame_size - tile) // 2
    resized = cv2.resize(photo, (tile, tile), interpolation=cv2.INTER_AREA)
    mask_in = np.zeros_like(photo) if mask is None else mask
    resized_mask = cv2.resize(mask_in, (tile, tile), interpolation=cv2.INTER_AREA)
    frame = _belt(frame_size, frame_size, level, rng, texture)
    frame[pad : pad + tile, pad : pad + tile] = resized
    frame_mask = np.zeros((frame_size, frame_size), np.uint8)
    frame_mask[pad : pad + tile, pad : pad + tile] = resized_mask
    box = PixelBox(pad, pad, pad + tile, pad + tile)
    if rotation_deg:
        centre = (frame_size / 2, frame_size / 2)
        matrix = cv2.getRotationMatrix2D(centre, rotation_deg, 1.0)
        inside = np.zeros((frame_size, frame_size), np.uint8)
        inside[pad : pad + tile, pad : pad + tile] = 255
        inside = cv2.warpAffine(inside, matrix, (frame_size, frame_size))
        rotated = cv2.warpAffine(frame, matrix, (frame_size, frame_size), borderValue=level)
        belt = _belt(frame_size, frame_size, level, rng, texture)
        frame = np.where(inside > 127, rotated, belt)
        frame_mask = cv2.warpAffine(frame_mask, matrix, (frame_size, frame_size))
        ys, xs = np.nonzero(inside > 127)
        box = PixelBox(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return frame, frame_mask, box


def _jittered_box(box: PixelBox, error: float, frame: int, rng: np.random.Generator) -> PixelBox:
    spread = error * max(box.width, box.height)
    x1, y1, x2, y2 = (
        int(round(v + rng.uniform(-spread, spread))) for v in (box.x1, box.y1, box.x2, box.y2)
    )
    x1, y1 = max(0, x1), max(0, y1)
    x2, y2 = min(frame, max(x2, x1 + 8)), min(frame, max(y2, y1 + 8))
    return PixelBox(x1, y1, x2, y2)


def _film(view: np.ndarray, jitter: LineJitter, rng: np.random.Generator) -> np.ndarray:
    """Camera and codec effects on a uint8 view."""
    out = view.astype(np.float32)
    if rng.random() < jitter.blur_p:
        if rng.random() < 0.5:
            out = cv2.blur(out, (int(rng.integers(3, 7)), 1))  # motion along the belt
        else:
            out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.3))
    out = out * rng.uniform(*jitter.gain) + rng.uniform(-jitter.offset, jitter.offset)
    sigma = rng.uniform(*jitter.noise_sigma)
    if sigma > 0.5:
        out += rng.normal(0, sigma, out.shape).astype(np.float32)
    grey = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < jitter.jpeg_p:
        quality = int(rng.integers(*jitter.jpeg_quality))
        ok, encoded = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            grey = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)
    return grey


def line_view(
    photo: np.ndarray,
    size: int,
    rng: np.random.Generator,
    mask: np.ndarray | None = None,
    jitter: LineJitter = LineJitter(),  # noqa: B008  (frozen)
) -> tuple[np.ndarray, np.ndarray]:
    """One randomised training view (size x size uint8) and its mask."""
    if rng.random() < jitter.flip_p:
        photo, mask = photo[:, ::-1], None if mask is None else mask[:, ::-1]
    if rng.random() < jitter.flip_p:
        photo, mask = photo[::-1], None if mask is None else mask[::-1]
    photo = np.ascontiguousarray(photo)
    mask = None if mask is None else np.ascontiguousarray(mask)
    tile = max(16, int(round(size * rng.uniform(*jitter.tile_scale))))
    level = float(rng.uniform(*jitter.belt_level))
    angle = float(rng.uniform(-jitter.rotation_deg, jitter.rotation_deg))
    texture = float(rng.uniform(*jitter.belt_texture)) if jitter.belt_texture[1] > 0 else 0.0
    frame, frame_mask, box = place_on_belt(photo, tile, level, rng, angle, mask, texture)
    if jitter.shading > 0:
        frame = _shade(frame, jitter.shading, rng)
    box = _jittered_box(box, jitter.box_error, frame.shape[0], rng)
    frame_u8 = np.clip(frame, 0, 255).astype(np.uint8)
    view = crop_view(frame_u8, box, size=(size, size), margin=DEFAULT_MARGIN)
    view_mask = crop_view(frame_mask, box, size=(size, size), margin=DEFAULT_MARGIN)
    return _film(view, jitter, rng), view_mask


# An uploaded photo: no belt, a tight crop, milder camera effects than a moving line.
PHOTO_JITTER = LineJitter(
    blur_p=0.15, noise_sigma=(0.0, 4.0), jpeg_p=0.5, jpeg_quality=(60, 95), offset=10.0
)
PHOTO_CROP_AREA = (0.85, 1.0)  # kept share of the photo's area


def photo_view(
    photo: np.ndarray,
    size: int,
    rng: np.random.Generator,
    jitter: LineJitter = PHOTO_JITTER,
) -> np.ndarray:
    """One randomised upload-like view (size x size uint8): flips, a tight crop of the
    photo resized to the input, exposure, noise and JPEG."""
    return masked_photo_view(photo, size, rng, jitter=jitter)[0]


def masked_photo_view(
    photo: np.ndarray,
    size: int,
    rng: np.random.Generator,
    mask: np.ndarray | None = None,
    jitter: LineJitter = PHOTO_JITTER,
) -> tuple[np.ndarray, np.ndarray | None]:
    """`photo_view` and its defect mask, carried through the flips and the crop."""
    if rng.random() < jitter.flip_p:
        photo, mask = photo[:, ::-1], None if mask is None else mask[:, ::-1]
    if rng.random() < jitter.flip_p:
        photo, mask = photo[::-1], None if mask is None else mask[::-1]
    height, width = photo.shape
    area = rng.uniform(*PHOTO_CROP_AREA)
    ratio = np.exp(rng.uniform(np.log(0.92), np.log(1 / 0.92)))
    crop_w = int(min(width, round(width * np.sqrt(area * ratio))))
    crop_h = int(min(height, round(height * np.sqrt(area / ratio))))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    window = (slice(top, top + crop_h), slice(left, left + crop_w))
    view = cv2.resize(
        np.ascontiguousarray(photo[window]), (size, size), interpolation=cv2.INTER_AREA
    )
    if mask is not None:
        mask = cv2.resize(
            np.ascontiguousarray(mask[window]), (size, size), interpolation=cv2.INTER_AREA
        )
    return _film(view, jitter, rng), mask


def canonical_photo_view(photo: np.ndarray, size: int) -> np.ndarray:
    """The photo as uploaded, resized to the input (what `eval --views photo` scores)."""
    return cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA)


def training_view(
    photo: np.ndarray,
    size: int,
    rng: np.random.Generator,
    photo_share: float,
    jitter: LineJitter = LineJitter(),  # noqa: B008  (frozen)
) -> np.ndarray:
    """A line view, or with probability `photo_share` a photo view, of one photo
    (with no share the random stream is the line views' alone, as before)."""
    return masked_training_view(photo, size, rng, photo_share, jitter)[0]


def masked_training_view(
    photo: np.ndarray,
    size: int,
    rng: np.random.Generator,
    photo_share: float,
    jitter: LineJitter = LineJitter(),  # noqa: B008  (frozen)
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """`training_view` and its defect mask, carried through the view's geometry (None
    for a photo without a mask; the same random stream with or without a mask)."""
    if photo_share > 0 and rng.random() < photo_share:
        return masked_photo_view(photo, size, rng, mask)
    view, view_mask = line_view(photo, size, rng, mask=mask, jitter=jitter)
    return view, None if mask is None else view_mask
