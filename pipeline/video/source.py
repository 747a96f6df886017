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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from linewatch.pipeline.config import STREAM_SCHEMES, CameraSettings, IngestSettings
from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.orphans import die_with_parent
from linewatch.pipeline.redact import redact_url

log = logging.getLogger(__name__)

LIVE_SCHEMES = tuple(f"{scheme}://" for scheme in STREAM_SCHEMES)
SPAWN_GRACE_S = 5.0  # a spawned decoder needs a moment to import av and numpy
QUEUE_FRAMES = 8  # frames a live decoder may get ahead of its reader
POLL_S = 0.25  # how often the reader checks that the decoder is still alive
DROP_LOG_EVERY_S = 10.0


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

    @classmethod
    def for_camera(cls, camera: CameraSettings, ingest: IngestSettings) -> SourceOptions:
        """The camera's sampling, roi and resize with ingest's timeouts."""
        return cls(
            target_fps=camera.fps,
            roi=camera.roi,
            resize=camera.resize,
            open_timeout_s=ingest.open_timeout_s,
            read_timeout_s=ingest.read_timeout_s,
        )


def is_live(url: str) -> bool:
    return url.lower().startswith(LIVE_SCHEMES)


def open_frames(url: str, options: SourceOptions) -> Iterator[DecodedFrame]:
    """Decoded, sampled, cropped RGB frames; SourceError names the (redacted) source."""
    if is_live(url):
        return _live_frames(url, options)
    return _file_frames(_checked_path(url), options)


class FpsSampler:
    """Keeps frames whose pts reaches the next due time; the schedule does not drift.

    Frames without a pts (-1) are kept until the first timed frame (RTSP's first
    frame has none), and after it are placed one source frame after the last.
    """

    def __init__(self, target_fps: float | None, source_fps: float | None = None) -> None:
        self.interval = 1.0 / target_fps if target_fps else 0.0
        self.period = 1.0 / source_fps if source_fps else 0.0
        self.next_due: float | None = None
        self.last_pts: float | None = None
        self.kept_untimed = False

    def keep(self, pts: float) -> bool:
        if not self.interval:
            return True
        if pts < 0:
            if self.last_pts is None or not self.period:
                self.kept_untimed = self.last_pts is None
                return True
            pts = self.last_pts + self.period
        due = self._due(pts)
        self.last_pts = pts
        if pts + 1e-6 < due:
            self.next_due = due
            return False
        self.next_due = due + self.interval
        return True

    def _due(self, pts: float) -> float:
        if self.next_due is None and self.kept_untimed:
            # the untimed frame kept took the slot one source frame before this one
            return pts - self.period + self.interval
        if self.next_due is None or abs(pts - self.next_due) > self.interval:
            # the start, a gap, or the camera clock going back: restart at this frame
            return pts
        return self.next_due


def shape_image(image: np.ndarray, options: SourceOptions) -> np.ndarray:
    if options.roi is not None:
        x, y, width, height = options.roi
        image = image[y : y + height, x : x + width]
    if options.resize is not None:
        image = cv2.resize(image, options.resize, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def _check_roi(roi: tuple[int, int, int, int] | None, width: int, height: int, url: str) -> None:
    if roi is None:
        return
    x, y, w, h = roi
    if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > width or y + h > height:
        raise SourceError(
            f"roi {tuple(roi)} (x, y, w, h) does not fit the {width}x{height} frames of "
            f"{redact_url(url)}; fix the camera's roi"
        )


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
                else "is it a complete video file that ffmpeg can read?"
            )
        ) from None  # PyAV's error names the URL, password included
    if not container.streams.video:
        what = "only audio" if container.streams.audio else "no streams (truncated or not a video?)"
        container.close()
        raise SourceError(f"{redact_url(url)} has no video stream: it holds {what}")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container


def _reason(exc: BaseException) -> str:
    """The error without its filename: PyAV puts the unredacted URL there."""
    return getattr(exc, "strerror", None) or exc.__class__.__name__


def _shaped(
    container: Any, frames: Iterable[Any], options: SourceOptions, url: str
) -> Iterator[DecodedFrame]:
    """Sample PyAV frames by pts, convert to RGB, crop and resize."""
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    sampler = FpsSampler(options.target_fps, float(rate) if rate else None)
    index = 0
    for frame in frames:
        if index == 0:
            _check_roi(options.roi, frame.width, frame.height, url)
        pts = float(frame.time) if frame.time is not None else -1.0
        if not sampler.keep(pts):
            continue
        image = shape_image(frame.to_ndarray(format="rgb24"), options)
        yield DecodedFrame(index, pts, time.time_ns(), image)
        index += 1


def _file_frames(path: Path, options: SourceOptions) -> Iterator[DecodedFrame]:
    container = _open_container(str(path), options)
    kept = 0
    try:
        for frame in _shaped(container, _tolerant_decode(container, str(path)), options, str(path)):
            yield frame
            kept += 1
    finally:
        container.close()
    if kept == 0:
        raise SourceError(f"video file {path} has no decodable frames (corrupt or truncated?)")


def _tolerant_decode(container: Any, url: str) -> Iterator[Any]:
    """A file's video frames; a broken or truncated file stops with a warning, not an error."""
    stream = container.streams.video[0]
    decoded = 0
    try:
        for frame in container.decode(stream):
            decoded += 1
            yield frame
    except av.error.FFmpegError as exc:
        log.warning(
            "%s: decoding stopped after %d frames (%s); the file may be truncated",
            redact_url(url),
            decoded,
            _reason(exc),
        )
        return
    if decoded and decoded < stream.frames:
        log.warning(
            "%s: decoded %d of the %d frames its header lists; the file may be truncated",
            redact_url(url),
            decoded,
            stream.frames,
        )


def _live_frames(url: str, options: SourceOptions) -> Iterator[DecodedFrame]:
    context = multiprocessing.get_context("spawn")
    messages: Any = context.Queue(maxsize=QUEUE_FRAMES)
    child = context.Process(
        target=_decode_live,
        args=(url, options, messages, os.getpid()),
        name=f"decode {redact_url(url)}",
        daemon=True,
    )
    child.start()
    drops = _DropCounter(url)
    try:
        timeout = options.open_timeout_s + options.read_timeout_s + SPAWN_GRACE_S
        index = 0
        while True:
            kind, payload, dropped = _next_message(messages, child, timeout, url)
            drops.add(dropped)
            if kind != "frame":
                raise _outcome_error(kind, payload, url)
            yield replace(payload, index=index)
            index += 1
            timeout = options.read_timeout_s + 1.0
    finally:
        drops.flush()
        _stop_child(child, messages)


def _next_message(messages: Any, child: Any, timeout_s: float, url: str) -> tuple:
    """The decoder's next message; raises when it went silent or died without a word."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return messages.get(timeout=max(0.0, min(POLL_S, deadline - time.monotonic())))
        except queue.Empty:
            pass
        if child.exitcode is not None:
            try:  # its last message may still be in the pipe
                return messages.get(timeout=POLL_S)
            except queue.Empty:
                raise SourceError(
                    f"decoder for {redact_url(url)} exited with code {child.exitcode}"
                ) from None
        if time.monotonic() >= deadline:
            raise SourceStalled(
                f"stream {redact_url(url)} delivered no frame for {timeout_s:.0f} s; "
                "the decoder was stopped"
            )


def _outcome_error(kind: str, payload: Any, url: str) -> SourceError:
    if kind == "error":
        return SourceError(payload)
    if kind == "stalled":
        return SourceStalled(
            f"stream {redact_url(url)} delivered no frame for {payload:.0f} s (read timeout)"
        )
    return SourceEnded(f"stream {redact_url(url)} ended")


class _DropCounter:
    """Logs, at most every DROP_LOG_EVERY_S, the frames a live decoder dropped for a slow reader."""

    def __init__(self, url: str) -> None:
        self.url = redact_url(url)
        self.pending = 0
        self.logged_at = time.monotonic()

    def add(self, dropped: int) -> None:
        self.pending += dropped
        if time.monotonic() - self.logged_at >= DROP_LOG_EVERY_S:
            self.flush()

    def flush(self) -> None:
        """Log what is pending now (also when the stream ends, so no drop goes unsaid);
        the next report's 10 s count from a report, not from a quiet spell."""
        if self.pending:
            log.warning(
                "%s: dropped %d frames: the reader was slower than the camera",
                self.url,
                self.pending,
            )
            self.pending, self.logged_at = 0, time.monotonic()


def _stop_child(child: Any, messages: Any) -> None:
    if child.is_alive():
        child.kill()
    child.join(5)
    messages.cancel_join_thread()
    messages.close()


def _decode_live(url: str, options: SourceOptions, messages: Any, parent_pid: int) -> None:
    """Child process: decode the stream and hand frames to the parent (it dies with the
    thread iterating the frames: when that is gone, nobody reads them anyway)."""
    die_with_parent(parent_pid)
    try:
        outcome: tuple = _pump_live(url, options, messages)
    except SourceError as exc:
        outcome = ("error", str(exc), 0)
    except Exception as exc:  # reported to the parent instead of looking like a stall
        reason = f"{exc.__class__.__name__}: {exc}".replace(url, redact_url(url))
        outcome = ("error", f"decoder for {redact_url(url)} failed: {reason}", 0)
    messages.put(outcome)  # blocks until the parent reads it, or kills this process


def _pump_live(url: str, options: SourceOptions, messages: Any) -> tuple:
    """Frames into the queue until the stream ends; a full queue drops the new frame."""
    container = _open_container(url, options)
    last_frame = time.monotonic()
    dropped = 0
    try:
        for frame in _shaped(container, container.decode(video=0), options, url):
            try:
                messages.put_nowait(("frame", frame, dropped))
                dropped = 0
            except queue.Full:
                dropped += 1
            last_frame = time.monotonic()
    except av.error.FFmpegError:
        pass  # PyAV reports a read timeout and a closed stream alike; told apart below
    finally:
        container.close()
    silent_s = time.monotonic() - last_frame
    if silent_s >= 0.9 * options.read_timeout_s:
        return ("stalled", silent_s, dropped)
    return ("end", None, dropped)
