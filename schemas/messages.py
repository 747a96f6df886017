"""Wire messages: frames, results and alerts as frozen dataclasses.

Each message encodes to flat Redis stream fields (bytes -> bytes) and decodes
back with explicit parsing; no pickle. Every entry carries a schema version.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1
ENCODINGS = ("jpeg", "png", "raw-u8")
STATUSES = ("ok", "stale", "undecodable", "invalid-output")
MAX_SIDE = 8192  # pixels; larger frames are refused before any decoding
MAX_IMAGE_BYTES = 64 * 1024 * 1024

Fields = dict[bytes, bytes]


class MessageDecodeError(ValueError):
    """A stream entry is not a valid message of the expected kind."""


def _text(fields: Fields, name: str) -> str:
    try:
        return fields[name.encode()].decode()
    except KeyError:
        raise MessageDecodeError(f"missing field {name!r}") from None
    except UnicodeDecodeError:
        raise MessageDecodeError(f"field {name!r} is not UTF-8 text") from None


def _number(fields: Fields, name: str, cast: type, what: str):  # type: ignore[no-untyped-def]
    value = _text(fields, name)
    try:
        return cast(value)
    except ValueError:
        raise MessageDecodeError(f"field {name!r} is not {what}: {value[:40]!r}") from None


def _int(fields: Fields, name: str) -> int:
    return int(_number(fields, name, int, "an integer"))


def _float(fields: Fields, name: str) -> float:
    return float(_number(fields, name, float, "a number"))


def _side(fields: Fields, name: str) -> int:
    value = _int(fields, name)
    if not 1 <= value <= MAX_SIDE:
        raise MessageDecodeError(f"frame {name} {value} is outside 1..{MAX_SIDE}")
    return value


def _check_version(fields: Fields) -> None:
    version = _int(fields, "v")
    if version != SCHEMA_VERSION:
        raise MessageDecodeError(f"schema version {version}, expected {SCHEMA_VERSION}")


def _encode(values: dict[str, Any]) -> Fields:
    out: Fields = {b"v": str(SCHEMA_VERSION).encode()}
    for name, value in values.items():
        if isinstance(value, bytes):
            out[name.encode()] = value
        elif isinstance(value, bool):
            out[name.encode()] = b"1" if value else b"0"
        else:
            out[name.encode()] = str(value).encode()
    return out


@dataclass(frozen=True)
class FrameMessage:
    camera_id: str
    seq: int
    pts: float
    capture_ts: int
    ingest_ts: int
    width: int
    height: int
    encoding: str
    image: bytes
    live: bool
    view: PartView | None = None  # the part's view; None: a whole frame (an older ingest)

    def encode(self) -> Fields:
        values = asdict(self)
        values.pop("view")
        return _encode({**values, **_view_fields(self.view)})

    @classmethod
    def decode(cls, fields: Fields) -> FrameMessage:
        _check_version(fields)
        encoding = _text(fields, "encoding")
        if encoding not in ENCODINGS:
            raise MessageDecodeError(f"unknown image encoding {encoding[:20]!r}")
        image = fields.get(b"image")
        if not image:
            raise MessageDecodeError("missing field 'image'")
        if len(image) > MAX_IMAGE_BYTES:
            raise MessageDecodeError(
                f"image of {len(image)} bytes is over the {MAX_IMAGE_BYTES} byte limit"
            )
        width, height = _side(fields, "width"), _side(fields, "height")
        return cls(
            camera_id=_text(fields, "camera_id"),
            seq=_int(fields, "seq"),
            pts=_float(fields, "pts"),
            capture_ts=_int(fields, "capture_ts"),
            ingest_ts=_int(fields, "ingest_ts"),
            width=width,
            height=height,
            encoding=encoding,
            image=image,
            live=_text(fields, "live") == "1",
            view=_decode_view(fields),
        )


@dataclass(frozen=True)
class PartView:
    """Which part a view shows: the part's id (monotonic per camera, never reused), the
    view's index within the part, and the part's box in the frame's own pixels."""

    part_id: int
    view_index: int
    x1: int
    y1: int
    x2: int
    y2: int


def _view_fields(view: PartView | None) -> dict[str, Any]:
    """Absent for whole frames (an older ingest's entries), so both decode alike."""
    if view is None:
        return {}
    box = [view.x1, view.y1, view.x2, view.y2]
    return {"part_id": view.part_id, "view_index": view.view_index, "box": json.dumps(box)}


def _decode_view(fields: Fields) -> PartView | None:
    if b"part_id" not in fields:
        return None
    raw = _text(fields, "box")
    try:
        x1, y1, x2, y2 = (int(value) for value in json.loads(raw))
    except (ValueError, TypeError):
        raise MessageDecodeError(f"field 'box' is not [x1, y1, x2, y2]: {raw[:40]!r}") from None
    if not (x1 < x2 and y1 < y2):
        raise MessageDecodeError(f"field 'box' is empty: {raw[:40]!r}")
    view_index = _int(fields, "view_index")
    if view_index < 0:
        raise MessageDecodeError(f"field 'view_index' is negative: {view_index}")
    return PartView(_int(fields, "part_id"), view_index, x1, y1, x2, y2)


@dataclass(frozen=True)
class Box:
    """A detected object in the frame's own pixel coordinates (x right, y down)."""

    label: str
    score: float
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class ResultMessage:
    camera_id: str
    seq: int
    pts: float
    status: str
    model_name: str
    model_version: str
    label: str
    score: float
    topk: tuple[tuple[str, float], ...]
    is_defect: bool
    capture_ts: int
    ingest_ts: int
    dequeue_ts: int
    infer_start_ts: int
    infer_end_ts: int
    worker_id: str
    evidence: bytes = field(default=b"", repr=False)
    live: bool = False
    boxes: tuple[Box, ...] = ()  # detection models only
    shadow: bool = False  # from a shadow model: stored for comparison, never alerted on
    view: PartView | None = None  # the part view this result is for (parts mode)
    # a model with a gallery: 1 - cosine similarity to the nearest gallery entry, and
    # that entry's label (None: no gallery)
    novelty: float | None = None
    gallery_label: str | None = None

    def encode(self) -> Fields:
        values = asdict(self)
        values.update(_view_fields(self.view))
        values.pop("view")
        for name in ("novelty", "gallery_label"):  # absent without a gallery, like boxes
            if values[name] is None:
                values.pop(name)
        values["topk"] = json.dumps([[label, round(score, 6)] for label, score in self.topk])
        # Classification results carry no `boxes` field at all, so their entries are
        # exactly what consumers written before boxes existed expect.
        values.pop("boxes")
        if self.boxes:
            values["boxes"] = json.dumps([_box_row(box) for box in self.boxes])
        if values.pop("shadow"):  # likewise absent unless set
            values["shadow"] = True
        return _encode(values)

    @classmethod
    def decode(cls, fields: Fields) -> ResultMessage:
        _check_version(fields)
        status = _text(fields, "status")
        if status not in STATUSES:
            raise MessageDecodeError(f"unknown result status {status[:20]!r}")
        return cls(
            camera_id=_text(fields, "camera_id"),
            seq=_int(fields, "seq"),
            pts=_float(fields, "pts"),
            status=status,
            model_name=_text(fields, "model_name"),
            model_version=_text(fields, "model_version"),
            label=_text(fields, "label"),
            score=_float(fields, "score"),
            topk=_decode_topk(_text(fields, "topk")),
            is_defect=_text(fields, "is_defect") == "1",
            capture_ts=_int(fields, "capture_ts"),
            ingest_ts=_int(fields, "ingest_ts"),
            dequeue_ts=_int(fields, "dequeue_ts"),
            infer_start_ts=_int(fields, "infer_start_ts"),
            infer_end_ts=_int(fields, "infer_end_ts"),
            worker_id=_text(fields, "worker_id"),
            evidence=fields.get(b"evidence", b""),
            live=fields.get(b"live") == b"1",
            boxes=_decode_boxes(fields.get(b"boxes")),
            shadow=fields.get(b"shadow") == b"1",
            view=_decode_view(fields),
            novelty=_float(fields, "novelty") if b"novelty" in fields else None,
            gallery_label=_text(fields, "gallery_label") if b"gallery_label" in fields else None,
        )


def _box_row(box: Box) -> list[object]:
    coords = (box.x1, box.y1, box.x2, box.y2)
    return [box.label, round(box.score, 6), *(round(value, 3) for value in coords)]


def _decode_boxes(raw: bytes | None) -> tuple[Box, ...]:
    """`[[label, score, x1, y1, x2, y2], ...]`; an absent field is no boxes."""
    if raw is None:
        return ()
    try:
        rows = json.loads(raw)
        if not isinstance(rows, list):
            raise TypeError
        boxes = tuple(_box(*row) for row in rows)
    except (ValueError, TypeError, OverflowError):
        raise MessageDecodeError(
            f"field 'boxes' is not a list of [label, score, x1, y1, x2, y2]: {raw[:40]!r}"
        ) from None
    for box in boxes:
        if not all(map(math.isfinite, (box.score, box.x1, box.y1, box.x2, box.y2))):
            raise MessageDecodeError(f"field 'boxes' has a non-finite number: {box}")
    return boxes


def _box(label: object, *numbers: object) -> Box:
    if not isinstance(label, str) or len(numbers) != 5:
        raise TypeError
    score, x1, y1, x2, y2 = (float(n) for n in numbers)  # type: ignore[arg-type]
    return Box(label, score, x1, y1, x2, y2)


def _decode_topk(text: str) -> tuple[tuple[str, float], ...]:
    try:
        pairs = json.loads(text)
        return tuple((str(label), float(score)) for label, score in pairs)
    except (ValueError, TypeError):
        raise MessageDecodeError(
            f"field 'topk' is not a list of [label, score]: {text[:40]!r}"
        ) from None


@dataclass(frozen=True)
class AlertMessage:
    """An alert as announced to notifiers: an NG part (kind `part`, state `raised`, once
    per part) or a line alarm on a camera's NG rate (kind `line`, opened or closed).
    Kind `frame` (a frame-rule event) is only in rows stored before frame mode became
    one-view parts."""

    alert_id: int
    camera_id: str
    label: str
    state: str
    opened_seq: int
    opened_ts: int
    closed_seq: int | None
    closed_ts: int | None
    peak_score: float
    frames: int  # a part: its views inferred; a line alarm: NG parts (old frame events: frames)
    kind: str = "frame"  # frame | part | line
    part_id: int | None = None  # kind part only
    novelty: float | None = None  # kind part, a model with a gallery: the part's novelty
    gallery_label: str | None = None  # and its views' nearest gallery class

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


END_REASONS = ("left", "lost", "stuck", "stream-ended", "frame")  # frame: a one-view part
PART_END_KIND = b"part-end"


@dataclass(frozen=True)
class PartEndMessage:
    """Ingest's word that a part's track ended, with how many views it sent.

    Added to the results stream (`kind` = part-end) so the sink can decide the part once
    its views' results are stored, or at the deadline. Times are epoch ns.
    """

    camera_id: str
    part_id: int
    views_sent: int
    first_seq: int
    last_seq: int
    first_pts: float
    last_pts: float
    first_capture_ts: int
    last_capture_ts: int
    ended_ts: int  # when the part left view
    reason: str  # left | lost | stuck | stream-ended
    # when the verdict is due: a live camera's ended_ts + verdict.deadline_ms, a file's
    # ended_ts + verdict.file_wait_s; 0 (an older ingest): the sink's verdict.deadline_ms
    deadline_ts: int = 0

    def encode(self) -> Fields:
        return {b"kind": PART_END_KIND, **_encode(asdict(self))}

    @classmethod
    def decode(cls, fields: Fields) -> PartEndMessage:
        _check_version(fields)
        if fields.get(b"kind") != PART_END_KIND:
            raise MessageDecodeError("not a part-end entry")
        reason = _text(fields, "reason")
        if reason not in END_REASONS:
            raise MessageDecodeError(f"unknown part-end reason {reason[:20]!r}")
        views_sent = _int(fields, "views_sent")
        if views_sent < 0:
            raise MessageDecodeError(f"field 'views_sent' is negative: {views_sent}")
        return cls(
            camera_id=_text(fields, "camera_id"),
            part_id=_int(fields, "part_id"),
            views_sent=views_sent,
            first_seq=_int(fields, "first_seq"),
            last_seq=_int(fields, "last_seq"),
            first_pts=_float(fields, "first_pts"),
            last_pts=_float(fields, "last_pts"),
            first_capture_ts=_int(fields, "first_capture_ts"),
            last_capture_ts=_int(fields, "last_capture_ts"),
            ended_ts=_int(fields, "ended_ts"),
            reason=reason,
            deadline_ts=_int(fields, "deadline_ts") if b"deadline_ts" in fields else 0,
        )


def decode_result_entry(fields: Fields) -> ResultMessage | PartEndMessage:
    """An entry of the results stream: a view's or frame's result, or a part's end."""
    if fields.get(b"kind") == PART_END_KIND:
        return PartEndMessage.decode(fields)
    return ResultMessage.decode(fields)


VERDICTS = ("ok", "defect", "uninspected")


@dataclass(frozen=True)
class PartVerdict:
    """One part's decision as sent to the line (MQTT reject gates, webhooks, SSE).

    Times are epoch ns. `deadline_ts` is when the decision was due; a part that could not
    be decided by then is sent as `uninspected` at the deadline.
    """

    camera_id: str
    part_id: int
    verdict: str  # ok | defect | uninspected
    label: str
    score: float
    model_version: str
    first_capture_ts: int
    last_capture_ts: int
    decided_ts: int
    deadline_ts: int
    views_sent: int
    views_inferred: int
    novelty: float | None = None  # a model with a gallery: the part's novelty
    gallery_label: str | None = None  # and its views' nearest gallery class

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)
