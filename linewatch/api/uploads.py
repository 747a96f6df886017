"""Uploaded images for /v1/classify: type told by the bytes, size and sides checked
before anything is decoded (a 20000 px PNG of a few kB must not be inflated)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
# JPEG start-of-frame markers (baseline, progressive, lossless...; not DHT/JPG/DAC)
SOF_MARKERS = frozenset(
    {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), 0xCD, 0xCE, 0xCF}
)


class UploadError(ValueError):
    """A file that cannot be classified; `status` is the HTTP status to answer."""

    def __init__(self, status: int, filename: str, problem: str) -> None:
        super().__init__(problem)
        self.status = status
        self.filename = filename
        self.problem = problem


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_side: int


def image_type(data: bytes) -> str | None:
    """'png', 'jpeg' or None, from the first bytes (never from the name)."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    return None


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the IHDR chunk that must follow the signature."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first start-of-frame segment, walking the markers."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in SOF_MARKERS:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None


def decode_upload(filename: str, data: bytes, limits: Limits) -> np.ndarray:
    """RGB uint8 HxWx3 from an uploaded file, or UploadError (413, 415 or 400)."""
    if len(data) > limits.max_bytes:
        mb = limits.max_bytes / 1_000_000
        raise UploadError(413, filename, f"file is {len(data)} bytes, over the {mb:g} MB limit")
    kind = image_type(data)
    if kind is None:
        what = "empty file" if not data else "not a JPEG or PNG image (by its first bytes)"
        raise UploadError(415, filename, f"{what}; send JPEG or PNG")
    size = png_size(data) if kind == "png" else jpeg_size(data)
    if size is None:
        raise UploadError(400, filename, f"{kind} header is truncated or corrupt")
    if max(size) > limits.max_side or min(size) < 1:
        raise UploadError(
            413, filename, f"image is {size[0]}x{size[1]} px, over {limits.max_side} px a side"
        )
    if kind == "jpeg" and not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        raise UploadError(400, filename, "jpeg data is truncated (no end-of-image marker)")
    rgb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    if rgb is None or rgb.shape[1::-1] != size:
        raise UploadError(400, filename, f"{kind} data does not decode (truncated or corrupt)")
    return rgb
