"""Write RGB frames to an H.264 .mp4 with PyAV (demo, simulator and tests)."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float, crf: int = 18) -> Path:
    """Encode RGB uint8 HxWx3 frames (even width and height) as H.264 yuv420p.

    The index goes at the front of the file (faststart), so a file cut short
    still decodes up to the cut.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", options={"movflags": "+faststart"}) as container:
        stream = None
        for image in frames:
            if stream is None:
                stream = _add_stream(container, image.shape, fps, crf)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            container.mux(stream.encode(frame))
        if stream is None:
            raise ValueError(f"no frames to write to {path}")
        container.mux(stream.encode(None))
    return path


def _add_stream(
    container: av.container.OutputContainer, shape: tuple, fps: float, crf: int
) -> av.video.stream.VideoStream:
    height, width = shape[:2]
    if len(shape) != 3 or shape[2] != 3 or height % 2 or width % 2:
        raise ValueError(f"frames must be RGB HxWx3 with even width and height, got {shape}")
    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
    stream.height, stream.width = height, width
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": str(crf), "preset": "veryfast"}
    return stream
