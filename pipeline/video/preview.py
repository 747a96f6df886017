"""A camera's live view: its latest sampled frame, downscaled, with the part boxes ingest
located and the part ids they carry; the API draws the boxes in their verdict's colour.

Ingest keeps at most `ingest.preview_fps` of these a second, one per camera, overwritten
in Redis (no stream, no backlog). Boxes are drawn when the view is served, not when it
is taken, so their colours follow verdicts decided after the frame.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from linewatch.pipeline.video.crop import PixelBox

# RGB colours of a part's box by its verdict; a part not decided yet is pending
VERDICT_COLOURS: dict[str, tuple[int, int, int]] = {
    "ok": (46, 160, 67),
    "defect": (220, 38, 38),
    "uninspected": (245, 158, 11),
    "pending": (160, 160, 160),
}


@dataclass(frozen=True)
class PreviewBox:
    """A located box in the preview's pixels and the part it belongs to (None: a track
    that is not a part yet)."""

    x1: int
    y1: int
    x2: int
    y2: int
    part_id: int | None


@dataclass(frozen=True)
class Preview:
    jpeg: bytes
    boxes: tuple[PreviewBox, ...]
    captured_ts: int  # epoch ns of the frame
    stopped: bool = False  # the camera stopped: this is its last frame

    def encode(self) -> dict[str, bytes]:
        meta = {
            "boxes": [[b.x1, b.y1, b.x2, b.y2, b.part_id] for b in self.boxes],
            "captured_ts": self.captured_ts,
            "stopped": self.stopped,
        }
        return {"jpeg": self.jpeg, "meta": json.dumps(meta).encode()}

    @classmethod
    def decode(cls, fields: Mapping[bytes, bytes]) -> Preview:
        """ValueError when the fields are not a preview."""
        try:
            meta = json.loads(fields[b"meta"])
            boxes = tuple(PreviewBox(*row) for row in meta["boxes"])
            return cls(fields[b"jpeg"], boxes, int(meta["captured_ts"]), bool(meta["stopped"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a camera preview: {exc}") from exc


class PreviewSampler:
    """Takes a preview at most `fps` times a second (0: never), at most `width` px wide."""

    def __init__(
        self, *, fps: float, width: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = 1.0 / fps if fps > 0 else None
        self.width = width
        self.clock = clock
        self.next_at = 0.0

    def take(
        self,
        image: np.ndarray,
        boxes: Sequence[tuple[PixelBox, int | None]],
        captured_ts: int,
    ) -> Preview | None:
        """A preview of this RGB frame when one is due, else None."""
        now = self.clock()
        if self.interval is None or now < self.next_at:
            return None
        self.next_at = now + self.interval
        scale = min(1.0, self.width / image.shape[1])
        if scale < 1.0:
            size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        ok, jpeg = cv2.imencode(
            ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 75]
        )
        if not ok:
            return None
        scaled = tuple(
            PreviewBox(*(round(v * scale) for v in (b.x1, b.y1, b.x2, b.y2)), part_id)
            for b, part_id in boxes
        )
        return Preview(jpeg.tobytes(), scaled, captured_ts)


def draw(preview: Preview, verdicts: Mapping[int, str]) -> bytes:
    """The preview's JPEG with each box drawn in its part's verdict colour (pending when
    undecided) and labelled with the part id; a stopped camera's frame says so."""
    image = cv2.imdecode(np.frombuffer(preview.jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("the preview's JPEG does not decode")
    for box in preview.boxes:
        verdict = verdicts.get(box.part_id, "pending") if box.part_id is not None else "pending"
        red, green, blue = VERDICT_COLOURS.get(verdict, VERDICT_COLOURS["pending"])
        colour = (blue, green, red)
        cv2.rectangle(image, (box.x1, box.y1), (box.x2 - 1, box.y2 - 1), colour, 2)
        if box.part_id is not None:
            origin = (box.x1 + 3, max(12, box.y1 - 4))
            cv2.putText(image, f"#{box.part_id}", origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1)
    if preview.stopped:
        cv2.putText(image, "stopped", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise ValueError("the preview could not be encoded")
    return jpeg.tobytes()
