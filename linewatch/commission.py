"""`linewatch commission`: read a minute of a camera, find the locator settings that fit
its belt, print them as a YAML block and draw a contact sheet of the boxes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from rich.progress import Progress

from linewatch.pipeline.config import CameraSettings, Settings, TrackedParts
from linewatch.pipeline.errors import LinewatchError
from linewatch.pipeline.video.commission import (
    LocatorCheck,
    commission,
    contact_sheet,
    settings_yaml,
)
from linewatch.pipeline.video.source import SourceOptions, open_frames


def read_sample(camera: CameraSettings, settings: Settings, seconds: float) -> list[np.ndarray]:
    """The camera's sampled frames (its fps, roi, resize) over its first `seconds`."""
    options = SourceOptions.for_camera(camera, settings.ingest)
    frames: list[np.ndarray] = []
    stream = open_frames(camera.url, options)
    start: float | None = None
    try:
        for frame in stream:
            start = frame.pts if start is None else start
            if frame.pts - start > seconds:
                break
            frames.append(frame.image)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    if not frames:
        raise LinewatchError(f"camera {camera.id}: no frames to commission the locator with")
    return frames


def find_camera(settings: Settings, camera_id: str | None) -> CameraSettings:
    ids = [camera.id for camera in settings.cameras]
    if camera_id is None and len(ids) == 1:
        return settings.cameras[0]
    for camera in settings.cameras:
        if camera.id == camera_id:
            return camera
    raise LinewatchError(
        f"camera {camera_id!r} is not in the config (cameras: {', '.join(ids) or 'none'}); "
        "pass --camera with one of them"
    )


def run_commission(
    settings: Settings, *, camera_id: str | None, seconds: float, sheet: Path | None
) -> tuple[LocatorCheck, LocatorCheck, Path]:
    """Check every candidate on a sample of the camera; print the checks, the best
    settings as YAML and where the contact sheet went."""
    camera = find_camera(settings, camera_id)
    base = camera.parts
    if not isinstance(base, TrackedParts):
        raise LinewatchError(
            f"camera {camera.id}: parts.method is {base.method}; commissioning tunes a "
            "contrast (or background) locator: set parts.method: contrast first"
        )
    frames = read_sample(camera, settings, seconds)
    with Progress(transient=True) as bar:
        task = bar.add_task("trying locator settings", total=None)
        default, best = commission(
            frames, base, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    path = sheet or Path(f"commission-{camera.id}.png")
    image = contact_sheet(frames, default, best)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise LinewatchError(f"cannot write the contact sheet {path}; pass --sheet PATH")
    print(f"camera {camera.id}: {len(frames)} frames checked")
    print(f"  as configured: {default.summary()}")
    print(f"  best found:    {best.summary()}")
    print(f"contact sheet: {path} (as configured: orange, left; best found: green, right)")
    print(f"settings for camera {camera.id} (paste under the camera):")
    print(settings_yaml(best.settings), end="")
    return default, best, path
