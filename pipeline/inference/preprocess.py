"""Batch preprocessing built from a PaddleClas-style `PreProcess.transform_ops` list."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

_IGNORED_OPS = {"DecodeImage", "ToCHWImage"}
INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "bilinear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}
_KNOWN_OPS = {"ResizeImage", "CropImage", "NormalizeImage", *_IGNORED_OPS}


@dataclass(frozen=True)
class Preprocessor:
    """RGB uint8 images -> float32 NCHW batch, as the model was trained."""

    resize: tuple[int, int] | None = None  # (width, height)
    resize_short: int | None = None
    crop: tuple[int, int] | None = None  # (width, height)
    interpolation: int = cv2.INTER_LINEAR
    alpha: np.ndarray = field(default_factory=lambda: np.full(3, 1 / 255, np.float32))
    beta: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))

    @classmethod
    def from_ops(cls, ops: Sequence[dict[str, Any]]) -> Preprocessor:
        """Parse the ops list; ValueError names any op this reader does not support."""
        settings: dict[str, Any] = {}
        for op in ops:
            ((name, params),) = op.items()
            params = params or {}
            if name not in _KNOWN_OPS:
                raise ValueError(
                    f"unsupported preprocess op {name!r}; supported: {sorted(_KNOWN_OPS)}"
                )
            if name == "ResizeImage":
                settings.update(_resize_settings(params))
            elif name == "CropImage":
                settings["crop"] = _pair(params["size"])
            elif name == "NormalizeImage":
                settings.update(_normalize_settings(params))
        return cls(**settings)

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the model input."""
        size = self.crop or self.resize
        if size is None:
            raise ValueError("preprocess has neither a fixed resize nor a crop")
        return size

    @property
    def view_size(self) -> tuple[int, int]:
        """(width, height) ingest resizes a part's view to: the fixed resize when there is
        one (a crop after it still applies here, as in training), else the model input."""
        return self.resize or self.output_size

    def image(self, rgb: np.ndarray) -> np.ndarray:
        """One image resized and cropped, still HWC uint8. An image already at the resize
        size (a part view made at ingest) is not resized again."""
        out = rgb
        height, width = out.shape[:2]
        if self.resize is not None:
            if self.resize != (width, height):
                out = cv2.resize(out, self.resize, interpolation=self.interpolation)
        elif self.resize_short is not None and self.resize_short != min(height, width):
            scale = self.resize_short / min(height, width)
            size = (round(width * scale), round(height * scale))
            out = cv2.resize(out, size, interpolation=self.interpolation)
        if self.crop is not None:
            out = _centre_crop(out, self.crop)
        return out

    def batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 images -> normalised float32 NCHW batch (C-contiguous)."""
        width, height = self.output_size
        resized = np.empty((len(images), height, width, 3), np.uint8)
        for slot, rgb in zip(resized, images, strict=True):
            slot[...] = self.image(rgb)
        # Normalising after the uint8 resize keeps the float work to one pass that
        # converts, transposes HWC -> CHW and scales, then one in-place add.
        out = np.empty((len(images), 3, height, width), np.float32)
        np.multiply(resized.transpose(0, 3, 1, 2), self.alpha[:, None, None], out=out)
        out += self.beta[:, None, None]
        return out


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    width, height = value
    return (int(width), int(height))


def _resize_settings(params: dict[str, Any]) -> dict[str, Any]:
    name = str(params.get("interpolation") or "linear").lower()
    if name not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {name!r}; use one of {sorted(INTERPOLATIONS)}")
    settings: dict[str, Any] = {"interpolation": INTERPOLATIONS[name]}
    if "size" in params:
        return {**settings, "resize": _pair(params["size"])}
    if "resize_short" in params:
        return {**settings, "resize_short": int(params["resize_short"])}
    raise ValueError("ResizeImage needs `size` or `resize_short`")


def _normalize_settings(params: dict[str, Any]) -> dict[str, Any]:
    scale = params.get("scale", 1 / 255)
    if isinstance(scale, str):
        numerator, _, denominator = scale.partition("/")
        scale = float(numerator) / float(denominator or 1)
    mean = np.asarray(params.get("mean", [0.485, 0.456, 0.406]), np.float32)
    std = np.asarray(params.get("std", [0.229, 0.224, 0.225]), np.float32)
    return {
        "alpha": (float(scale) / std).astype(np.float32),
        "beta": (-mean / std).astype(np.float32),
    }


def _centre_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    top = max(0, (image.shape[0] - height) // 2)
    left = max(0, (image.shape[1] - width) // 2)
    return image[top : top + height, left : left + width]
