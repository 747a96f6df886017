"""SQL tables (SQLAlchemy 2.x): one row per inferred part view (whole frames in older
rows), one per part verdict, one per alert (NG part or line alarm), one per box of a
detection model's view, one per review of a part by a person."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Detection(Base):
    __tablename__ = "detections"
    __table_args__ = (
        UniqueConstraint("camera_id", "seq", "model_version", name="uq_detection_frame"),
        Index("ix_detections_captured_at", "captured_at"),
        Index("ix_detections_camera_captured", "camera_id", "captured_at"),
        Index("ix_detections_camera_part", "camera_id", "part_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(128))
    seq: Mapped[int] = mapped_column(BigInteger)
    pts: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    topk: Mapped[str] = mapped_column(Text)
    is_defect: Mapped[bool]
    captured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    capture_ts: Mapped[int] = mapped_column(BigInteger)
    ingest_ts: Mapped[int] = mapped_column(BigInteger)
    dequeue_ts: Mapped[int] = mapped_column(BigInteger)
    infer_start_ts: Mapped[int] = mapped_column(BigInteger)
    infer_end_ts: Mapped[int] = mapped_column(BigInteger)
    sink_ts: Mapped[int] = mapped_column(BigInteger)
    worker_id: Mapped[str] = mapped_column(String(128))
    part_id: Mapped[int | None] = mapped_column(BigInteger)  # part views only (migration 0006)
    view_index: Mapped[int | None] = mapped_column(Integer)
    view_box: Mapped[str | None] = mapped_column(String(64))  # JSON [x1, y1, x2, y2] (0007)
    # a defect view's crop JPEG, kept until its part is decided (migration 0007)
    evidence: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    # a model with a gallery (migration 0010): the view's novelty and nearest gallery class
    novelty: Mapped[float | None] = mapped_column(Float)
    gallery_label: Mapped[str | None] = mapped_column(String(64))


class Part(Base):
    """One part that passed a camera, with its verdict (migration 0006).

    Written once per (camera, part, model version) from the part's stored view results,
    so a replayed or restarted sink reaches the same row.
    """

    __tablename__ = "parts"
    __table_args__ = (
        UniqueConstraint("camera_id", "part_id", "model_version", name="uq_part"),
        Index("ix_parts_captured_at", "captured_at"),
        Index("ix_parts_camera_captured", "camera_id", "captured_at"),
        Index("ix_parts_verdict", "verdict"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(128))
    part_id: Mapped[int] = mapped_column(BigInteger)
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    first_pts: Mapped[float] = mapped_column(Float)
    last_pts: Mapped[float] = mapped_column(Float)
    first_capture_ts: Mapped[int] = mapped_column(BigInteger)
    last_capture_ts: Mapped[int] = mapped_column(BigInteger)
    captured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # first capture
    views_sent: Mapped[int] = mapped_column(Integer)
    views_inferred: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[str] = mapped_column(String(16))  # ok | defect | uninspected
    label: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)  # the defect score the rule compared
    class_scores: Mapped[str] = mapped_column(Text)  # JSON {label: summed probability share}
    model_version: Mapped[str] = mapped_column(String(64))
    end_reason: Mapped[str] = mapped_column(String(32))  # why the track ended
    decided_ts: Mapped[int] = mapped_column(BigInteger)  # epoch ns the sink decided
    deadline_ts: Mapped[int] = mapped_column(BigInteger)  # epoch ns the verdict was due
    late: Mapped[bool]  # decided after the deadline (published as uninspected at it)
    best_pts: Mapped[float | None] = mapped_column(Float)  # the evidence view
    x1: Mapped[int | None] = mapped_column(Integer)
    y1: Mapped[int | None] = mapped_column(Integer)
    x2: Mapped[int | None] = mapped_column(Integer)
    y2: Mapped[int | None] = mapped_column(Integer)
    evidence: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)  # crop JPEG
    # a model with a gallery (migration 0010): the part's novelty (the mean of its most
    # novel views) and its views' nearest gallery class
    novelty: Mapped[float | None] = mapped_column(Float)
    gallery_label: Mapped[str | None] = mapped_column(String(64))


class PartReview(Base):
    """A person's verdict on a part (migration 0009): every review is kept, the latest
    one per part counts; the machine's verdict and label at review time are copied so
    overkill and escape rates stay right if the part row is rewritten."""

    __tablename__ = "part_reviews"
    __table_args__ = (
        Index("ix_part_reviews_part", "part_row_id"),
        Index("ix_part_reviews_reviewed_at", "reviewed_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    part_row_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("parts.id", ondelete="CASCADE"),
    )
    reviewer: Mapped[str] = mapped_column(String(128))
    reviewed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    verdict: Mapped[str] = mapped_column(String(16))  # ok | defect
    label: Mapped[str] = mapped_column(String(64))
    machine_verdict: Mapped[str] = mapped_column(String(16))
    machine_label: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)


class ShadowDetection(Base):
    """A shadow model's result for a frame: stored for comparison, never alerted on."""

    __tablename__ = "shadow_detections"
    __table_args__ = (
        UniqueConstraint("camera_id", "seq", "model_version", name="uq_shadow_frame"),
        Index("ix_shadow_captured_at", "captured_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(128))
    seq: Mapped[int] = mapped_column(BigInteger)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    is_defect: Mapped[bool]
    captured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sink_ts: Mapped[int] = mapped_column(BigInteger)


class Alert(Base):
    """An NG part (kind `part`, one per part) or a line alarm on a camera's NG rate (kind
    `line`); rows of kind `frame` are frame-rule events stored before frame mode became
    one-view parts (kept readable, no longer written). Migration 0007 added kind, part_id."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index(
            "uq_alert_event",
            "camera_id",
            "label",
            "opened_seq",
            unique=True,
            sqlite_where=text("part_id IS NULL"),
            postgresql_where=text("part_id IS NULL"),
        ),
        Index(
            "uq_alert_part",
            "camera_id",
            "part_id",
            unique=True,
            sqlite_where=text("part_id IS NOT NULL"),
            postgresql_where=text("part_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(128))
    label: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # open | closed; a part alert: raised
    opened_seq: Mapped[int] = mapped_column(BigInteger)
    opened_ts: Mapped[int] = mapped_column(BigInteger)
    raised_ts: Mapped[int] = mapped_column(BigInteger)  # when the sink wrote the event
    closed_seq: Mapped[int | None] = mapped_column(BigInteger)
    closed_ts: Mapped[int | None] = mapped_column(BigInteger)
    peak_score: Mapped[float] = mapped_column(Float)
    frames: Mapped[int] = mapped_column(BigInteger)  # a line alarm: NG parts
    evidence: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    kind: Mapped[str] = mapped_column(String(16), default="frame", server_default="frame")
    part_id: Mapped[int | None] = mapped_column(BigInteger)  # kind part only


class PartEnd(Base):
    """A part end the sink has received and not finished deciding (migration 0007): the
    sink's restart state. Deleted when the part's row is final."""

    __tablename__ = "part_ends"
    __table_args__ = (UniqueConstraint("camera_id", "part_id", name="uq_part_end"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(128))
    part_id: Mapped[int] = mapped_column(BigInteger)
    views_sent: Mapped[int] = mapped_column(Integer)
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    first_pts: Mapped[float] = mapped_column(Float)
    last_pts: Mapped[float] = mapped_column(Float)
    first_capture_ts: Mapped[int] = mapped_column(BigInteger)
    last_capture_ts: Mapped[int] = mapped_column(BigInteger)
    ended_ts: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(32))
    deadline_ts: Mapped[int] = mapped_column(BigInteger)
    received_ts: Mapped[int] = mapped_column(BigInteger)
    announced: Mapped[bool]  # sent as uninspected at the deadline; waiting for late views


class OutboxEntry(Base):
    """A part verdict or a part/line alert to announce, written in the transaction that
    decided it (migration 0007); each notifier is given the entries after its cursor."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # verdict | alert
    payload: Mapped[str] = mapped_column(Text)  # PartVerdict or AlertMessage JSON
    created_ts: Mapped[int] = mapped_column(BigInteger)


class OutboxCursor(Base):
    """The last outbox entry given to a notifier (by its name)."""

    __tablename__ = "outbox_cursors"

    notifier: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger)


class HourlySummary(Base):
    """Detections rolled up per camera, hour, model version and label (kept after pruning)."""

    __tablename__ = "detection_hourly"
    __table_args__ = (
        UniqueConstraint("camera_id", "hour", "model_version", "label", name="uq_hourly"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(128))
    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model_version: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(64))
    frames: Mapped[int] = mapped_column(BigInteger)
    defects: Mapped[int] = mapped_column(BigInteger)


class PartHourly(Base):
    """Parts rolled up per camera, hour, model version and label (kept after pruning;
    migration 0008). Counted as the line saw them: a late part is uninspected."""

    __tablename__ = "part_hourly"
    __table_args__ = (
        UniqueConstraint("camera_id", "hour", "model_version", "label", name="uq_part_hourly"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(128))
    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model_version: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(64))
    parts: Mapped[int] = mapped_column(BigInteger)
    ok: Mapped[int] = mapped_column(BigInteger)
    ng: Mapped[int] = mapped_column(BigInteger)
    uninspected: Mapped[int] = mapped_column(BigInteger)
    late: Mapped[int] = mapped_column(BigInteger)


class DetectionBox(Base):
    """One box of a detection model's frame (migration 0004)."""

    __tablename__ = "detection_boxes"
    __table_args__ = (UniqueConstraint("detection_id", "box_index", name="uq_detection_box"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    detection_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("detections.id", ondelete="CASCADE"),
    )
    box_index: Mapped[int] = mapped_column(Integer)  # 0 = the frame's best box
    label: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
