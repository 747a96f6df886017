"""What ingest sends for each decoded frame: the views of its parts, and their ends.

`parts.method: none` is frame mode, where every sampled frame is a one-view part
(`OneViewParts`): its view is the whole decoded frame (the camera's `roi` when set),
resized to the model's input size like any part view, and the part ends with it. Any
other method runs every frame through locate → track (`PartViews`, even while a live
camera sheds, so tracks never break) and sends each chosen view cropped by `crop_view`
(box + margin) and resized to the model's input size. A part's end becomes a
PartEndMessage.

The model is the one the line runs now: its size and crop margin are read again at most
every `defaults.MODEL_POLL_S`, so after `linewatch model use` the next parts are cut for
the new model; a part keeps the cut of its first view, so no part mixes two cuts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from linewatch.pipeline import defaults
from linewatch.pipeline.config import FrameParts, PartsSettings
from linewatch.pipeline.video.commission import SplitWatch
from linewatch.pipeline.video.crop import PixelBox, crop_view
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

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pick:
    """One message to send: one part's view of a frame."""

    frame: DecodedFrame
    view: ViewPick

    def sent_as(self, seq: int) -> PartView:
        """The view's wire identity, recording on its part that it is sent with `seq`."""
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

    def shed(self, selection: Selection) -> list[PartRecord]:
        """The part ends still sent when a live camera sheds this selection's views."""
        ...

    def finish(self, reason: str) -> list[PartRecord]: ...

    def visible(self) -> list[tuple[PixelBox, int | None]]: ...


class ModelPoll:
    """The running model's view, read again at most every MODEL_POLL_S (a failed read
    keeps the last one)."""

    def __init__(self, model_view: Callable[[], ModelView]) -> None:
        self._model_view = model_view
        self.view = model_view()
        self._read_at = time.monotonic()

    def refresh(self) -> bool:
        """True when the view changed."""
        if time.monotonic() - self._read_at < defaults.MODEL_POLL_S:
            return False
        self._read_at = time.monotonic()
        before = self.view
        try:
            self.view = self._model_view()
        except Exception as exc:  # noqa: BLE001 (Redis down, unreadable folder: keep the cut)
            log.warning("running model not read (%s); views stay %s", exc, before)
        return self.view != before


class OneViewParts:
    """Frame mode: every frame is a part of one view, the whole frame resized to the
    running model's input size; the part ends with its view (reason `frame`). A frame a
    live camera sheds is no part: its reserved id is skipped."""

    def __init__(
        self, *, model_view: Callable[[], ModelView], new_part_ids: Callable[[int], int]
    ) -> None:
        self.model = ModelPoll(model_view)
        self.new_part_ids = new_part_ids

    def select(self, frames: Sequence[DecodedFrame]) -> Selection:
        if self.model.refresh():
            log.info("frames now resized to %s", self.model.view.size)
        first = self.new_part_ids(len(frames)) if frames else 0
        selection = Selection([], [])
        for offset, frame in enumerate(frames):
            height, width = frame.image.shape[:2]
            record = PartRecord(
                first + offset, frame.pts, frame.capture_ts, frame.pts, frame.capture_ts
            )
            record.reason, record.ended_ts = "frame", frame.capture_ts
            selection.picks.append(Pick(frame, ViewPick(record, PixelBox(0, 0, width, height))))
            selection.ended.append(record)
        return selection

    def image(self, pick: Pick) -> np.ndarray:
        return cv2.resize(pick.frame.image, self.model.view.size, interpolation=cv2.INTER_AREA)

    def shed(self, selection: Selection) -> list[PartRecord]:
        return []

    def finish(self, reason: str) -> list[PartRecord]:
        return []

    def visible(self) -> list[tuple[PixelBox, int | None]]:
        return []


class PartViews:
    """Parts mode: locate and track each frame; crop the views chosen by the tracker at
    the running model's size and margin (the camera's `crop_margin` overrides the model's)."""

    def __init__(
        self,
        *,
        locator: Locator,
        tracker: PartTracker,
        model_view: Callable[[], ModelView],
        crop_margin: float | None = None,
        watch: SplitWatch | None = None,
    ) -> None:
        self.locator = locator
        self.tracker = tracker
        self.watch = watch
        self._crop_margin = crop_margin
        self._cuts: dict[int, tuple[tuple[int, int], float]] = {}  # part id -> its cut
        self._ended: list[int] = []  # parts that ended in the last selection
        self.model = ModelPoll(model_view)

    @property
    def view_size(self) -> tuple[int, int]:
        return self.model.view.size

    @property
    def margin(self) -> float:
        margin = self._crop_margin if self._crop_margin is not None else self.model.view.margin
        return margin or 0.0

    def select(self, frames: Sequence[DecodedFrame]) -> Selection:
        if self.model.refresh():
            log.info("views now cut at %s, margin %.3f", self.view_size, self.margin)
        for part_id in self._ended:  # their last views were cut after that selection
            self._cuts.pop(part_id, None)
        selection = Selection([], [])
        for frame in frames:
            height, width = frame.image.shape[:2]
            info = FrameInfo(frame.pts, frame.capture_ts, width, height)
            boxes = self.locator.locate(frame.image)
            if self.watch is not None:
                self.watch.see(boxes, frame.pts)
            step = self.tracker.update(boxes, info)
            selection.picks += [Pick(frame, view) for view in step.views]
            selection.ended += step.ended
        self._ended = [record.part_id for record in selection.ended]
        return selection

    def image(self, pick: Pick) -> np.ndarray:
        cut = (self.view_size, self.margin)
        size, margin = self._cuts.setdefault(pick.view.part.part_id, cut)
        return crop_view(pick.frame.image, pick.view.box, size=size, margin=margin)

    def shed(self, selection: Selection) -> list[PartRecord]:
        return selection.ended  # tracked parts end with the views they kept

    def finish(self, reason: str) -> list[PartRecord]:
        self._cuts.clear()
        return self.tracker.finish(reason)

    def visible(self) -> list[tuple[PixelBox, int | None]]:
        """The boxes of the last frame selected, with their part ids."""
        return self.tracker.visible()


def make_frame_views(
    settings: PartsSettings,
    *,
    camera_id: str,
    model_view: Callable[[], ModelView],
    new_part_ids: Callable[[int], int],
) -> FrameViews:
    """One-view parts for `method: none`, else located and tracked part views;
    `new_part_ids(n)` reserves n part ids and returns the first. The crop margin of a
    located part is the camera's `crop_margin`, else the model's, else 0."""
    if isinstance(settings, FrameParts):
        return OneViewParts(model_view=model_view, new_part_ids=new_part_ids)
    locator = make_locator(settings, camera_id=camera_id)
    return PartViews(
        locator=locator,
        tracker=make_tracker(locator, settings, new_part_id=lambda: new_part_ids(1)),
        model_view=model_view,
        crop_margin=settings.crop_margin,
        watch=SplitWatch(camera_id) if locator.tracked else None,
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
