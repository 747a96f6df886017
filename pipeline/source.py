"""Frames from video files and live cameras, decoded with PyAV.

Files decode in-process. Live streams decode in a child process, because a
read that stalls after the stream started can hang inside PyAV for good; the
parent waits on a bounded queue and kills the child when no frame arrives
within the read timeout, so the caller never hangs.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.redact import redact_url

log = logging.getLogger(__name__)

LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "srt://")
SPAWN_GRACE_S = 5.0  # a spawned decoder needs a moment to import av and numpy


class SourceError(LinewatchError):
    """A source cannot be opened or read."""


class SourceEnded(SourceError):
    """A live stream ended (the server closed it)."""


class SourceStalled(SourceError):
    """A live stream stopped delivering frames without closing."""


@dataclass(frozen=True)
class DecodedFrame:
    index: int
    pts: float
    capture_ts: int
    image: np.ndarray


@dataclass(frozen=True)
class SourceOptions:
    target_fps: float | None = None
    roi: tuple[int, int, int, int] | None = None
    resize: tuple[int, int] | None = None
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    decode_threads: int = 0


def is_live(url: str) -> bool:
    return url.lower().startswith(LIVE_SCHEMES)


def open_frames(url: str, options: SourceOptions) -> Iterator[DecodedFrame]:
    """Decoded, sampled, cropped RGB frames; SourceError names the (redacted) source."""
    if is_live(url):
        return _live_frames(url, options)
    return _file_frames(_checked_path(url), options)


class FpsSampler:
    """Keeps frames whose pts reaches the next due time; the schedule does not drift."""

    def __init__(self, target_fps: float | None) -> None:
        self.interval = 1.0 / target_fps if target_fps else 0.0
        self.next_due: float | None = None

    def keep(self, pts: float) -> bool:
        if not self.interval or pts < 0:
            return True
        if self.next_due is None or pts - self.next_due > self.interval:
            self.next_due = pts
        if pts + 1e-6 < self.next_due:
            return False
        self.next_due += self.interval
        return True


def shape_image(image: np.ndarray, options: SourceOptions) -> np.ndarray:
    if options.roi is not None:
        x, y, width, height = options.roi
        image = image[y : y + height, x : x + width]
    if options.resize is not None:
        image = cv2.resize(image, options.resize, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def _checked_path(url: str) -> Path:
    path = Path(url.removeprefix("file://"))
    if not path.exists():
        raise SourceError(f"video file {path} not found; check the camera url")
    if not path.is_file():
        raise SourceError(f"{path} is not a file; give the path of a video file")
    if not os.access(path, os.R_OK):
        raise SourceError(f"video file {path} is not readable; check its permissions")
    if path.stat().st_size == 0:
        raise SourceError(f"video file {path} is empty (0 bytes)")
    return path


def _open_container(url: str, options: SourceOptions) -> Any:
    live = is_live(url)
    try:
        container = av.open(
            url,
            options={"rtsp_transport": "tcp"} if url.startswith(("rtsp://", "rtsps://")) else {},
            timeout=(options.open_timeout_s, options.read_timeout_s) if live else None,
        )
    except (av.error.FFmpegError, OSError) as exc:
        what = "stream" if live else "video file"
        raise SourceError(
            f"cannot open {what} {redact_url(url)}: {_reason(exc)}; "
            + (
                "check the URL, credentials and that the camera is reachable"
                if live
                else "is it a video file that ffmpeg can read?"
            )
        ) from None
    if not container.streams.video:
        container.close()
        raise SourceError(f"{redact_url(url)} has no video stream (audio only?)")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    if options.decode_threads:
        stream.thread_count = options.decode_threads
    return container


def _reason(exc: BaseException) -> str:
    """The error without its filename: PyAV puts the unredacted URL there."""
    return getattr(exc, "strerror", None) or exc.__class__.__name__


def _decode(container: Any, options: SourceOptions, url: str) -> Iterator[DecodedFrame]:
    sampler = FpsSampler(options.target_fps)
    index = 0
    try:
        for frame in container.decode(video=0):
            pts = float(frame.time) if frame.time is not None else -1.0
            if not sampler.keep(pts):
                continue
            image = shape_image(frame.to_ndarray(format="rgb24"), options)
            yield DecodedFrame(index, pts, time.time_ns(), image)
            index += 1
    except av.error.FFmpegError as exc:
        if is_live(url):
            raise SourceEnded(f"stream {redact_url(url)} broke: {_reason(exc)}") from None
        log.warning(
            "%s: decoding stopped after %d frames (%s); the file may be truncated",
            redact_url(url),
            index,
            _reason(exc),
        )
    if index == 0 and not is_live(url):
        raise SourceError(f"video file {redact_url(url)} has no decodable frames (corrupt?)")


def _file_frames(path: Path, options: SourceOptions) -> Iterator[DecodedFrame]:
    container = _open_container(str(path), options)
    try:
        yield from _decode(container, options, str(path))
    finally:
        container.close()


def _live_frames(url: str, options: SourceOptions) -> Iterator[DecodedFrame]:
    context = multiprocessing.get_context("spawn")
    frames: Any = context.Queue(maxsize=8)
    child = context.Process(target=_decode_live, args=(url, options, frames), daemon=True)
    child.start()
    try:
        timeout = options.open_timeout_s + options.read_timeout_s + SPAWN_GRACE_S
        while True:
            try:
                kind, payload = frames.get(timeout=timeout)
            except queue.Empty:
                raise SourceStalled(
                    f"stream {redact_url(url)} delivered no frame for {timeout:.0f} s; "
                    "the decoder was stopped"
                ) from None
            if kind == "frame":
                yield payload
                timeout = options.read_timeout_s + 1.0
            elif kind == "error":
                raise SourceError(payload)
            elif kind == "stalled":
                raise SourceStalled(
                    f"stream {redact_url(url)} delivered no frame for {payload:.0f} s "
                    "(read timeout)"
                )
            else:
                raise SourceEnded(f"stream {redact_url(url)} ended")
    finally:
        _stop_child(child, frames)


def _stop_child(child: Any, frames: Any) -> None:
    if child.is_alive():
        child.kill()
    child.join(5)
    frames.cancel_join_thread()
    frames.close()


def _decode_live(url: str, options: SourceOptions, frames: Any) -> None:
    """Child process: decode the stream and hand frames to the parent."""
    last_frame = time.monotonic()
    try:
        container = _open_container(url, options)
        for frame in _decode(container, options, url):
            frames.put(("frame", frame))
            last_frame = time.monotonic()
    except SourceEnded:
        pass
    except SourceError as exc:
        frames.put(("error", str(exc)))
        return
    # PyAV reports a read timeout as the end of the stream; tell the two apart.
    silent_s = time.monotonic() - last_frame
    if silent_s >= 0.9 * options.read_timeout_s:
        frames.put(("stalled", silent_s))
    else:
        frames.put(("end", None))
