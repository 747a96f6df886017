"""Image bytes on the wire: JPEG, PNG or raw uint8 RGB."""

from __future__ import annotations

import cv2
import numpy as np


class UndecodableImage(ValueError):
    """Image bytes that do not decode to the announced size."""


def encode_image(image: np.ndarray, encoding: str, jpeg_quality: int = 90) -> bytes:
    """RGB uint8 HxWx3 -> bytes in `encoding` (jpeg | png | raw-u8)."""
    if encoding == "raw-u8":
        return np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if encoding == "jpeg":
        ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    elif encoding == "png":
        ok, buffer = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        raise ValueError(f"unknown image encoding {encoding!r}")
    if not ok:
        raise ValueError(f"cv2 could not encode a {image.shape} image as {encoding}")
    return buffer.tobytes()


def decode_image(data: bytes, encoding: str, width: int, height: int) -> np.ndarray:
    """Bytes -> RGB uint8 HxWx3; UndecodableImage when they are not that image."""
    if encoding == "raw-u8":
        if len(data) != width * height * 3:
            raise UndecodableImage(f"raw frame has {len(data)} bytes, expected {width}x{height}x3")
        return np.frombuffer(data, np.uint8).reshape(height, width, 3)
    rgb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    if rgb is None:
        raise UndecodableImage(f"{encoding} bytes do not decode ({len(data)} bytes)")
    if rgb.shape[:2] != (height, width):
        raise UndecodableImage(
            f"image is {rgb.shape[1]}x{rgb.shape[0]}, announced {width}x{height}"
        )
    return rgb
