"""Headless Chromium for the report's plots: screenshots and coloured pixels."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

CHROMIUM = Path("/usr/bin/chromium")


PLOT_TAG = r'<img[^>]+src="data:image/png;base64,([^"]+)"[^>]*>'


def plot_images(page: str) -> list[np.ndarray]:
    """The report's inline PNG plots, decoded (BGR)."""
    import base64
    import re

    import cv2

    images = []
    for data in re.findall(PLOT_TAG, page):
        raw = np.frombuffer(base64.b64decode(data), dtype=np.uint8)
        images.append(cv2.imdecode(raw, cv2.IMREAD_COLOR))
    return images


def coloured(image: np.ndarray) -> int:
    """Pixels of the plotted data (matplotlib's blue and orange), not of axes or text."""
    blue, _green, red = (image[..., i].astype(int) for i in range(3))
    return int((abs(blue - red) > 80).sum())


def screenshot(page: Path, shot: Path, width: int = 1200, height: int = 2400) -> np.ndarray:
    """A headless Chromium screenshot of a local page (BGR)."""
    import cv2

    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            f"--window-size={width},{height}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    image = cv2.imread(str(shot))
    assert image is not None and image.shape == (height, width, 3)
    return image


def each_plot_in_chromium(page: str, folder: Path) -> list[int]:
    """Chromium renders each plot of a report page alone (the page's own <head>, one
    <img>): the coloured pixels of each screenshot, in page order."""
    import re

    head = page[: page.index("<body")] if "<body" in page else ""
    counts = []
    for index, tag in enumerate(re.finditer(PLOT_TAG, page)):
        single = folder / f"plot-{index}.html"
        single.write_text(f"{head}<body>{tag.group(0)}</body></html>")
        counts.append(coloured(screenshot(single, folder / f"plot-{index}.png", 1000, 700)))
    return counts


def require_chromium() -> None:
    """Skip (fail under CI) when the browser the plot checks need is missing."""
    import pytest

    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is absent (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
