"""What ingest sends for each decoded frame: the whole frame, or the views of its parts.

`parts.method: none` keeps today's frame mode (`WholeFrames`). Any other method runs
every frame through locate → track (`PartViews`, even while a live camera sheds, so
tracks never break) and sends each chosen view cropped by `crop_view` (box + margin)
and resized to the model's input size. A part's end becomes a PartEndMessage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from linewatch.pipeline.config import PartsSettings
from linewatch.pipeline.video.crop import crop_view
from linewatch.pipeline.video.locate import Locator, make_locator
from linewatch.pipeline.video.source import DecodedFrame
from linewatch.pipeline.video.tracking import (
    FrameInfo,
    PartRecord,
    PartTracker,
    ViewPick,
    make_tracker,
)
from linewatch.schemas.messages import PartEndMessage, PartView


@dataclass(frozen=True)
class Pick:
    """One message to send: a whole frame (`view` None) or one part's view of it."""

    frame: DecodedFrame
    view: ViewPick | None = None

    def sent_as(self, seq: int) -> PartView | None:
        """The view's wire identity, recording on its part that it is sent with `seq`."""
        if self.view is None:
            return None
        part, box = self.view.part, self.view.box
        return PartView(part.part_id, part.note_sent(seq), box.x1, box.y1, box.x2, box.y2)


@dataclass(frozen=True)
class ModelView:
    """What the model expects of a view: its input size (width, height) and, when its
    folder says, the crop margin it was trained with."""

    size: tuple[int, int]
    margin: float | None = None


@dataclass
class Selection:
    picks: list[Pick]
    ended: list[PartRecord]


class FrameViews(Protocol):
    def select(self, frames: Sequence[DecodedFrame]) -> Selection: ...

    def image(self, pick: Pick) -> np.ndarray: ...

    def finish(self, reason: str) -> list[PartRecord]: ...


class WholeFrames:
    """Frame mode: every frame is sent whole."""

    def select(self, frames: Sequence[DecodedFrame]) -> Selection:
        return Selection([Pick(frame) for frame in frames], [])

    def image(self, pick: Pick) -> np.ndarray:
        return pick.frame.image

    def finish(self, reason: str) -> list[PartRecord]:
        return []


class PartViews:
    """Parts mode: locate and track each frame; crop the views chosen by the tracker."""

    def __init__(
        self,
        *,
        locator: Locator,
        tracker: PartTracker,
        view_size: tuple[int, int],
        margin: float,
    ) -> None:
        self.locator = locator
        self.tracker = tracker
        self.view_size = view_size
        self.margin = margin

    def select(self, frames: Sequence[DecodedFrame]) -> Selection:
        selection = Selection([], [])
        for frame in frames:
            height, width = frame.image.shape[:2]
            info = FrameInfo(frame.pts, frame.capture_ts, width, height)
            step = self.tracker.update(self.locator.locate(frame.image), info)
            selection.picks += [Pick(frame, view) for view in step.views]
            selection.ended += step.ended
        return selection

    def image(self, pick: Pick) -> np.ndarray:
        assert pick.view is not None
        return crop_view(pick.frame.image, pick.view.box, size=self.view_size, margin=self.margin)

    def finish(self, reason: str) -> list[PartRecord]:
        return self.tracker.finish(reason)


def make_frame_views(
    settings: PartsSettings,
    *,
    camera_id: str,
    model_view: Callable[[], ModelView],
    new_part_id: Callable[[], int],
) -> FrameViews:
    """Whole frames for `method: none`, else part views (`model_view` is read only then).
    The crop margin is the camera's `crop_margin`, else the model's, else 0."""
    if settings.method == "none":
        return WholeFrames()
    locator = make_locator(settings, camera_id=camera_id)
    model = model_view()
    margin = settings.crop_margin if settings.crop_margin is not None else model.margin
    return PartViews(
        locator=locator,
        tracker=make_tracker(locator, settings, new_part_id=new_part_id),
        view_size=model.size,
        margin=margin or 0.0,
    )


def part_end_message(camera_id: str, record: PartRecord, wait_ns: int) -> PartEndMessage:
    """The part's end; its verdict is due `wait_ns` after it ended."""
    return PartEndMessage(
        camera_id=camera_id,
        part_id=record.part_id,
        views_sent=record.views_sent,
        first_seq=record.first_seq,
        last_seq=record.last_seq,
        first_pts=record.first_pts,
        last_pts=record.last_pts,
        first_capture_ts=record.first_capture_ts,
        last_capture_ts=record.last_capture_ts,
        ended_ts=record.ended_ts,
        reason=record.reason,
        deadline_ts=record.ended_ts + wait_ns,
    )
